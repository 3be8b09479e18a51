"""Built-in LoRA for whisper-llada's frozen decoder: no peft needed, and peft's parameter names, so peft-trained
adapters load as they are. `add_lora` wraps the decoder's target linear layers in `LoraLinear` (config.lora); the
adapters are part of the model's modules and stored with the checkpoint.
"""

from __future__ import annotations

import math
import re

import torch
from torch import nn


class LoraLinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update: y = W x + (alpha / r) B A dropout(x), with B = 0 at the
    start. Parameter names are peft's (`base_layer`, `lora_A.default`, `lora_B.default`)."""

    def __init__(self, base: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0):
        super().__init__()
        self.base_layer = base
        self.lora_dropout = nn.ModuleDict({"default": nn.Dropout(lora_dropout) if lora_dropout else nn.Identity()})
        self.lora_A = nn.ModuleDict({"default": nn.Linear(base.in_features, r, bias=False)})
        self.lora_B = nn.ModuleDict({"default": nn.Linear(r, base.out_features, bias=False)})
        if not self.lora_A["default"].weight.is_meta:  # (inside from_pretrained they are loaded, not built)
            self.to(base.weight.device)
        self.scaling = lora_alpha / r
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.lora_A["default"].weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B["default"].weight)

    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.lora_A["default"], self.lora_B["default"]
        update = b(a(self.lora_dropout["default"](x.to(a.weight.dtype)))) * self.scaling
        return self.base_layer(x) + update.to(x.dtype)


def add_lora(decoder: nn.Module, lora: dict) -> list[str]:
    """Wraps the decoder's target linear layers (`lora["target_modules"]` inside its `lora_scope`, the transformer
    layers) in `LoraLinear`, in place; returns the wrapped modules' names."""
    pattern = re.compile(decoder.lora_scope + r"(" + "|".join(map(re.escape, lora["target_modules"])) + r")$")
    names = [name for name, module in decoder.named_modules() if pattern.search(name) and isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"LoRA: no linear layer of the decoder matches {lora['target_modules']}.")
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = decoder.get_submodule(parent)
        setattr(owner, child, LoraLinear(getattr(owner, child), lora["r"], lora["lora_alpha"], lora["lora_dropout"]))
    return names


__all__ = ["LoraLinear", "add_lora"]
