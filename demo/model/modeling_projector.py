"""The speech side of whisper-llada: SpecAugment on the encoder frames (training only) and the projector that maps
stacked encoder frames to the decoder's embedding size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

try:
    from .configuration_whisper_llada import TrainingRecipe, WhisperLladaConfig
    from .decoder_families import hidden_size
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import TrainingRecipe, WhisperLladaConfig
    from decoder_families import hidden_size


ACTIVATIONS = {"silu": nn.SiLU, "gelu": nn.GELU, "relu": nn.ReLU}


def spans_mask(lengths: torch.Tensor, width: int, prob: float, span: int) -> torch.Tensor:
    """(B, width) bool, True = masked: for each row, round(prob * length / span) spans (rounded at random) of `span`
    positions with random starts inside the row's first `length` positions (SpecAugment's masks)."""
    lengths = lengths.clamp(max=width).float()
    counts = (prob * lengths / span + torch.rand_like(lengths)).floor().long()  # (B,)
    most = int(counts.max()) if counts.numel() else 0
    positions = torch.arange(width, device=lengths.device)
    if most == 0:
        return torch.zeros(lengths.shape[0], width, dtype=torch.bool, device=lengths.device)
    starts = (torch.rand(lengths.shape[0], most, device=lengths.device) * (lengths[:, None] - span + 1).clamp(min=1))
    starts = starts.long()
    used = torch.arange(most, device=lengths.device) < counts[:, None]  # (B, most)
    inside = (positions >= starts[..., None]) & (positions < starts[..., None] + span) & used[..., None]  # (B, most, W)
    return inside.any(1) & (positions < lengths[:, None])


def spec_augment(frames: torch.Tensor, valid_frames: torch.Tensor, recipe: TrainingRecipe) -> torch.Tensor:
    """SpecAugment on encoder frames (B, T, d_enc): time spans and channel spans set to zero (training only)."""
    if recipe.mask_time_prob > 0:
        time_mask = spans_mask(valid_frames, frames.shape[1], recipe.mask_time_prob, recipe.mask_time_length)
        frames = frames.masked_fill(time_mask[..., None], 0.0)
    if recipe.mask_feature_prob > 0:
        channels = torch.full_like(valid_frames, frames.shape[2])
        feature_mask = spans_mask(channels, frames.shape[2], recipe.mask_feature_prob, recipe.mask_feature_length)
        frames = frames.masked_fill(feature_mask[:, None, :], 0.0)
    return frames


class WhisperLladaProjector(nn.Module):
    """Merges `stack_factor` encoder frames and maps them to the decoder's embedding size.

    The reference "sln-large" projector is Linear(5*d_enc -> 2048) SiLU -> Linear(-> 1024) LayerNorm SiLU ->
    Linear(-> 2048) LayerNorm SiLU -> Linear(-> d_model); `projector_hidden_sizes` sets the hidden sizes.
    """

    def __init__(self, config: WhisperLladaConfig):
        super().__init__()
        self.stack_factor = config.stack_factor
        self.method = config.downsample_method
        d_enc = config.encoder_config.d_model
        in_size = d_enc * self.stack_factor if self.method == "stack" else d_enc
        act = ACTIVATIONS[config.projector_activation]
        layers: list[nn.Module] = []
        for index, hidden in enumerate(config.projector_hidden_sizes):
            layers.append(nn.Linear(in_size, hidden))
            if index > 0:
                layers.append(nn.LayerNorm(hidden))
            layers.append(act())
            in_size = hidden
        layers.append(nn.Linear(in_size, hidden_size(config.decoder_config)))
        self.mlp = nn.Sequential(*layers)

    def downsample(self, frames: torch.Tensor) -> torch.Tensor:
        # frames: (B, T, d_enc) -> (B, ceil(T / k), k * d_enc) for "stack" or (B, ceil(T / k), d_enc) for "mean"
        batch, length, dim = frames.shape
        k = self.stack_factor
        if length % k:
            frames = F.pad(frames, (0, 0, 0, k - length % k))
        grouped = frames.view(batch, -1, k, dim)
        return grouped.reshape(batch, grouped.shape[1], k * dim) if self.method == "stack" else grouped.mean(2)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.downsample(frames))


__all__ = ["WhisperLladaProjector", "spans_mask", "spec_augment"]
