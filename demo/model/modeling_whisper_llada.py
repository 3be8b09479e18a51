"""whisper-llada: speech recognition with a masked-diffusion LLM decoder.

Data flow (classes below appear in this order):

    audio -> WhisperFeatureExtractor -> log-mel (B, n_mels, 3000)
          -> WhisperEncoder (frozen)          (B, 1500, d_enc)   frames past the audio's end are dropped
          -> WhisperLladaProjector            (B, S, d_model)    k frames stacked, MLP
          -> chat prompt with the speech spliced in before the user turn's end-of-turn token   (B, P, d_model)
          -> decoder.generate                 LLaDA mask predictor + sampler (modeling_llada.py, generation_llada.py)

`WhisperLladaForConditionalGeneration` owns the encoder, the projector, the speech prefix, the training loss and
loading/saving; `generate` builds the prefix and hands off to the decoder's own `generate`. With
`config.decoder_type == "causal"` the decoder is an autoregressive `AutoModelForCausalLM` (the AR-LLM baseline): the
same speech prefix, next-token cross-entropy in `forward`, transformers' own `generate`.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, GenerationConfig, PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput

try:
    from .configuration_whisper_llada import WhisperLladaConfig
    from .generation_llada import LladaGenerationConfig
    from .modelcard_whisper_llada import MARKER as MODEL_CARD_MARKER
    from .modelcard_whisper_llada import write_model_card
    from .modeling_llada import LladaForMaskedDiffusion, LladaRMSNorm, load_causal_lm_as_llada, resolve_model_path
    from .pipeline_whisper_llada import WhisperLladaASRPipeline  # noqa: F401  (shipped with the model: custom_pipelines)
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import WhisperLladaConfig
    from generation_llada import LladaGenerationConfig
    from modelcard_whisper_llada import MARKER as MODEL_CARD_MARKER
    from modelcard_whisper_llada import write_model_card
    from modeling_llada import LladaForMaskedDiffusion, LladaRMSNorm, load_causal_lm_as_llada, resolve_model_path
    from pipeline_whisper_llada import WhisperLladaASRPipeline  # noqa: F401


# ----------------------------------------------------------------------------------------------------------------------
# Speech side: projector
# ----------------------------------------------------------------------------------------------------------------------

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


def spec_augment(frames: torch.Tensor, valid_frames: torch.Tensor, config: WhisperLladaConfig) -> torch.Tensor:
    """SpecAugment on encoder frames (B, T, d_enc): time spans and channel spans set to zero (training only)."""
    if config.mask_time_prob > 0:
        time_mask = spans_mask(valid_frames, frames.shape[1], config.mask_time_prob, config.mask_time_length)
        frames = frames.masked_fill(time_mask[..., None], 0.0)
    if config.mask_feature_prob > 0:
        channels = torch.full_like(valid_frames, frames.shape[2])
        feature_mask = spans_mask(channels, frames.shape[2], config.mask_feature_prob, config.mask_feature_length)
        frames = frames.masked_fill(feature_mask[:, None, :], 0.0)
    return frames


class WhisperLladaProjector(nn.Module):
    """Merges `stack_factor` encoder frames and maps them to the decoder's embedding size.

    The reference "sln-large" projector is Linear(5*d_enc -> 2048) SiLU -> Linear(-> 1024) LayerNorm SiLU ->
    Linear(-> 2048) LayerNorm SiLU -> Linear(-> d_model); `projector_hidden_sizes` sets the hidden sizes.
    """

    def __init__(self, config: WhisperLladaConfig):
        super().__init__()
        if config.projector_activation not in ACTIVATIONS:
            raise ValueError(f"projector_activation must be one of {sorted(ACTIVATIONS)}, got {config.projector_activation!r}.")
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
        layers.append(nn.Linear(in_size, config.decoder_config.hidden_size))
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


# ----------------------------------------------------------------------------------------------------------------------
# Answer side: which answer tokens the masked-diffusion loss masks
# ----------------------------------------------------------------------------------------------------------------------


def answer_mask_probs(in_answer: torch.Tensor, mask_eps: float, block_prob: float = 0.0,
                      block_length: int = 8) -> torch.Tensor:
    """(B, A) masking probability of each answer token. LLaDA's SFT masking: per sample t ~ U(0, 1), every answer
    token masked with p = (1 - eps) t + eps. With `block_prob` > 0 that share of the samples is masked as block decoding
    sees them instead: a random block k of `block_length` tokens (among the blocks the answer spans) gets p, the
    blocks before it 0 (clean), every token after it 1."""
    batch, answer_len = in_answer.shape
    probs = ((1 - mask_eps) * torch.rand(batch, 1, device=in_answer.device) + mask_eps).expand(batch, answer_len)
    if block_prob <= 0:
        return probs
    blocks = (in_answer.sum(-1) + block_length - 1) // block_length  # (B,) blocks the answer spans
    current = (torch.rand(batch, device=in_answer.device) * blocks).long()[:, None]  # (B, 1)
    block_of = (torch.arange(answer_len, device=in_answer.device) // block_length)[None]  # (1, A)
    block_probs = torch.where(block_of < current, 0.0, torch.where(block_of == current, probs, 1.0))
    use_blocks = torch.rand(batch, 1, device=in_answer.device) < block_prob
    return torch.where(use_blocks, block_probs, probs)


# ----------------------------------------------------------------------------------------------------------------------
# Full model
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class WhisperLladaOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, A, vocab) at the answer positions
    ctc_loss: torch.Tensor | None = None  # the auxiliary CTC loss (unweighted) when config.ctc_weight > 0


def keep_first_layers(causal_lm: PreTrainedModel, n_layers: int) -> PreTrainedModel:
    """Truncates a causal LM (transformers' `model.layers` layout, e.g. Llama) in place to its first `n_layers`
    layers; its final norm and LM head stay. The same layers `llada_config_from_llama(n_layers=...)` keeps."""
    layers = causal_lm.get_decoder().layers
    total = len(layers)
    if not 1 <= int(n_layers) <= total:
        raise ValueError(f"decoder_num_layers must be in [1, {total}] for this decoder, got {n_layers}.")
    n_layers = int(n_layers)
    causal_lm.get_decoder().layers = layers[:n_layers]
    config = causal_lm.config
    config.num_hidden_layers = n_layers
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[:n_layers]
    return causal_lm


class WhisperLladaPreTrainedModel(PreTrainedModel):
    config_class = WhisperLladaConfig
    base_model_prefix = "whisper_llada"
    main_input_name = "input_features"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LladaBlock", "WhisperEncoderLayer"]
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LladaRMSNorm):
            module.weight.data.fill_(1.0)


class WhisperLladaForConditionalGeneration(WhisperLladaPreTrainedModel):
    """Whisper encoder (frozen) -> projector (trainable) -> LLaDA decoder (frozen), with the LLaDA SFT
    masked-diffusion loss in `forward`; `generate` builds the speech prefix and hands off to the decoder's sampler.

    With `config.decoder_type == "causal"` the decoder is a causal LM (`AutoModelForCausalLM`): `forward` computes
    next-token cross-entropy on the answer (`_causal_loss`) and `generate` hands off to transformers' own."""

    accepts_loss_kwargs = False
    ctc_only = False  # training switch (not saved): forward returns the auxiliary CTC loss alone, without the decoder

    def __init__(
        self,
        config: WhisperLladaConfig,
        encoder: WhisperEncoder | None = None,
        decoder: LladaForMaskedDiffusion | PreTrainedModel | None = None,
    ):
        super().__init__(config)
        # A sub-config taken from a loaded model (e.g. `WhisperModel.from_pretrained(...).config`) comes back from
        # `WhisperLladaConfig(...)` with no attention implementation, and Whisper then falls back to eager attention.
        for sub_config in (config.encoder_config, config.decoder_config):
            if getattr(sub_config, "_attn_implementation", None) is None:
                sub_config._attn_implementation = config._attn_implementation
        self.encoder = encoder if encoder is not None else WhisperEncoder(config.encoder_config)
        if getattr(self.encoder.config, "_attn_implementation", None) in (None, "eager"):
            self.encoder.config._attn_implementation = "sdpa"  # composing the config resets it; SDPA is exact and faster
        self.projector = WhisperLladaProjector(config)
        if decoder is None:
            decoder = (AutoModelForCausalLM.from_config(config.decoder_config) if config.decoder_type == "causal"
                       else LladaForMaskedDiffusion(config.decoder_config))
        self.decoder = decoder
        self.post_init()
        self.freeze_base_models()
        self.generation_config = self._default_generation_config()

    # -- construction and saving -------------------------------------------------------------------------------------

    def freeze_base_models(self, encoder: bool = True, decoder: bool = True) -> None:
        """Frozen encoder and decoder (the default): only the projector trains."""
        self.encoder.requires_grad_(not encoder)
        self.decoder.requires_grad_(not decoder)

    def _default_generation_config(self) -> GenerationConfig:
        """LLaDA decoding defaults (config B at gen_length 128) with this model's special ids; for a causal decoder,
        greedy decoding of up to 128 new tokens that stops at EOS or the end-of-turn token."""
        c = self.config
        if c.decoder_type == "causal":
            stop_ids = [c.eos_token_id] + [i for i in (c.eot_token_id,) if i is not None and i != c.eos_token_id]
            return GenerationConfig(max_new_tokens=128, num_beams=1, do_sample=False, eos_token_id=stop_ids,
                                    pad_token_id=c.eos_token_id)
        return LladaGenerationConfig(mask_token_id=c.mask_token_id, eos_token_id=c.eos_token_id,
                                     pad_token_id=c.pad_token_id)

    @classmethod
    def can_generate(cls) -> bool:
        return True

    @classmethod
    def from_encoder_decoder_pretrained(
        cls,
        encoder_name_or_path: str | None,
        decoder_name_or_path: str,
        config: WhisperLladaConfig | None = None,
        dtype: torch.dtype | str | None = None,
        decoder_dtype: torch.dtype | str | None = None,
        processor=None,
        **config_kwargs: Any,
    ) -> "WhisperLladaForConditionalGeneration":
        """Builds the model from a Whisper checkpoint (Hub id or dir; encoder weights only) and a LLaDA checkpoint
        (Hub id or dir with the official key names) or, with `decoder_type="causal"`, any causal-LM checkpoint
        (`AutoModelForCausalLM`, e.g. meta-llama/Meta-Llama-3-8B-Instruct). The projector is freshly initialised.

        With `decoder_from_causal_lm=True` the LLaDA decoder is converted from a Llama-architecture causal LM
        (`load_causal_lm_as_llada`; `decoder_gguf_file` for a GGUF checkpoint, `decoder_num_layers` to keep only the
        first layers); a causal decoder keeps its first `decoder_num_layers` layers too (the AR counterpart of such a
        converted decoder). `encoder_name_or_path=None` (only with a `config`) builds the encoder from the config, for
        checkpoints that store its weights.

        If `processor` (a `WhisperLladaProcessor`) is given, the chat-prompt token ids are taken from it (for a causal
        decoder, or a decoder converted from one, also EOS / <|eot_id|>)."""
        from transformers import WhisperModel

        if encoder_name_or_path is None:
            if config is None:
                raise ValueError("from_encoder_decoder_pretrained: encoder_name_or_path=None needs a `config`.")
            encoder = WhisperEncoder(config.encoder_config).to(dtype or torch.float32)
            encoder_config = config.encoder_config
        else:
            whisper = WhisperModel.from_pretrained(encoder_name_or_path, dtype=dtype or torch.float32)
            encoder, encoder_config = whisper.get_encoder(), whisper.config
        setting = lambda name, default=None: getattr(config, name) if config is not None else config_kwargs.get(name, default)  # noqa: E731
        decoder_type = setting("decoder_type", "llada")
        decoder_dtype = decoder_dtype or dtype or torch.float32
        if setting("decoder_from_causal_lm", False):
            mask_id = processor.mask_token_id if processor is not None else None
            decoder = load_causal_lm_as_llada(
                decoder_name_or_path, mask_token_id=mask_id, n_layers=config_kwargs.pop("decoder_num_layers", None),
                gguf_file=setting("decoder_gguf_file"), config=config.decoder_config if config is not None else None,
                dtype=decoder_dtype,
            )
        else:
            decoder_class = AutoModelForCausalLM if decoder_type == "causal" else LladaForMaskedDiffusion
            kwargs = {"gguf_file": setting("decoder_gguf_file")} if setting("decoder_gguf_file") else {}
            decoder = decoder_class.from_pretrained(resolve_model_path(decoder_name_or_path), dtype=decoder_dtype, **kwargs)
            if decoder_type == "causal":
                n_layers = (config.decoder_config.num_hidden_layers if config is not None
                            else config_kwargs.pop("decoder_num_layers", None))
                if n_layers is not None:
                    keep_first_layers(decoder, n_layers)
        if config is None:
            config_kwargs.pop("decoder_num_layers", None)
            if processor is not None:
                prefix_ids, suffix_ids = processor.prompt_ids(config_kwargs.get("prompt"))
                config_kwargs.setdefault("prompt_prefix_ids", prefix_ids)
                config_kwargs.setdefault("prompt_suffix_ids", suffix_ids)
                if decoder_type == "causal" or config_kwargs.get("decoder_from_causal_lm"):
                    config_kwargs.setdefault("eos_token_id", processor.eos_token_id)
                    config_kwargs.setdefault("eot_token_id", processor.eot_token_id)
                    config_kwargs.setdefault("pad_token_id", processor.eos_token_id)
            config_kwargs.setdefault("checkpoint_weights", "trainable")
            config = WhisperLladaConfig(
                encoder_config=encoder_config,
                decoder_config=decoder.config,
                encoder_name_or_path=str(encoder_name_or_path),
                decoder_name_or_path=str(decoder_name_or_path),
                **config_kwargs,
            )
        model = cls(config, encoder=encoder, decoder=decoder)
        model.projector.to(dtype=encoder.dtype if dtype is None else encoder.dtype)
        return model

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor] | None:
        """What `save_pretrained` writes: None (everything) for checkpoint_weights="full"; the trainable weights for
        "trainable"; those plus the encoder's for "trainable+encoder"."""
        mode = self.config.checkpoint_weights
        if mode == "full":
            return None
        weights = self.trainable_state_dict()
        if mode == "trainable+encoder":
            weights.update({f"encoder.{name}": t.detach() for name, t in self.encoder.state_dict().items()})
        if not weights:
            raise ValueError(f"checkpoint_weights={mode!r} but the model has no trainable weights to save.")
        return weights

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """With `config.checkpoint_weights == "trainable"` only the trainable weights are written (a few MB for the
        projector); `from_pretrained` then pulls the base encoder/decoder from the ids in the config."""
        if state_dict is None:
            state_dict = self.checkpoint_state_dict()
        self.register_for_auto_class("AutoModelForSpeechSeq2Seq")
        self.config.auto_map = {
            **(getattr(self.config, "auto_map", None) or {}),
            "AutoConfig": "configuration_whisper_llada.WhisperLladaConfig",
            "AutoModel": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoModelForSpeechSeq2Seq": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoProcessor": "processing_whisper_llada.WhisperLladaProcessor",
        }
        self.config.custom_pipelines = {
            "automatic-speech-recognition": {
                "impl": "pipeline_whisper_llada.WhisperLladaASRPipeline",
                "pt": ["AutoModelForSpeechSeq2Seq"],
                "tf": [],
                "type": "audio",
            }
        }
        super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        if not os.path.exists(os.path.join(save_directory, "README.md")):  # keep a card with results, or your own
            write_model_card(save_directory)
        make_readable(save_directory)

    def push_to_hub(self, repo_id: str, *, commit_message: str | None = None, commit_description: str | None = None,
                    private: bool | None = None, token: bool | str | None = None, revision: str | None = None,
                    create_pr: bool = False, max_shard_size: int | str | None = "50GB", tags: list[str] | None = None,
                    model_card_results: dict | str | None = None) -> str:
        """transformers' `push_to_hub`, uploading this model's card (Hub metadata, usage for `repo_id` and, given an
        eval_hf.py results.json as `model_card_results`, a model-index with the WER per split and decoding). A card
        on the Hub that was not generated by whisper-llada is kept."""
        import tempfile

        from transformers.utils.hub import create_and_tag_model_card, hf_api

        repo_id = hf_api().create_repo(repo_id, private=private, token=token, exist_ok=True).repo_id
        hub_card = create_and_tag_model_card(repo_id, tags, token=token)  # the Hub's card, or an empty template
        with tempfile.TemporaryDirectory() as directory:
            self.save_pretrained(directory, max_shard_size=max_shard_size)
            hub_text = str(getattr(hub_card, "content", "") or "")
            if hub_text.strip() and MODEL_CARD_MARKER not in hub_text and "library_name" in hub_text:
                hub_card.save(os.path.join(directory, "README.md"))  # someone's own card: keep it
            else:
                write_model_card(directory, results=model_card_results, repo_id=repo_id, overwrite=True,
                                 model_name=repo_id.split("/")[-1])
            return self._upload_modified_files(directory, repo_id, files_timestamps={}, commit_message=commit_message,
                                               token=token, create_pr=create_pr, revision=revision,
                                               commit_description=commit_description)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, merge_lora: bool = True, **kwargs):
        """Loads a full checkpoint, or a trainable-weights-only checkpoint whose config names the base models.

        LoRA adapters saved by a LoRA run (`config.lora`) are merged into the decoder's weights (peft not needed);
        `merge_lora=False` keeps them as peft LoRA layers instead, e.g. to train them further.

        Without a `dtype` (and without a GPU `device_map`) the weights load as float32, whatever dtype they were saved
        in: on CPU, float16 matmuls are several times slower than float32. `dtype="auto"` (also what
        `pipeline(...)` passes by default) keeps the saved dtype, except that float16 weights still load as float32 on
        CPU. Pass `dtype=torch.bfloat16` or `torch.float16` to choose."""
        config = kwargs.pop("config", None)
        hub_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only", "subfolder") if k in kwargs}
        if config is None:
            config = cls.config_class.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        if str(kwargs.get("device_map") or "cpu") == "cpu":
            saved = getattr(config, "dtype", None)
            saved_half = saved in (torch.float16, "float16")
            if kwargs.get("dtype") is None or (kwargs.get("dtype") == "auto" and saved_half):
                kwargs["dtype"] = torch.float32
        if config.checkpoint_weights == "full":
            model = super().from_pretrained(pretrained_model_name_or_path, *args, config=config, **kwargs)
            return cls._load_generation_config(model, pretrained_model_name_or_path, hub_kwargs)
        with_encoder = config.checkpoint_weights == "trainable+encoder"
        if not ((config.encoder_name_or_path or with_encoder) and config.decoder_name_or_path):
            raise ValueError(
                f"{pretrained_model_name_or_path}: a trainable-weights-only checkpoint needs `encoder_name_or_path` and "
                "`decoder_name_or_path` in its config.json to pull the base models from."
            )
        dtype = kwargs.get("dtype")
        dtype = None if dtype == "auto" else dtype
        model = cls.from_encoder_decoder_pretrained(
            None if with_encoder else config.encoder_name_or_path, config.decoder_name_or_path, config=config,
            dtype=dtype,
        )
        trained = _load_safetensors_weights(pretrained_model_name_or_path, hub_kwargs)
        if merge_lora or not getattr(config, "lora", None):
            trained = _merge_lora_weights(model, trained, getattr(config, "lora", None))
        else:  # keep the adapters as adapters (to train them further); peft needed
            inject_lora(model, config.lora)
        missing, unexpected = model.load_state_dict(trained, strict=False)
        if unexpected:
            raise ValueError(f"{pretrained_model_name_or_path}: unexpected weights {unexpected[:8]} in the checkpoint.")
        expected = list(model.trainable_state_dict()) + ([f"encoder.{n}" for n in model.encoder.state_dict()] if with_encoder else [])
        absent = [name for name in expected if name not in trained]
        if absent:
            raise ValueError(f"{pretrained_model_name_or_path}: the checkpoint lacks trainable weights {absent[:8]}.")
        if kwargs.get("device_map") not in (None, "auto"):
            model.to(kwargs["device_map"])
        return cls._load_generation_config(model.eval(), pretrained_model_name_or_path, hub_kwargs)

    @staticmethod
    def _load_generation_config(model, name_or_path, hub_kwargs: dict):
        """The saved generation_config.json (the decoding defaults): without `GenerationMixin` the base
        `from_pretrained` does not read it. A LLaDA decoder's is a `LladaGenerationConfig`."""
        config_class = GenerationConfig if model.config.decoder_type == "causal" else LladaGenerationConfig
        try:
            loaded = config_class.from_pretrained(name_or_path, **hub_kwargs)
        except OSError:  # no generation_config.json: keep the one built from the config
            return model
        default = model.generation_config
        for name in ("mask_token_id", "eos_token_id", "pad_token_id"):  # files written before these were saved
            if getattr(loaded, name, None) is None and getattr(default, name, None) is not None:
                setattr(loaded, name, getattr(default, name))
        model.generation_config = loaded
        return model

    # -- speech prefix -----------------------------------------------------------------------------------------------

    def _check_input_features(self, input_features: torch.Tensor) -> None:
        n_mels = self.config.encoder_config.num_mel_bins
        expected = self.config.encoder_config.max_source_positions * 2
        if not torch.is_tensor(input_features) or not input_features.is_floating_point():
            raise ValueError(
                f"input_features must be a floating-point tensor of log-mel features (batch, {n_mels}, {expected}), "
                f"got {type(input_features).__name__} {getattr(input_features, 'dtype', '')}."
            )
        if input_features.dim() != 3 or input_features.shape[1] != n_mels or input_features.shape[2] != expected:
            raise ValueError(
                f"input_features must have shape (batch, {n_mels}, {expected}) (30 s of log-mel frames from the "
                f"WhisperFeatureExtractor), got {tuple(input_features.shape)}."
            )
        if torch.isnan(input_features).any():
            raise ValueError("input_features contain NaN values; check the audio that produced them.")

    def speech_lengths(self, attention_mask: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """Number of speech embeddings per sample: mel frames -> encoder frames (stride 2) -> stacked groups."""
        total_frames = self.config.encoder_config.max_source_positions
        if attention_mask is None:
            enc_frames = torch.full((batch,), total_frames, device=device)
        else:
            enc_frames = (attention_mask.long().sum(-1) + 1) // 2
        k = self.config.stack_factor
        return ((enc_frames + k - 1) // k).clamp(min=1)

    def embed_speech(
        self,
        input_features: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,
    ):
        """Returns the speech embeddings the decoder reads (B, S, d_model) and their valid lengths (B,): the
        projector's outputs, or with `config.speech_embeddings == "token_mixture"` their CTC token mixtures
        (`token_mixture`). Arguments as `project_speech`."""
        states, lengths = self.project_speech(input_features, attention_mask, encoder_outputs)
        return self.speech_embeddings_from(states), lengths

    def speech_embeddings_from(self, states: torch.Tensor) -> torch.Tensor:
        """Projector outputs (B, S, d) -> the speech embeddings the decoder reads: the outputs themselves, or
        (`config.speech_embeddings == "token_mixture"`, LegoSLM-style) each one's expected token embedding under the
        auxiliary CTC's posterior, softmax(speech_token_logits) @ the CTC classes' token embeddings: a speech embedding
        the CTC reads confidently as a token is that token's own embedding, so a pretrained decoder reads the speech as
        it reads text from the first step."""
        if getattr(self.config, "speech_embeddings", "projector") != "token_mixture":
            return states.to(self.decoder.dtype)
        weight = self.decoder.get_input_embeddings().weight
        classes = self.ctc_class_ids()
        table = weight if classes is None else weight[classes.to(weight.device)]
        posterior = torch.softmax(self.speech_token_logits(states).float(), dim=-1)  # (B, S, K)
        return (posterior @ table.float()).to(self.decoder.dtype)

    def project_speech(
        self,
        input_features: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,
    ):
        """Returns the projector's outputs (B, S, d_model) and their valid lengths (B,).

        `encoder_outputs` (B, T, d_enc): precomputed encoder frames (e.g. from an on-disk cache, trimmed to each
        audio's frames and zero-padded) used instead of running the encoder on `input_features`; `attention_mask` is
        still the (B, 3000) mel-frame mask that gives each sample's length (None = T frames each)."""
        if encoder_outputs is not None:
            frames = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
            if frames.dim() != 3 or frames.shape[-1] != self.config.encoder_config.d_model:
                raise ValueError(
                    f"encoder_outputs must have shape (batch, frames, {self.config.encoder_config.d_model}), "
                    f"got {tuple(frames.shape)}."
                )
            frames = frames.to(self.projector.mlp[0].weight.device)
            if attention_mask is None:
                k = self.config.stack_factor
                lengths = torch.full((frames.shape[0],), (frames.shape[1] + k - 1) // k, device=frames.device)
            else:
                lengths = self.speech_lengths(attention_mask, frames.shape[0], frames.device)
        else:
            self._check_input_features(input_features)
            encoder_trains = any(p.requires_grad for p in self.encoder.parameters())
            with torch.set_grad_enabled(torch.is_grad_enabled() and encoder_trains):
                frames = self.encoder(input_features.to(self.encoder.dtype)).last_hidden_state
            lengths = self.speech_lengths(attention_mask, frames.shape[0], frames.device)
        max_frames = int(lengths.max()) * self.config.stack_factor
        frames = frames[:, :max_frames]  # drop frames past the longest audio's end before the projector
        if self.training:
            frames = spec_augment(frames, lengths * self.config.stack_factor, self.config)
        states = self.projector(frames.to(self.projector.mlp[0].weight.dtype))
        mixture = getattr(self.config, "speech_embeddings", "projector") == "token_mixture"
        return (states if mixture else states.to(self.decoder.dtype)), lengths

    def build_prefix(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """Splices each sample's valid speech embeddings into the chat prompt; left-pads to a common length.

        Returns prefix embeddings (B, P, d) and the prefix attention mask (B, P)."""
        prefix_ids, suffix_ids = self.config.prompt_prefix_ids, self.config.prompt_suffix_ids
        if prefix_ids is None or suffix_ids is None:
            raise ValueError(
                "config.prompt_prefix_ids / prompt_suffix_ids are not set: build the model with "
                "`from_encoder_decoder_pretrained(..., processor=processor)` or set them from "
                "`WhisperLladaProcessor.prompt_ids()`."
            )
        embed = self.decoder.get_input_embeddings()
        device = speech.device
        before = embed(torch.tensor(prefix_ids, device=device))
        after = embed(torch.tensor(suffix_ids, device=device))
        lengths = speech_lengths.tolist()
        total = [len(prefix_ids) + n + len(suffix_ids) for n in lengths]
        width = max(total)
        prefix = speech.new_zeros(speech.shape[0], width, speech.shape[-1])
        mask = torch.zeros(speech.shape[0], width, dtype=torch.long, device=device)
        for row, (n, size) in enumerate(zip(lengths, total)):
            prefix[row, width - size :] = torch.cat((before, speech[row, :n], after))
            mask[row, width - size :] = 1
        return prefix, mask

    def prepare_prefix(self, input_features=None, attention_mask=None, inputs_embeds=None, encoder_outputs=None):
        """(prefix embeddings, prefix mask) from audio features, precomputed encoder frames (`encoder_outputs`), or a
        caller-built `inputs_embeds`."""
        if inputs_embeds is not None:
            if input_features is not None or encoder_outputs is not None:
                raise ValueError("Pass either `input_features` (audio) or `inputs_embeds` (a built prefix), not both.")
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != self.config.decoder_config.hidden_size:
                raise ValueError(
                    f"inputs_embeds must have shape (batch, prefix_length, {self.config.decoder_config.hidden_size}), "
                    f"got {tuple(inputs_embeds.shape)}."
                )
            mask = attention_mask if attention_mask is not None else torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
            return inputs_embeds.to(self.decoder.dtype), mask.to(inputs_embeds.device).long()
        if input_features is None and encoder_outputs is None:
            raise ValueError("Pass `input_features` (from the processor), `encoder_outputs` or `inputs_embeds`.")
        speech, lengths = self.embed_speech(input_features, attention_mask, encoder_outputs=encoder_outputs)
        return self.build_prefix(speech, lengths)

    # -- training ----------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_features: torch.Tensor | None = None,  # (B, n_mels, 3000)
        attention_mask: torch.Tensor | None = None,  # (B, 3000) mel-frame mask, or (B, P) with inputs_embeds
        labels: torch.LongTensor | None = None,  # (B, A) answer ids padded with EOS; -100 = not part of the answer
        inputs_embeds: torch.Tensor | None = None,
        mask_eps: float = 1e-3,
        encoder_outputs: torch.Tensor | None = None,  # (B, T, d_enc) precomputed encoder frames, replaces input_features
        **kwargs: Any,
    ) -> WhisperLladaOutput:
        """LLaDA SFT masked-diffusion loss: per sample t ~ U(eps, 1), each answer token masked with probability t,
        cross-entropy on the masked tokens divided by t, normalised by the answer length and the batch size.
        The prompt/speech prefix is never masked; EOS padding of the answer is part of the loss. In training,
        `config.block_mask_prob` of the samples are masked as block decoding sees them instead (`answer_mask_probs`).
        A causal decoder gets next-token cross-entropy instead (`_causal_loss`). With `config.ctc_weight > 0`, an
        auxiliary CTC loss on the speech embeddings is added (`_speech_ctc_loss`)."""
        if labels is None:
            raise ValueError("forward() needs `labels` (answer token ids padded with EOS) to compute the loss.")
        ctc = None
        if inputs_embeds is None and self.config.ctc_weight:
            states, lengths = self.project_speech(input_features, attention_mask, encoder_outputs=encoder_outputs)
            ctc = self._speech_ctc_loss(states, lengths, labels.to(states.device))
            if self.ctc_only:  # projector warm-up: the decoder is not run at all
                return WhisperLladaOutput(loss=ctc, ctc_loss=ctc)
            prefix, prefix_mask = self.build_prefix(self.speech_embeddings_from(states), lengths)
        else:
            prefix, prefix_mask = self.prepare_prefix(input_features, attention_mask, inputs_embeds, encoder_outputs)
        labels = labels.to(prefix.device)
        output = (self._causal_loss(prefix, prefix_mask, labels) if self.config.decoder_type == "causal"
                  else self._diffusion_loss(prefix, prefix_mask, labels, mask_eps))
        if ctc is not None:
            output.loss = output.loss + self.config.ctc_weight * ctc
            output.ctc_loss = ctc
        return output

    def speech_token_logits(self, speech: torch.Tensor) -> torch.Tensor:
        """Speech embeddings (B, S, d) read as decoder tokens, as the auxiliary CTC loss reads them: (B, S, K) scores
        against the token embeddings of the K CTC classes, `ctc_class_ids()` (the whole vocabulary by default)."""
        weight = self.decoder.get_input_embeddings().weight
        classes = self.ctc_class_ids()
        if classes is not None:
            weight = weight[classes.to(weight.device)]
        return speech @ weight.to(speech.dtype).T

    def ctc_class_ids(self) -> torch.LongTensor | None:
        """The token id of each CTC class (`config.ctc_token_ids`, sorted), or None: class k is token id k."""
        ids = getattr(self.config, "ctc_token_ids", None)
        return None if ids is None else torch.tensor(ids, dtype=torch.long)

    def _speech_ctc_loss(self, speech: torch.Tensor, lengths: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """Auxiliary CTC loss that reads each speech embedding as a token: logits = speech @ (token embeddings)^T, the
        transcript (up to its first EOS) as the target, `config.ctc_blank_id` as the blank. It teaches the projector
        to put the spoken words where the decoder already knows them (its own token embeddings), so that a pretrained
        decoder can read the speech from the first steps instead of first learning to ignore it. With
        `config.ctc_token_ids` only those tokens are classes; target tokens outside them are left out."""
        eos = self.config.eos_token_id
        is_eos = (labels == eos) | (labels == -100)
        target_lengths = (~is_eos).long().cumprod(-1).sum(-1)  # tokens before the first EOS
        rows = [row[:n] for row, n in zip(labels, target_lengths.tolist())]
        blank = self.config.ctc_blank_id
        classes = self.ctc_class_ids()
        if classes is not None:  # token ids -> class indices; tokens that are no class are dropped
            lookup = torch.full((self.decoder.get_input_embeddings().weight.shape[0],), -1, dtype=torch.long)
            lookup[classes] = torch.arange(len(classes))
            lookup = lookup.to(labels.device)
            rows = [mapped[mapped >= 0] for mapped in (lookup[row] for row in rows)]
            target_lengths = torch.tensor([len(row) for row in rows], device=labels.device)
            blank = int(lookup[blank])
        targets = torch.cat(rows)
        log_probs = torch.log_softmax(self.speech_token_logits(speech).float(), dim=-1)  # (B, S, K)
        return F.ctc_loss(log_probs.transpose(0, 1), targets, lengths, target_lengths, blank=blank,
                          reduction="mean", zero_infinity=True)

    def _diffusion_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor,
                        mask_eps: float) -> WhisperLladaOutput:
        batch, answer_len = labels.shape
        in_answer = labels != -100
        block_prob = self.config.block_mask_prob if self.training else 0.0  # eval loss: LLaDA's own masking
        p_mask = answer_mask_probs(in_answer, mask_eps, block_prob, self.config.block_mask_length)  # (B, A)
        masked = (torch.rand(batch, answer_len, device=prefix.device) < p_mask) & in_answer
        noisy = torch.where(masked, torch.full_like(labels, self.config.mask_token_id), labels.clamp(min=0))
        embeds = torch.cat((prefix, self.decoder.get_input_embeddings()(noisy)), dim=1)
        full_mask = torch.cat((prefix_mask, in_answer.long()), dim=1)
        width = prefix.shape[1]
        out = self.decoder(inputs_embeds=embeds, attention_mask=full_mask, logits_positions=slice(width, None))
        token_loss = F.cross_entropy(out.logits[masked].float(), labels[masked], reduction="none")
        answer_lengths = in_answer.sum(-1, keepdim=True).clamp(min=1).expand_as(labels)
        weights = 1.0 / (p_mask[masked] * answer_lengths[masked])
        loss = (token_loss * weights).sum() / batch
        return WhisperLladaOutput(loss=loss, logits=out.logits)

    def _causal_loss(self, prefix: torch.Tensor, prefix_mask: torch.Tensor, labels: torch.LongTensor):
        """Next-token cross-entropy (mean over answer tokens) for a causal decoder, teacher-forced on
        [prefix] + answer[:-1]. Targets are the transcript and its first EOS; the prefix, the EOS padding after the
        first EOS and -100 positions are not in the loss. Positions count real tokens only (as `generate` does)."""
        eos = self.config.eos_token_id
        in_answer = labels != -100
        answer = labels.masked_fill(~in_answer, eos)
        is_eos = answer == eos
        after_first_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
        targets = labels.masked_fill(after_first_eos | ~in_answer, -100)
        inputs = torch.cat((prefix, self.decoder.get_input_embeddings()(answer[:, :-1])), dim=1)
        full_mask = torch.cat((prefix_mask, torch.ones_like(answer[:, :-1])), dim=1)
        positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.decoder(inputs_embeds=inputs, attention_mask=full_mask, position_ids=positions,
                           logits_to_keep=answer.shape[1], use_cache=False)
        loss = F.cross_entropy(out.logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return WhisperLladaOutput(loss=loss, logits=out.logits)

    # -- generation --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate(
        self,
        input_features: torch.Tensor | None = None,  # (B, n_mels, 3000)
        attention_mask: torch.Tensor | None = None,  # (B, 3000) mel-frame mask, or (B, P) with inputs_embeds
        inputs_embeds: torch.Tensor | None = None,  # (B, P, d) a prefix built by the caller (no audio)
        encoder_outputs: torch.Tensor | None = None,  # (B, T, d_enc) precomputed encoder frames
        generation_config: GenerationConfig | None = None,
        **kwargs: Any,
    ) -> torch.LongTensor:
        """Transcribes: builds the speech prefix and hands off to the decoder's `generate`; returns the answer ids.

        A LLaDA decoder runs LLaDA's sampler (`generation_llada.py`): `decoding="A"|"B"|"C"` picks a preset and
        `steps`, `gen_length`, `block_length`, `temperature`, `remasking`, `threshold`, `kv_cache`, `early_stop`,
        `generator` override it; (B, gen_length) ids. A causal decoder runs transformers' `generate`
        (`max_new_tokens`, `num_beams`, ...). Unknown arguments raise an error naming them."""
        prefix, prefix_mask = self.prepare_prefix(input_features, attention_mask, inputs_embeds, encoder_outputs)
        return self.decoder.generate(inputs_embeds=prefix, attention_mask=prefix_mask,
                                     generation_config=copy.deepcopy(generation_config or self.generation_config),
                                     **kwargs)


def inject_lora(model: "WhisperLladaForConditionalGeneration", lora: dict, dropout: float | None = None) -> None:
    """Injects peft LoRA layers (`lora`: {"r", "lora_alpha", "target_modules"[, "lora_dropout"]}) into the decoder's
    transformer layers, in place (the model class stays the same), makes them trainable and records the settings in
    `config.lora`, which `from_pretrained` reads to merge (or, with `merge_lora=False`, to restore) saved adapters.
    `dropout` (training only) overrides `lora["lora_dropout"]`. Needs peft."""
    from peft import LoraConfig, inject_adapter_in_model

    causal = model.config.decoder_type == "causal"
    # only inside the transformer layers: for LLaDA `ff_out` is also the name of the untied LM head
    # (model.transformer.ff_out); causal LMs keep theirs in model.layers.{i}.{self_attn,mlp}.*
    layers = r"layers\.\d+\..*" if causal else r"blocks\.\d+"
    targets = list(lora["target_modules"])
    pattern = r".*\." + layers + r"\.(" + "|".join(re.escape(t) for t in targets) + r")$"
    dropout = float(lora.get("lora_dropout", 0.0) if dropout is None else dropout)
    config = LoraConfig(r=int(lora["r"]), lora_alpha=lora.get("lora_alpha", lora["r"]), lora_dropout=dropout,
                        target_modules=pattern, bias="none")
    inject_adapter_in_model(config, model.decoder)
    for name, param in model.decoder.named_parameters():
        if "lora_" in name:
            param.requires_grad_(True)
    model.config.lora = {"r": int(lora["r"]), "lora_alpha": lora.get("lora_alpha", lora["r"]), "target_modules": targets,
                         "lora_dropout": dropout}


def _merge_lora_weights(model: nn.Module, weights: dict[str, torch.Tensor], lora: dict | None) -> dict[str, torch.Tensor]:
    """Merges LoRA adapters saved by a LoRA training run (peft names `X.lora_A[.adapter].weight` /
    `X.lora_B[.adapter].weight`, scaling `config.lora["lora_alpha"] / config.lora["r"]`) into the base weight
    `X.weight` of `model` (W += scaling * B @ A) and returns the remaining weights (peft's `X.base_layer.weight`
    renamed to `X.weight`). Without adapter weights, `weights` is returned unchanged."""
    pattern = re.compile(r"^(.*)\.lora_A(?:\.[^.]+)?\.weight$")
    adapters = {m.group(1): name for name in weights if (m := pattern.match(name))}
    if not adapters:
        return weights
    if not lora or not lora.get("r"):
        raise ValueError("The checkpoint has LoRA weights but its config has no `lora` settings (r, lora_alpha).")
    scaling = float(lora.get("lora_alpha", lora["r"])) / float(lora["r"])
    params = dict(model.named_parameters())
    remaining = {}
    for name, tensor in weights.items():
        if ".lora_A" in name or ".lora_B" in name:
            continue
        remaining[name.replace(".base_layer.", ".")] = tensor
    with torch.no_grad():
        for base, a_name in adapters.items():
            b_name = a_name.replace(".lora_A", ".lora_B")
            if b_name not in weights or f"{base}.weight" not in params:
                raise ValueError(f"LoRA weights for {base} do not match the model (looked for {b_name}, {base}.weight).")
            target = remaining.get(f"{base}.weight", params[f"{base}.weight"])
            delta = weights[b_name].float() @ weights[a_name].float()
            merged = (target.float() + scaling * delta.to(target.device)).to(target.dtype)
            if f"{base}.weight" in remaining:
                remaining[f"{base}.weight"] = merged
            else:
                params[f"{base}.weight"].copy_(merged)
    return remaining


def _load_safetensors_weights(name_or_path, hub_kwargs: dict) -> dict[str, torch.Tensor]:
    """The weights stored in a (possibly sharded) safetensors checkpoint, local or on the Hub."""
    import json

    from safetensors.torch import load_file
    from transformers.utils import cached_file

    index = cached_file(name_or_path, "model.safetensors.index.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if index is None:
        return load_file(cached_file(name_or_path, "model.safetensors", **hub_kwargs))
    with open(index) as handle:
        shards = sorted(set(json.load(handle)["weight_map"].values()))
    weights: dict[str, torch.Tensor] = {}
    for shard in shards:
        weights.update(load_file(cached_file(name_or_path, shard, **hub_kwargs)))
    return weights


def make_readable(directory, recursive: bool = False) -> None:
    """Give the files in ``directory`` (and the directory itself) the permissions a
    plain ``open()`` would have given them: ``0o666 & ~umask`` for files,
    ``0o777 & ~umask`` for directories (bits are only added, never removed).

    safetensors (and ``tempfile``) write through private temporary files, so
    e.g. ``model.safetensors`` ends up mode 0600 while the files next to it
    are 0644; a checkpoint that is shared or uploaded must be readable like
    the rest. Symbolic links are left alone; ``recursive`` descends into
    sub-directories.
    """
    umask = os.umask(0)
    os.umask(umask)
    file_bits, dir_bits = 0o666 & ~umask, 0o777 & ~umask

    def fix(path: str, bits: int) -> None:
        mode = os.lstat(path).st_mode & 0o7777
        if mode | bits != mode:
            os.chmod(path, mode | bits)

    root = os.fspath(directory)
    fix(root, dir_bits)
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.is_symlink():
                continue
            if entry.is_file():
                fix(entry.path, file_bits)
            elif entry.is_dir() and recursive:
                make_readable(entry.path, recursive=True)


__all__ = ["WhisperLladaProjector", "WhisperLladaForConditionalGeneration", "make_readable"]
