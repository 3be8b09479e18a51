"""whisper-llada: speech recognition with a masked-diffusion LLM decoder.

Data flow:

    audio -> WhisperFeatureExtractor -> log-mel (B, n_mels, 3000)
          -> WhisperEncoder (frozen)          (B, 1500, d_enc)   frames past the audio's end are dropped
          -> WhisperLladaProjector            (B, S, d_model)    k frames stacked, MLP (modeling_projector.py)
          -> [CTC head: the speech read as decoder tokens; token mixtures; D's anchored hypothesis]
          -> chat prompt with the speech spliced in before the user turn's end-of-turn token   (B, P, d_model)
          -> decoder.prefix_loss (training) / decoder.generate (decoding; generation_whisper_llada.py)

The decoder is one of the families registered in decoder_families.py (LLaDA's `LladaForMaskedDiffusion`, Dream,
LLaDA2, DiffusionGemma, or a `CausalLMDecoder` for the AR-LLM baseline); they all offer the same interface
(docs/extending.md), so this model has no branches on the decoder's family. Base weights the checkpoint does not store
are pulled when the model is built (`config.checkpoint_weights`; loading helpers in modeling_loading.py), as Ultravox
does; LoRA adapters (`config.lora`, modeling_lora.py) are part of the modules and stored.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder
from transformers.utils import ModelOutput, logging

try:
    from .configuration_whisper_llada import TrainingRecipe, WhisperLladaConfig
    from .decoder_families import family, hidden_size
    from .generation_llada import editor_example
    from .generation_whisper_llada import WhisperLladaGenerationMixin
    from .modeling_llada import LladaRMSNorm, resolve_model_path
    from .modeling_loading import (cpu_auto_dtype, make_readable, mark_pulled, refuse_stock_asr_pipeline,
                                   saved_generation_config, stored_float16, tied_to_loaded, weight_tying)
    from .modeling_lora import LoraLinear, add_lora
    from .modeling_projector import WhisperLladaProjector, spec_augment
except ImportError:  # imported as a plain top-level module (tests, scripts)
    from configuration_whisper_llada import TrainingRecipe, WhisperLladaConfig
    from decoder_families import family, hidden_size
    from generation_llada import editor_example
    from generation_whisper_llada import WhisperLladaGenerationMixin
    from modeling_llada import LladaRMSNorm, resolve_model_path
    from modeling_loading import (cpu_auto_dtype, make_readable, mark_pulled, refuse_stock_asr_pipeline,
                                  saved_generation_config, stored_float16, tied_to_loaded, weight_tying)
    from modeling_lora import LoraLinear, add_lora
    from modeling_projector import WhisperLladaProjector, spec_augment

logger = logging.get_logger(__name__)


@dataclass
class WhisperLladaOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, A, vocab) at the answer positions
    ctc_loss: torch.Tensor | None = None  # the auxiliary CTC loss (unweighted) when training.ctc_weight > 0


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
        elif isinstance(module, LoraLinear):
            module.reset_lora_parameters()


class WhisperLladaForConditionalGeneration(WhisperLladaGenerationMixin, WhisperLladaPreTrainedModel):
    """Whisper encoder (frozen) -> projector (trainable) -> decoder (frozen, optionally with LoRA adapters): the
    decoder's loss in `forward` (LLaDA's masked-diffusion loss, or next-token cross-entropy for a causal decoder, plus
    the auxiliary CTC loss); `generate` builds the speech prefix and hands off to the decoder's `generate`."""

    accepts_loss_kwargs = False
    ctc_only = False  # training switch (not saved): forward returns the auxiliary CTC loss alone, without the decoder

    def __init__(self, config: WhisperLladaConfig, encoder: WhisperEncoder | None = None,
                 decoder: nn.Module | None = None):
        super().__init__(config)
        for sub_config in (config.encoder_config, config.decoder_config):  # composing the config resets these
            if getattr(sub_config, "_attn_implementation", None) in (None, "eager"):
                sub_config._attn_implementation = "sdpa"  # exact, and faster than eager attention
        self.encoder = encoder if encoder is not None else self._make_encoder(config)
        self.encoder.config._attn_implementation = "sdpa"
        self.projector = WhisperLladaProjector(config)
        self.decoder = decoder if decoder is not None else self._make_decoder(config)
        if config.lora and not any(isinstance(m, LoraLinear) for m in self.decoder.modules()):
            add_lora(self.decoder, config.lora)
        self.post_init()
        for module in self.decoder.modules():  # new adapters start as the identity (B = 0), whatever init ran before
            if isinstance(module, LoraLinear) and decoder is None:
                module.reset_lora_parameters()
        self.freeze_base_models()
        if hasattr(self.decoder, "set_stop_ids"):  # a causal decoder stops at EOS or the end of turn
            self.decoder.set_stop_ids(config.eos_token_id, config.eot_token_id)
        # the speech model's own decoding defaults: a copy, so that the decoder's stay those of its checkpoint; the
        # speech model's special ids, except a list of stop ids the decoder already has
        self.generation_config = copy.deepcopy(self.decoder.generation_config)
        ids = {"mask_token_id": config.mask_token_id, "eos_token_id": config.eos_token_id,
               "pad_token_id": config.pad_token_id}
        self.generation_config.update(**{name: value for name, value in ids.items() if value is not None and not
                                         isinstance(getattr(self.generation_config, name, None), list)})

    @staticmethod
    def _make_encoder(config: WhisperLladaConfig) -> WhisperEncoder:
        """The base encoder: pulled from `encoder_name_or_path` when the checkpoint does not store it."""
        if config.checkpoint_weights == "trainable" and config.encoder_name_or_path:
            from transformers import WhisperModel

            with torch.device("cpu"):  # real weights, also inside from_pretrained's meta-device init
                whisper = WhisperModel.from_pretrained(resolve_model_path(config.encoder_name_or_path),
                                                       dtype=torch.get_default_dtype())
            return mark_pulled(whisper.get_encoder())
        return WhisperEncoder(config.encoder_config)

    @staticmethod
    def _make_decoder(config: WhisperLladaConfig) -> nn.Module:
        """The base decoder of the config's family: pulled from `decoder_name_or_path` when the checkpoint does not
        store it, else built from `decoder_config` (weights loaded afterwards)."""
        decoder_class = family(config.decoder_type).decoder_class()
        if config.checkpoint_weights != "full" and config.decoder_name_or_path:
            with torch.device("cpu"), weight_tying():  # real, tied weights, also inside from_pretrained's init
                return mark_pulled(decoder_class.pull(config))
        build = getattr(decoder_class, "from_config", None)
        return build(config.decoder_config) if build is not None else decoder_class(config.decoder_config)

    def freeze_base_models(self, encoder: bool = True, decoder: bool = True) -> None:
        """Frozen encoder and decoder (the default): the projector and LoRA adapters train."""
        self.encoder.requires_grad_(not encoder)
        self.decoder.requires_grad_(not decoder)
        for module in self.decoder.modules():
            if isinstance(module, LoraLinear):
                module.lora_A.requires_grad_(True)
                module.lora_B.requires_grad_(True)

    @classmethod
    def can_generate(cls) -> bool:
        refuse_stock_asr_pipeline(sys._getframe(1))
        return True

    @property
    def asr_pipeline_class(self) -> type:
        """This model's ASR pipeline, for `pipeline("automatic-speech-recognition", model=model, ...,
        pipeline_class=model.asr_pipeline_class)` (a path or Hub id with trust_remote_code finds it by itself)."""
        try:
            from .pipeline_whisper_llada import WhisperLladaASRPipeline
        except ImportError:
            from pipeline_whisper_llada import WhisperLladaASRPipeline
        return WhisperLladaASRPipeline

    # -- saving and loading ------------------------------------------------------------------------------------------

    def checkpoint_state_dict(self) -> dict[str, torch.Tensor] | None:
        """What `save_pretrained` writes (`config.checkpoint_weights`): None (everything) for "full"; the trainable
        weights (projector, anything unfrozen) and the LoRA adapters for "trainable"; those plus the encoder's for
        "trainable+encoder". What is not written is pulled from the base models' ids when the model is built."""
        if self.config.checkpoint_weights == "full":
            return None
        weights = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad or ".lora_" in name}
        if self.config.checkpoint_weights == "trainable+encoder":
            weights.update({f"encoder.{name}": t.detach() for name, t in self.encoder.state_dict().items()})
        return weights

    def save_pretrained(self, save_directory, *args, state_dict=None, **kwargs):
        """transformers' save_pretrained with this model's remote code (auto classes and the ASR pipeline, so that
        `AutoModel`/`AutoProcessor`/`pipeline(...)` load it with trust_remote_code) and only the weights the
        checkpoint stores (`checkpoint_state_dict`)."""
        try:  # the ASR pipeline ships beside the model (config.custom_pipelines): a relative import copies its file
            from .pipeline_whisper_llada import WhisperLladaASRPipeline  # noqa: F401
        except ImportError:
            pass

        self.config.auto_map = {
            "AutoConfig": "configuration_whisper_llada.WhisperLladaConfig",
            "AutoModel": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoModelForSpeechSeq2Seq": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
            "AutoProcessor": "processing_whisper_llada.WhisperLladaProcessor",
        }
        self.config.custom_pipelines = {"automatic-speech-recognition": {
            "impl": "pipeline_whisper_llada.WhisperLladaASRPipeline", "pt": ["AutoModelForSpeechSeq2Seq"], "tf": [],
            "type": "audio"}}
        self.register_for_auto_class("AutoModelForSpeechSeq2Seq")
        state_dict = self.checkpoint_state_dict() if state_dict is None else state_dict
        loaded_as = getattr(self, "_loaded_float16_as", None)
        if loaded_as is not None and any(t.dtype == loaded_as for t in (state_dict or self.state_dict()).values()):
            logger.warning(f"save_pretrained: this model was stored in float16 and loaded as {loaded_as} on the CPU, "
                           "so it is saved in that dtype, about twice the size; model.half().save_pretrained(...) "
                           "keeps float16.")
        result = super().save_pretrained(save_directory, *args, state_dict=state_dict, **kwargs)
        make_readable(save_directory)  # safetensors writes model.safetensors through a private (0600) temporary file
        return result

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """transformers' from_pretrained; the base weights a checkpoint does not store are pulled while the model is
        built. On CPU, float16 weights load as float32 (several times faster there) unless a dtype is named; a stored
        weight the checkpoint lacks is an error, not a random initialisation."""
        upcast = None
        if str(kwargs.get("device_map") or "cpu") == "cpu" and kwargs.get("dtype") in (None, "auto"):
            kwargs["dtype"] = torch.float32 if kwargs.get("dtype") is None else cpu_auto_dtype(
                pretrained_model_name_or_path, kwargs)
            upcast = kwargs["dtype"] if stored_float16(pretrained_model_name_or_path, kwargs) else None
        wants_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        model.decoder.tie_weights()  # a causal LM's tied LM head is stored once, as its embeddings
        missing = sorted(set(info["missing_keys"]) - tied_to_loaded(model, info["missing_keys"]))
        if missing:
            raise ValueError(f"{pretrained_model_name_or_path}: the checkpoint lacks weights it should store: "
                             f"{missing[:8]}.")
        if isinstance(kwargs.get("device_map"), (str, torch.device)) and str(kwargs["device_map"]) != "auto":
            model.to(kwargs["device_map"])  # pulled base weights were built on the CPU
        model.generation_config = saved_generation_config(model, pretrained_model_name_or_path, kwargs)
        model._loaded_float16_as = upcast if upcast == torch.float32 else None
        return (model, info) if wants_info else model

    def push_to_hub(self, repo_id: str, *, model_card_results: dict | str | None = None, **kwargs) -> str:
        """transformers' push_to_hub, with this model's card (Hub metadata, usage and, given an eval_hf.py
        results.json as `model_card_results`, a model-index with the WER per split and decoding)."""
        try:
            from .modelcard_whisper_llada import push_with_model_card
        except ImportError:
            from modelcard_whisper_llada import push_with_model_card

        return push_with_model_card(self, repo_id, results=model_card_results, **kwargs)

    # -- speech side -------------------------------------------------------------------------------------------------

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

    def project_speech(self, input_features: torch.Tensor | None, attention_mask: torch.Tensor | None = None,
                       encoder_outputs: torch.Tensor | None = None):
        """Returns the projector's outputs (B, S, d_model) and their valid lengths (B,).

        `encoder_outputs` (B, T, d_enc): precomputed encoder frames (e.g. from an on-disk cache, trimmed to each
        audio's frames and zero-padded) used instead of running the encoder on `input_features`; `attention_mask` is
        still the (B, 3000) mel-frame mask that gives each sample's length (None = T frames each)."""
        if encoder_outputs is not None:
            frames = encoder_outputs[0] if isinstance(encoder_outputs, (tuple, list, ModelOutput)) else encoder_outputs
            if frames.dim() != 3 or frames.shape[-1] != self.config.encoder_config.d_model:
                raise ValueError(f"encoder_outputs must have shape (batch, frames, {self.config.encoder_config.d_model}),"
                                 f" got {tuple(frames.shape)}.")
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
        frames = frames[:, : int(lengths.max()) * self.config.stack_factor]  # drop frames past the longest audio's end
        if self.training:
            frames = spec_augment(frames, lengths * self.config.stack_factor, self.config.recipe)
        return self.projector(frames.to(self.projector.mlp[0].weight.dtype)), lengths

    def ctc_class_ids(self) -> torch.LongTensor | None:
        """The token id of each CTC class (`config.ctc_token_ids`), or None: class k is token id k."""
        ids = self.config.ctc_token_ids
        return None if ids is None else torch.tensor(ids, dtype=torch.long)

    def token_embeddings(self) -> torch.Tensor:
        """(vocab, d) the decoder's token embeddings as its lookups give them: the embedding table, times the
        embedding's `embed_scale` for a decoder that scales its lookups (Gemma's, DiffusionGemma's: sqrt(d)). The
        speech embeddings live in that space (they are spliced between looked-up prompt tokens), so the CTC head and
        token mixtures compare with and mix these rows."""
        embedding = self.decoder.get_input_embeddings()
        scale = getattr(embedding, "embed_scale", None)
        return embedding.weight if scale is None else embedding.weight * scale.to(embedding.weight.dtype)

    def speech_token_logits(self, states: torch.Tensor) -> torch.Tensor:
        """The CTC head: projector outputs (B, S, d) read as decoder tokens, (B, S, K) scores against the token
        embeddings of the K CTC classes (`ctc_class_ids()`, the whole vocabulary by default; `token_embeddings`)."""
        weight = self.token_embeddings()
        classes = self.ctc_class_ids()
        if classes is not None:
            weight = weight[classes.to(weight.device)]
        return states @ weight.to(states.dtype).T

    def speech_embeddings_from(self, states: torch.Tensor) -> torch.Tensor:
        """Projector outputs (B, S, d) -> the speech embeddings the decoder reads: the outputs themselves, or
        (`config.speech_embeddings == "token_mixture"`, LegoSLM-style) each one's expected token embedding under the
        CTC head's posterior, so a pretrained decoder reads the speech as it reads text from the first step."""
        if self.config.speech_embeddings != "token_mixture":
            return states.to(self.decoder.dtype)
        weight = self.token_embeddings()
        classes = self.ctc_class_ids()
        table = weight if classes is None else weight[classes.to(weight.device)]
        posterior = torch.softmax(self.speech_token_logits(states).float(), dim=-1)  # (B, S, K)
        return (posterior @ table.float()).to(self.decoder.dtype)

    def embed_speech(self, input_features, attention_mask=None, encoder_outputs=None):
        """The speech embeddings the decoder reads (B, S, d_model) and their valid lengths (B,)."""
        states, lengths = self.project_speech(input_features, attention_mask, encoder_outputs)
        return self.speech_embeddings_from(states), lengths

    def build_prefix(self, speech: torch.Tensor, speech_lengths: torch.Tensor):
        """Splices each sample's valid speech embeddings into the chat prompt; left-pads to a common length.

        Returns prefix embeddings (B, P, d) and the prefix attention mask (B, P)."""
        prefix_ids, suffix_ids = self.config.prompt_prefix_ids, self.config.prompt_suffix_ids
        if prefix_ids is None or suffix_ids is None:
            raise ValueError("config.prompt_prefix_ids / prompt_suffix_ids are not set: build the model with "
                             "build_whisper_llada.build_model (or set them from WhisperLladaProcessor.prompt_ids()).")
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

    def _check_prefix_inputs(self, input_features, inputs_embeds, encoder_outputs) -> None:
        if inputs_embeds is not None:
            if input_features is not None or encoder_outputs is not None:
                raise ValueError("Pass either `input_features` (audio) or `inputs_embeds` (a built prefix), not both.")
            width = hidden_size(self.config.decoder_config)
            if inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != width:
                raise ValueError(f"inputs_embeds must have shape (batch, prefix_length, {width}), got "
                                 f"{tuple(inputs_embeds.shape)}.")
        elif input_features is None and encoder_outputs is None:
            raise ValueError("Pass `input_features` (from the processor), `encoder_outputs` or `inputs_embeds`.")

    def prepare_prefix(self, input_features=None, attention_mask=None, inputs_embeds=None, encoder_outputs=None):
        """(prefix embeddings, prefix mask) from audio features, precomputed encoder frames (`encoder_outputs`), or a
        caller-built `inputs_embeds`."""
        self._check_prefix_inputs(input_features, inputs_embeds, encoder_outputs)
        if inputs_embeds is not None:
            mask = attention_mask if attention_mask is not None else torch.ones(inputs_embeds.shape[:2], dtype=torch.long)
            return inputs_embeds.to(self.decoder.dtype), mask.to(inputs_embeds.device).long()
        return self.build_prefix(*self.embed_speech(input_features, attention_mask, encoder_outputs))

    # -- training ----------------------------------------------------------------------------------------------------

    def forward(
        self,
        input_features: torch.Tensor | None = None,  # (B, n_mels, 3000)
        attention_mask: torch.Tensor | None = None,  # (B, 3000) mel-frame mask, or (B, P) with inputs_embeds
        labels: torch.LongTensor | None = None,  # (B, A) answer ids padded with EOS; -100 = not part of the answer
        inputs_embeds: torch.Tensor | None = None,
        encoder_outputs: torch.Tensor | None = None,  # (B, T, d_enc) precomputed encoder frames, replaces input_features
        editor_inputs: torch.LongTensor | None = None,  # (B, A) editor examples' starts (-1 rows: LLaDA's masking)
        editor_hints: torch.LongTensor | None = None,  # (B, A) the first pass's token at their masked slots (-1: none)
        **kwargs: Any,
    ) -> WhisperLladaOutput:
        """The decoder's loss of the answer after the speech prefix (`decoder.prefix_loss`: LLaDA's SFT
        masked-diffusion loss, or next-token cross-entropy for a causal decoder) plus, with `training.ctc_weight`,
        the auxiliary CTC loss of the speech read as tokens. In training the recipe's augmentations apply
        (SpecAugment, block masks, anchored answers); evaluation uses LLaDA's own masking. `editor_inputs` rows
        (deliberation examples made by the collator, `labels` holding their targets) replace LLaDA's masking by their
        start: the loss is taken at their [MASK] slots."""
        if labels is None:
            raise ValueError("forward() needs `labels` (answer token ids padded with EOS) to compute the loss.")
        self._check_prefix_inputs(input_features, inputs_embeds, encoder_outputs)
        recipe = self.config.recipe
        ctc, anchored = None, None
        if inputs_embeds is not None:
            prefix, prefix_mask = self.prepare_prefix(attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        else:
            states, lengths = self.project_speech(input_features, attention_mask, encoder_outputs)
            if recipe.ctc_weight:
                ctc = self._speech_ctc_loss(states, lengths, labels.to(states.device))
                if self.ctc_only:  # projector warm-up: the decoder is not run at all
                    return WhisperLladaOutput(loss=ctc, ctc_loss=ctc)
            if self.training and recipe.anchor_prob > 0:
                anchored, labels = self._editor_examples(states, lengths, labels, recipe)
            prefix, prefix_mask = self.build_prefix(self.speech_embeddings_from(states), lengths)
        if editor_inputs is not None:
            editor_inputs = editor_inputs.to(labels.device)
            anchored = editor_inputs if anchored is None else torch.where(
                (editor_inputs >= 0).all(-1, keepdim=True), editor_inputs, anchored)
        decoder_recipe = recipe if self.training else TrainingRecipe(mask_eps=recipe.mask_eps)
        hints = {} if editor_hints is None else {"hints": editor_hints.to(prefix.device)}
        output = self.decoder.prefix_loss(prefix, prefix_mask, labels.to(prefix.device), decoder_recipe, anchored,
                                          **hints)
        loss = output.loss if ctc is None else output.loss + recipe.ctc_weight * ctc
        return WhisperLladaOutput(loss=loss, logits=output.logits, ctc_loss=ctc)

    def _speech_ctc_loss(self, states: torch.Tensor, lengths: torch.Tensor, labels: torch.LongTensor) -> torch.Tensor:
        """Auxiliary CTC loss of the CTC head (`speech_token_logits`), the transcript (up to its first EOS) as the
        target. It teaches the projector to put the spoken words where the decoder already knows them (its own token
        embeddings). With `config.ctc_token_ids` only those tokens are classes; target tokens outside them are left
        out."""
        is_eos = (labels == self.config.eos_token_id) | (labels == -100)
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
        log_probs = torch.log_softmax(self.speech_token_logits(states).float(), dim=-1)  # (B, S, K)
        return F.ctc_loss(log_probs.transpose(0, 1), torch.cat(rows), lengths, target_lengths, blank=blank,
                          reduction="mean", zero_infinity=True)

    def _editor_examples(self, states, lengths, labels, recipe: TrainingRecipe):
        """For `recipe.anchor_prob` of the rows, D's editing task in the CTC reading's frame (`editor_example`):
        (inputs (B, A), -1 for rows left to LLaDA's masking; labels (B, A) with those rows' targets)."""
        use = (torch.rand(labels.shape[0]) < recipe.anchor_prob).tolist()
        inputs = torch.full_like(labels, -1)
        if not any(use):
            return inputs, labels
        labels = labels.clone()
        tokens, confidences = self.ctc_hypotheses(states.detach(), lengths)
        for row in (i for i, chosen in enumerate(use) if chosen):
            inputs[row], labels[row] = editor_example(labels[row], tokens[row], confidences[row],
                                                      recipe.anchor_threshold, self.config.mask_token_id,
                                                      self.config.eos_token_id, self.config.ctc_blank_id)
        return inputs, labels


__all__ = ["WhisperLladaForConditionalGeneration"]
