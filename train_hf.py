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
import math
import os
import sys
import time
from typing import Any, Optional, Union

from transformers import set_seed

from build_whisper_llada import DecoderSpec, ModelSpec, apply_lora, build_model, continue_training
from modelcard_whisper_llada import hub_unreachable, is_network_error
from whisper_llada_train_args import (ARG_CLASSES, DataArguments, ModelArguments,  # noqa: F401 (re-exported)
                                      TrainConfigError, WhisperLladaTrainingArguments, check_hub_sources,
                                      load_config_file, parse_args, resume_checkpoint, unit_count)
from whisper_llada_training import (BudgetCallback, DeliberationExamples, EncoderCache, ExistingModelError,
                                    SpeechCollator,
                                    WhisperLladaTrainer, check_model_dirs, count_parameters, end_distributed,
                                    load_filtered, print_skip_summary, save_final, training_token_ids,
                                    training_units)

logger = logging.getLogger("train_hf")


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
                "block_mask_prob", "block_mask_length", "anchor_prob", "anchor_threshold", "deliberation_prob",
                "deliberation_threshold", "deliberation_random_mask", "deliberation_slack")


def prepare_model(args: ModelArguments):
    """(model, processor): a new one (`model_spec`) or a saved one (`--model_name_or_path`) set up as the flags say:
    the training recipe, the CTC head, the answer length, what the checkpoint stores."""
    if args.model_name_or_path:
        model, processor = continue_training(args.model_name_or_path, args.model_dtype, args.lora_r,
                                             args.train_decoder, args.freeze_decoder_embeddings, args.reset_projector)
        if args.lora_r > 0 and not model.config.lora:
            apply_lora(model, model_spec(args).lora)
        config = model.config
        for name in ("ctc_blank_id", "speech_embeddings", "checkpoint_weights", "first_pass", "first_pass_hints"):
            if getattr(args, name) is not None:
                setattr(config, name, getattr(args, name))
    else:
        model, processor = build_model(model_spec(args))
        config = model.config
        config.first_pass = args.first_pass
        config.first_pass_hints = bool(args.first_pass_hints)
    config.update_recipe(**{name: getattr(args, name) for name in RECIPE_FLAGS if getattr(args, name) is not None})
    editing = [name for name in ("anchor_prob", "deliberation_prob") if getattr(config.recipe, name)]
    if editing and config.mask_token_id is None:
        raise TrainConfigError(f"--{editing[0]}: editor examples mark the slots to refill with [MASK], and the "
                               f"{config.decoder_type} decoder's tokenizer has none.")
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
    """The decoding a saved model uses with no arguments: `decoding`, or D for a model with a CTC head whose decoder
    family reads D (its generation config has the preset: D starts from the CTC reading); its settings (e.g. D's
    anchor_threshold) are the model's current ones."""
    if decoding is None:
        if model.config.ctc_blank_id is None or not reads_decoding(model, "D"):
            return
        decoding = "D"
    model.generation_config = model.resolve_decoding(decoding)  # a preset: no explicit settings on top of it


def reads_decoding(model, decoding: str) -> bool:
    """Whether the model's decoder family reads the preset `decoding` (its generation config says so and resolves
    it to that preset)."""
    if not type(model.resolve_decoding()).handles(decoding):
        return False
    try:
        return model.resolve_decoding(decoding).name.split(",")[0] == decoding
    except (ValueError, TypeError):
        return False


def record_answer_rate(model, processor, dataset, quantile: float = 0.999, streamed_rates=None,
                       streamed_seconds=None) -> None:
    """A masked-diffusion model's `tokens_per_second` (generation_config): the training answers' rate (answer tokens
    + EOS per second of audio) at `quantile`, so that A/B/C give long windows room in proportion to what the model
    saw in training; and its `max_window_s`, the longest training audio (rounded up to 0.1 s), so that long audio is
    decoded in windows no longer than the decoder learned to read: from the local data's durations, or for streamed
    data from the records the collator read (`streamed_rates`, `streamed_seconds`: a stream's durations are not known
    before it is read)."""
    if not hasattr(model.generation_config, "tokens_per_second"):
        return
    if hasattr(dataset, "__len__") and len(dataset):
        import whisper_llada_data as wld

        rates = [(len(processor.encode_text(wld.normalize_transcript(text))) + 1) / seconds
                 for text, seconds in zip(dataset["text"], dataset["length"]) if seconds > 0]
        seconds = [s for s in dataset["length"] if s > 0]
    else:
        rates, seconds = list(streamed_rates or []), list(streamed_seconds or [])
    if rates:
        rates.sort()
        model.generation_config.tokens_per_second = round(rates[min(len(rates) - 1, int(quantile * len(rates)))], 2)
    if seconds and hasattr(model.generation_config, "max_window_s"):
        model.generation_config.max_window_s = min(30.0, math.ceil(max(seconds) * 10) / 10)


def resumed_step(checkpoint: Optional[str]) -> int:
    """The step a run resumed from (its checkpoint's trainer_state.json), 0 for a fresh run."""
    path = os.path.join(checkpoint, "trainer_state.json") if checkpoint else None
    if not path or not os.path.isfile(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        return int(json.load(handle).get("global_step", 0))


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
    editor = DeliberationExamples.for_model(model, processor, data_args.first_pass_hypotheses)
    collator = SpeechCollator(processor, cache, data_args.max_label_length, data_args.on_bad_data, train_stats,
                              max_seconds=data_args.max_seconds, editor=editor)
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
    record_answer_rate(model, processor, train_dataset, streamed_rates=collator.answer_rates,
                       streamed_seconds=collator.seconds_read)
    if trainer.is_world_process_zero():
        save_final(model, processor, training_args.final_model_dir, training_args.final_model_dtype)
        first = resumed_step(resume)
        done = trainer.state.global_step - first
        where = f" (steps {first + 1}-{trainer.state.global_step}, resumed from step {first})" if first else ""
        print(f"[train] {done} steps in {elapsed / 60:.1f} min{where}", flush=True)
    end_distributed()
    return {"trainer": trainer, "metrics": metrics, "model": model, "processor": processor, "cache": cache}


__all__ = ["main", "parse_args", "prepare_model", "model_spec", "ModelArguments", "DataArguments",
           "WhisperLladaTrainingArguments", "ARG_CLASSES", "TrainConfigError"]


if __name__ == "__main__":
    try:
        main()
    except (TrainConfigError, ExistingModelError, FileNotFoundError, ConnectionError) as error:
        sys.exit(f"train_hf.py: error: {error}")
