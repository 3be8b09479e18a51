"""Loading helpers of `WhisperLladaForConditionalGeneration`: base weights pulled when the model is built are marked
as initialised (`mark_pulled`), tied weights a checkpoint stores once are told apart from missing ones
(`tied_to_loaded`), the decoding defaults saved beside the weights are read as the decoder's generation config class
(`saved_generation_config`), dtype="auto" on CPU loads float16 weights as float32 (`cpu_auto_dtype`), and a base
decoder pulled while the speech model loads ties its weights as a model loaded on its own does (`weight_tying`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel

try:
    from .configuration_whisper_llada import WhisperLladaConfig
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import WhisperLladaConfig


def tied_to_loaded(model: nn.Module, missing) -> set[str]:
    """The missing names that are the same tensor as a loaded one (tied weights, e.g. a causal LM's LM head and
    embeddings: the checkpoint stores the tensor once)."""
    names_of: dict[int, list[str]] = {}
    for name, parameter in model.named_parameters(remove_duplicate=False):
        names_of.setdefault(id(parameter), []).append(name)
    return {name for names in names_of.values() if any(n not in missing for n in names) for name in names}


# transformers' weight tying, as this module found it (imported before any from_pretrained starts: the speech model's
# module imports it)
_TIE_WEIGHTS = PreTrainedModel.tie_weights


@contextlib.contextmanager
def weight_tying():
    """While active, transformers' `PreTrainedModel.tie_weights` is its own, also inside a `from_pretrained`, which
    turns it off while it builds a model (so that every weight of the checkpoint finds its tensor). A base decoder
    pulled while the speech model loads is a `from_pretrained` inside that one: without this, a decoder whose
    checkpoint stores tied weights once (DiffusionGemma's encoder and decoder layers, a tied LM head) would load
    with those weights missing."""
    current = PreTrainedModel.tie_weights
    PreTrainedModel.tie_weights = _TIE_WEIGHTS
    try:
        yield
    finally:
        PreTrainedModel.tie_weights = current


def mark_pulled(module: nn.Module) -> nn.Module:
    """Marks the weights of a module pulled from its base checkpoint as initialised, so that loading a checkpoint that
    does not store them neither counts them as missing nor initialises them again. Non-persistent buffers (rotary
    frequencies) are left to from_pretrained, which recomputes them."""
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        owner, _, leaf = name.rpartition(".")
        if leaf not in module.get_submodule(owner)._non_persistent_buffers_set:
            tensor._is_hf_initialized = True
    for child in module.modules():  # the base's own loading marked whole modules: let the buffers be recomputed
        child.__dict__.pop("_is_hf_initialized", None)
    return module


def saved_generation_config(model, name_or_path, kwargs) -> GenerationConfig:
    """The decoding defaults saved beside the weights (generation_config.json, read as the decoder's generation config
    class: transformers reads it only for GenerationMixin models), with the model's special ids where it lacks them."""
    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
    default = model.decoder.generation_config
    try:
        saved = type(default).from_pretrained(name_or_path, **hub)
    except OSError:  # no generation_config.json: the defaults
        return default
    for name in ("mask_token_id", "eos_token_id", "pad_token_id"):
        if getattr(saved, name, None) is None and getattr(default, name, None) is not None:
            setattr(saved, name, getattr(default, name))
    return saved


def stored_float16(name_or_path, kwargs) -> bool:
    """Whether the checkpoint's weights are stored in float16 (config.json's dtype)."""
    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
    config = kwargs.get("config") or WhisperLladaConfig.from_pretrained(name_or_path, **hub)
    return config.dtype in (torch.float16, "float16")


def make_readable(directory) -> None:
    """Gives the files in `directory` (and the directory) the permissions a plain `open()` would have given them:
    `0o666 & ~umask` for files, `0o777 & ~umask` for the directory (bits are only added, never removed). safetensors
    writes `model.safetensors` through a private temporary file (mode 0600), next to files of mode 0644."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path, bits in [(os.fspath(directory), 0o777 & ~umask)] + [
            (entry.path, 0o666 & ~umask) for entry in os.scandir(directory) if entry.is_file(follow_symlinks=False)]:
        mode = os.lstat(path).st_mode & 0o7777
        if mode | bits != mode:
            os.chmod(path, mode | bits)


def refuse_stock_asr_pipeline(frame) -> None:
    """`pipeline("automatic-speech-recognition", model=<this model object>)` builds transformers' stock ASR pipeline
    (a model object's config.custom_pipelines is not read), which would treat the model as CTC and fail later on
    ffmpeg or on forward(); its constructor asks `can_generate()` (frame: that call's caller): refuse there, naming
    the fix."""
    from transformers import AutomaticSpeechRecognitionPipeline

    caller = frame.f_locals.get("self") if frame is not None else None
    if isinstance(caller, AutomaticSpeechRecognitionPipeline):
        raise TypeError(
            "pipeline('automatic-speech-recognition', model=<a loaded whisper-llada model>) builds transformers' stock "
            "ASR pipeline, which cannot run this model. Pass pipeline_class=model.asr_pipeline_class (this model's "
            "pipeline), or pass the model's path or Hub id with trust_remote_code=True.")


def cpu_auto_dtype(name_or_path, kwargs) -> torch.dtype | str:
    """dtype="auto" on CPU: the saved dtype, except that float16 loads as float32."""
    hub = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
    config = kwargs.get("config") or WhisperLladaConfig.from_pretrained(name_or_path, **hub)
    return torch.float32 if config.dtype in (torch.float16, "float16") else "auto"


__all__ = ["mark_pulled", "tied_to_loaded", "saved_generation_config", "cpu_auto_dtype", "stored_float16",
           "make_readable", "refuse_stock_asr_pipeline"]
