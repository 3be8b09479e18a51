"""Tests for train_hf.py: argument parsing, a tiny end-to-end run, trainable-only checkpoints, LoRA save/reload,
the encoder cache, exact resumption, DDP agreement (torchrun, gloo) and bad-data handling.

Everything runs on tiny random models with a tiny character-level tokenizer and synthetic audio; one test uses the
real assets in ../shared (skipped without them)."""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import transformers
from conftest import BOS_ID, EOS_ID, EOT_ID, LIBRISPEECH, MASK_ID, ROOT, WHISPER_TINY, needs_shared, synthetic_speech, \
    tiny_config, tiny_decoder_config
from safetensors.torch import load_file

import train_hf
import whisper_llada_data as wld
import whisper_llada_data_prep as prep
from modeling_llada import LladaForMaskedDiffusion
from modeling_whisper_llada import WhisperLladaForConditionalGeneration
from processing_whisper_llada import LLADA_CHAT_TEMPLATE

WORDS = ["a", "cat", "sat", "on", "the", "mat", "dog", "ran", "far", "away", "sun", "is", "hot"]


# ----------------------------------------------------------------------------------------------------------------------
# fixtures: tiny base models, tokenizer, synthetic data
# ----------------------------------------------------------------------------------------------------------------------


def make_tiny_tokenizer():
    """Character-level tokenizer whose special ids match conftest's tiny vocabulary (BOS 60, EOT 61, EOS 62, MASK 63)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = list("abcdefghijklmnopqrstuvwxyz '\n:")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({"[UNK]": 40, "<|start_header_id|>": 41, "<|end_header_id|>": 42, "<|startoftext|>": BOS_ID,
                  "<|eot_id|>": EOT_ID, "<|endoftext|>": EOS_ID, "<|mdm_mask|>": MASK_ID})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        unk_token="[UNK]",
        additional_special_tokens=["<|mdm_mask|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    )
    tokenizer.chat_template = LLADA_CHAT_TEMPLATE
    return tokenizer


def write_utterances(directory: Path, n: int, seed: int = 0) -> list[dict]:
    """n short synthetic utterances (noise + tone, 0.5-2 s) with few-word transcripts, as manifest entries."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        seconds = float(rng.uniform(0.5, 2.0))
        wave = synthetic_speech(seconds, seed=rng, freq=rng.uniform(100, 800), amplitude=0.1, tremolo=None, noise=0.02)
        path = directory / f"utt{i:03d}.wav"
        sf.write(path, wave, 16000)
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 5)))).upper()
        entries.append({"audio_filepath": str(path), "duration": round(seconds, 3), "text": text, "key": f"utt{i:03d}"})
    return entries


def write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny base encoder (WhisperModel + feature extractor), tiny LLaDA decoder, tokenizer, and an 8-utterance manifest."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    base = tmp_path_factory.mktemp("tiny_assets")
    torch.manual_seed(0)
    config = tiny_config()
    encoder_dir, decoder_dir, tokenizer_dir = base / "encoder", base / "decoder", base / "tokenizer"
    encoder_config = config.encoder_config
    for name in ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"):
        setattr(encoder_config, name, 1)  # keep the (unused) Whisper decoder's ids inside its tiny vocabulary
    WhisperModel(encoder_config).save_pretrained(encoder_dir)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(encoder_dir)
    LladaForMaskedDiffusion(tiny_decoder_config()).save_pretrained(decoder_dir)
    make_tiny_tokenizer().save_pretrained(tokenizer_dir)
    manifest = write_manifest(base / "train.jsonl", write_utterances(base / "audio", 8))
    return {"encoder": str(encoder_dir), "decoder": str(decoder_dir), "tokenizer": str(tokenizer_dir),
            "manifest": str(manifest), "base": base}


def base_args(assets, output_dir, *extra) -> list[str]:
    return [
        "--encoder_name_or_path", assets["encoder"], "--decoder_name_or_path", assets["decoder"],
        "--tokenizer_name_or_path", assets["tokenizer"], "--projector_hidden_sizes", "24", "16", "24",
        "--train_data", assets["manifest"], "--output_dir", str(output_dir), "--use_cpu", "true",
        "--per_device_train_batch_size", "4", "--learning_rate", "1e-3", "--logging_steps", "1",
        "--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true", "--seed", "0",
        "--dataloader_num_workers", "0", *extra,
    ]


def logged_losses(trainer) -> dict[int, float]:
    return {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry}


# ----------------------------------------------------------------------------------------------------------------------
# arguments
# ----------------------------------------------------------------------------------------------------------------------


def test_yaml_config_then_cli_overrides(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "encoder_name_or_path: some/whisper\n"
        "decoder_config: {d_model: 64, n_layers: 2, n_heads: 4, mlp_hidden_size: 96}\n"
        "projector_hidden_sizes: [32, 16]\n"
        "train_data: [a.jsonl, b.jsonl]\n"
        "learning_rate: 1e-3\n"          # YAML reads this as a string: converted with the field's type
        "per_device_train_batch_size: 16\n"
        "train_decoder: true\n"
        "on_bad_data: error\n"
        "max_train_minutes: 5\n"
        f"output_dir: {tmp_path / 'out'}\n"
    )
    model_args, data_args, training_args = train_hf.parse_args(
        [str(config), "--learning_rate", "0.5", "--lora_r", "4", "--train_data", "c.jsonl"])
    assert model_args.encoder_name_or_path == "some/whisper"
    assert model_args.decoder_config == {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 96}
    assert model_args.projector_hidden_sizes == [32, 16]
    assert model_args.train_decoder is True and model_args.lora_r == 4
    assert data_args.train_data == ["c.jsonl"] and data_args.on_bad_data == "error"
    assert training_args.learning_rate == 0.5 and training_args.per_device_train_batch_size == 16
    assert training_args.max_train_minutes == 5
    # without overrides the YAML values stand, the float string is converted
    _, data_args, training_args = train_hf.parse_args([str(config)])
    assert training_args.learning_rate == pytest.approx(1e-3) and data_args.train_data == ["a.jsonl", "b.jsonl"]

    config.write_text("not_an_argument: 1\n")
    with pytest.raises(ValueError, match="not_an_argument"):
        train_hf.parse_args([str(config)])
    with pytest.raises(ValueError, match="on_bad_data"):
        train_hf.parse_args(["--on_bad_data", "ignore", "--output_dir", str(tmp_path)])


def test_config_value_of_wrong_type_names_the_field(tmp_path):
    from configuration_whisper_llada import WhisperLladaConfig

    config = tmp_path / "run.yaml"
    for text, message in [("stack_factor: five\n", "`stack_factor` must be an integer, got 'five'"),
                          ("projector_hidden_sizes: [512, big]\n", "`projector_hidden_sizes` must be a list of integers"),
                          ("learning_rate: fast\n", "`learning_rate` must be a number, got 'fast'")]:
        config.write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{config}: {message}")):
            train_hf.parse_args([str(config), "--output_dir", str(tmp_path / "out")])
    config.write_text("stack_factor: 4\nprojector_hidden_sizes: 32\nlearning_rate: 1e-3\n")  # fine: numbers
    model_args, _, training_args = train_hf.parse_args([str(config), "--output_dir", str(tmp_path / "out")])
    assert model_args.stack_factor == 4 and model_args.projector_hidden_sizes == [32]
    assert training_args.learning_rate == pytest.approx(1e-3)
    # the Python API: the config itself names the field and the expected type
    with pytest.raises(ValueError, match=re.escape("`stack_factor` must be an integer, got 'five'")):
        WhisperLladaConfig(stack_factor="five")
    with pytest.raises(ValueError, match=re.escape("`projector_hidden_sizes` must be a list of integers")):
        WhisperLladaConfig(projector_hidden_sizes=[512, "big"])


# ----------------------------------------------------------------------------------------------------------------------
# never overwrite a model; readable, atomic final model
# ----------------------------------------------------------------------------------------------------------------------


def test_demo_recipes_never_write_the_bundled_model(tmp_path):
    for config in sorted((ROOT / "configs" / "demo").glob("*.yaml")):
        _, _, training_args = train_hf.parse_args([str(config)])
        final = (ROOT / (training_args.final_model_dir or os.path.join(training_args.output_dir, "final"))).resolve()
        assert not final.is_relative_to((ROOT / "demo").resolve()), (config.name, final)
        assert final.is_relative_to((ROOT / "runs").resolve()), (config.name, final)


def test_existing_model_is_refused_before_training(tmp_path):
    # the user's command from issue 8: the demo recipe with another --output_dir, aimed at a directory holding a model
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    (model_dir / "model.safetensors").write_bytes(b"precious")
    command = [sys.executable, str(ROOT / "train_hf.py"), str(ROOT / "configs" / "demo" / "whisper-tiny_llada-tiny.yaml"),
               "--train_data", str(tmp_path / "train.jsonl"), "--max_steps", "2", "--output_dir", str(tmp_path / "x"),
               "--final_model_dir", str(model_dir)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert f"--final_model_dir {model_dir} already holds a model" in done.stderr, done.stderr[-3000:]
    assert "--overwrite_final_model true" in done.stderr
    assert (model_dir / "model.safetensors").read_bytes() == b"precious"
    assert sorted(p.name for p in model_dir.iterdir()) == ["config.json", "model.safetensors"]
    assert not (tmp_path / "x").exists()  # refused before anything was written (or loaded)


def test_final_model_under_output_dir_readable_and_never_overwritten(assets, tmp_path):
    out = tmp_path / "run"
    args = base_args(assets, out, "--max_steps", "1")
    old_umask = os.umask(0o022)
    try:
        train_hf.main(args)
    finally:
        os.umask(old_umask)
    final = out / "final"  # the default --final_model_dir
    assert (final / "model.safetensors").is_file() and (final / "processor_config.json").is_file()
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temporary directory left behind
    for directory in (final, out):
        modes = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir() if p.is_file()}
        assert all(mode & 0o044 == 0o044 for mode in modes.values()), modes  # group/other-readable (umask 022)
    assert final.stat().st_mode & 0o055 == 0o055

    # the same command again refuses (output_dir and final hold models), before loading anything
    (final / "NOTES.txt").write_text("kept")
    with pytest.raises(train_hf.ExistingModelError, match=re.escape(f"{final} already holds a model")):
        train_hf.main(args)
    with pytest.raises(train_hf.ExistingModelError, match="--overwrite_final_model true"):
        train_hf.main(base_args(assets, tmp_path / "fresh", "--max_steps", "1", "--final_model_dir", str(final)))
    assert not (tmp_path / "fresh").exists()

    # asked to: replaced in place (a different seed gives different weights); other files stay
    before = load_file(final / "model.safetensors")
    args[args.index("--seed") + 1] = "1"
    train_hf.main(args + ["--overwrite_final_model", "true"])
    after = load_file(final / "model.safetensors")
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    assert (final / "NOTES.txt").read_text() == "kept"
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------------------------------------------
# end to end
# ----------------------------------------------------------------------------------------------------------------------


def test_tiny_run_saves_only_trainable_weights_and_reloads(assets, tmp_path):
    out = tmp_path / "run"
    result = train_hf.main(base_args(assets, out, "--max_steps", "3", "--save_strategy", "steps", "--save_steps", "3"))
    model = result["model"]
    assert model.config.checkpoint_weights == "trainable"
    assert len(logged_losses(result["trainer"])) == 3
    for directory in (out, out / "checkpoint-3"):
        keys = set(load_file(directory / "model.safetensors"))
        assert keys and all(k.startswith("projector.") for k in keys), sorted(keys)[:5]
        assert keys == {n for n, p in model.named_parameters() if p.requires_grad}
        assert (directory / "processor_config.json").is_file() and (directory / "tokenizer.json").is_file()
    assert (out / "checkpoint-3" / "optimizer.pt").is_file()

    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    from processing_whisper_llada import WhisperLladaProcessor

    processor = WhisperLladaProcessor.from_pretrained(out)
    assert processor.mask_token_id == MASK_ID and processor.eos_token_id == EOS_ID


def test_auxiliary_ctc_loss_is_logged_next_to_the_total(assets, tmp_path):
    """With --ctc_weight, training and evaluation logs carry the CTC part (`ctc_loss`, `eval_ctc_loss`) of the loss;
    with --ctc_only the loss is the CTC loss alone."""
    joint = train_hf.main(base_args(assets, tmp_path / "joint", "--max_steps", "2", "--ctc_weight", "0.5",
                                    "--ctc_blank_id", "59", "--eval_data", assets["manifest"], "--eval_strategy", "steps",
                                    "--eval_steps", "2", "--per_device_eval_batch_size", "4"))
    history = joint["trainer"].state.log_history
    train_logs = [e for e in history if "loss" in e]
    eval_logs = [e for e in history if "eval_loss" in e]
    assert len(train_logs) == 2 and all(0 < e["ctc_loss"] and np.isfinite(e["ctc_loss"]) for e in train_logs)
    assert eval_logs and all(0 < e["eval_ctc_loss"] < e["eval_loss"] / 0.5 for e in eval_logs)  # step 2 + final
    assert all("ctc_loss" not in e for e in eval_logs) and all("eval_ctc_loss" not in e for e in train_logs)

    alone = train_hf.main(base_args(assets, tmp_path / "alone", "--max_steps", "2", "--ctc_weight", "1.0",
                                    "--ctc_blank_id", "59", "--ctc_only", "true"))
    logs = [e for e in alone["trainer"].state.log_history if "loss" in e]
    assert logs and all(e["loss"] == pytest.approx(e["ctc_loss"], rel=1e-3) for e in logs)

    plain = train_hf.main(base_args(assets, tmp_path / "plain", "--max_steps", "1"))
    assert all("ctc_loss" not in e for e in plain["trainer"].state.log_history)


def test_ctc_vocab_train_restricts_the_ctc_to_the_training_tokens(assets, tmp_path):
    """--ctc_vocab train: the CTC's classes are the tokens of the training transcripts (tokenized as the labels are)
    plus the blank, saved in config.ctc_token_ids and kept when training goes on from the saved model."""
    import json

    import whisper_llada_data as wld
    from processing_whisper_llada import WhisperLladaProcessor

    out = tmp_path / "ctc"
    result = train_hf.main(base_args(assets, out, "--max_steps", "1", "--ctc_weight", "1.0", "--ctc_blank_id", "59",
                                     "--ctc_vocab", "train"))
    processor = WhisperLladaProcessor.from_pretrained(out / "final")
    expected = {59}
    for record in wld.read_manifest(assets["manifest"]):
        expected.update(processor.tokenizer(wld.normalize_transcript(record["text"]),
                                            add_special_tokens=False)["input_ids"])
    assert result["model"].config.ctc_token_ids == sorted(expected)
    assert json.loads((out / "final" / "config.json").read_text())["ctc_token_ids"] == sorted(expected)
    # a masked-diffusion model with a CTC head records D as its default, and the training answers' rate
    generation = json.loads((out / "final" / "generation_config.json").read_text())
    assert generation["decoding"] == "D" and generation["anchored"] and generation["tokens_per_second"] > 0
    again = train_hf.main(base_args(assets, tmp_path / "again", "--max_steps", "1", "--ctc_weight", "1.0",
                                    "--ctc_blank_id", "59", "--model_name_or_path", str(out / "final")))
    assert again["model"].config.ctc_token_ids == sorted(expected)
    with pytest.raises(ValueError, match="--ctc_vocab train needs --ctc_weight"):
        train_hf.main(base_args(assets, tmp_path / "bad", "--max_steps", "1", "--ctc_vocab", "train"))
    with pytest.raises(ValueError, match="'all', 'train' or 'units:N'"):
        train_hf.main(base_args(assets, tmp_path / "bad2", "--max_steps", "1", "--ctc_weight", "1.0",
                                "--ctc_blank_id", "59", "--ctc_vocab", "some"))


def test_ctc_vocab_units_spells_the_answers_in_the_chosen_units(assets, tmp_path):
    """--ctc_vocab units:N: N decoder tokens that spell any word become the CTC's classes and the units the labels
    are spelled in; the processor and the config keep them."""
    import json

    out = tmp_path / "units"
    result = train_hf.main(base_args(assets, out, "--max_steps", "1", "--ctc_weight", "1.0", "--ctc_blank_id", "59",
                                     "--ctc_vocab", "units:80", "--ctc_only", "true"))
    config = result["model"].config
    units = json.loads((out / "final" / "processor_config.json").read_text())["ctc_units"]
    assert 0 < len(units) <= 80 and config.answer_units  # at most N: fewer when the training text needs fewer and config.ctc_token_ids == sorted(units + [59])
    labels = result["processor"](text=["a b"])["labels"][0].tolist()
    assert all(i in units or i == result["processor"].eos_token_id for i in labels)


def test_training_mask_flags_set_the_saved_config(assets, tmp_path):
    """--mask_time_prob / --mask_feature_prob (+ lengths) train with SpecAugment on the encoder frames, --block_mask_prob
    (+ length) with block-decoding masks; all are saved in the model's config (training only: decoding ignores them);
    an out-of-range value is refused before training."""
    result = train_hf.main(base_args(assets, tmp_path / "aug", "--max_steps", "1", "--mask_time_prob", "0.3",
                                     "--mask_time_length", "5", "--mask_feature_prob", "0.1",
                                     "--block_mask_prob", "0.5", "--block_mask_length", "4"))
    assert np.isfinite(result["metrics"]["train_loss"])
    recipe = json.loads((tmp_path / "aug" / "final" / "config.json").read_text())["training"]
    assert (recipe["mask_time_prob"], recipe["mask_time_length"], recipe["mask_feature_prob"],
            recipe["mask_feature_length"], recipe["block_mask_prob"], recipe["block_mask_length"]) == (
        0.3, 5, 0.1, 10, 0.5, 4)
    with pytest.raises(ValueError, match="mask_time_prob` must be between 0.0 and 1.0"):
        train_hf.main(base_args(assets, tmp_path / "bad", "--max_steps", "1", "--mask_time_prob", "2"))
    assert not (tmp_path / "bad" / "final").exists()


def test_time_budget_stops_and_still_saves(assets, tmp_path):
    # also the reference recipe's settings: bf16 base models, bf16 autocast, activation (gradient) checkpointing
    out = tmp_path / "run"
    result = train_hf.main(base_args(assets, out, "--max_steps", "50", "--max_train_minutes", "0.0001",
                                     "--model_dtype", "bfloat16", "--bf16", "true", "--activation_checkpointing", "true"))
    model = result["model"]
    assert result["trainer"].state.global_step == 1
    assert np.isfinite(result["metrics"]["train_loss"])
    assert model.decoder.dtype == torch.bfloat16 and model.projector.mlp[0].weight.dtype == torch.float32
    assert (out / "model.safetensors").is_file()


def test_stop_at_step_keeps_the_schedule_and_resume_is_quiet(assets, tmp_path, caplog):
    # --stop_at_step gives a run another run's budget: the first N steps of the same max_steps schedule
    common = ["--max_steps", "6", "--lr_scheduler_type", "linear", "--per_device_train_batch_size", "2"]
    full = train_hf.main(base_args(assets, tmp_path / "full", *common))
    out = tmp_path / "stopped"
    stopped = train_hf.main(base_args(assets, out, *common, "--stop_at_step", "3", "--save_strategy", "steps",
                                      "--save_steps", "2"))
    state = stopped["trainer"].state
    assert state.global_step == 3 and state.max_steps == 6
    lrs = lambda trainer: {e["step"]: e["learning_rate"] for e in trainer.state.log_history if "learning_rate" in e}
    assert lrs(stopped["trainer"]) == {step: lr for step, lr in lrs(full["trainer"]).items() if step <= 3}
    assert (out / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="--stop_at_step must be a positive"):
        train_hf.main(base_args(assets, tmp_path / "bad", "--max_steps", "2", "--stop_at_step", "0"))

    # resuming a checkpoint that holds only the trainable weights: the frozen base weights are not "missing"
    transformers.logging.enable_propagation()
    try:
        with caplog.at_level(logging.WARNING):
            train_hf.main(base_args(assets, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                                    str(out / "checkpoint-2")))
    finally:
        transformers.logging.disable_propagation()
    assert "missing keys" not in caplog.text


def test_lora_saved_and_reloaded_gives_equal_outputs(assets, tmp_path):
    out = tmp_path / "lora"
    result = train_hf.main(base_args(assets, out, "--max_steps", "2", "--lora_r", "4", "--lora_alpha", "8",
                                     "--learning_rate", "5e-2"))
    model = result["model"].eval()
    keys = set(load_file(out / "model.safetensors"))
    assert any(".lora_A." in k for k in keys) and any(".lora_B." in k for k in keys)
    assert all(k.startswith("projector.") or ".lora_" in k for k in keys)
    lora_targets = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in keys if ".lora_" in k}
    assert lora_targets == {"q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out"}
    assert json.loads((out / "config.json").read_text())["lora"]["r"] == 4

    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(out).eval()  # adapters rebuilt, no peft needed
    assert {n for n, _ in reloaded.named_parameters() if ".lora_" in n} == {k for k in keys if ".lora_" in k}
    torch.manual_seed(1)
    features = torch.randn(2, 80, 3000)
    mask = torch.ones(2, 3000, dtype=torch.long)
    labels = torch.tensor([[1, 2, 3, EOS_ID], [4, 5, EOS_ID, EOS_ID]])
    with torch.no_grad():
        torch.manual_seed(2)
        expected = model(input_features=features, attention_mask=mask, labels=labels)
        torch.manual_seed(2)
        actual = reloaded(input_features=features, attention_mask=mask, labels=labels)
    # LoRA changed the decoder (lr 5e-2), and the reload reproduces it
    base = WhisperLladaForConditionalGeneration.from_pretrained(out).eval()
    for module in base.decoder.modules():
        if hasattr(module, "lora_B"):
            module.lora_B["default"].weight.data.zero_()  # the same model without its adapters' update
    with torch.no_grad():
        torch.manual_seed(2)
        unmerged = base(input_features=features, attention_mask=mask, labels=labels)
    assert not torch.allclose(unmerged.logits, expected.logits, atol=1e-4)
    torch.testing.assert_close(actual.logits, expected.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-4, atol=1e-5)


def test_encoder_cache_reused_and_loss_unchanged(assets, tmp_path, monkeypatch):
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    calls = {"n": 0}
    original = WhisperEncoder.forward

    def counting_forward(self, *args, **kwargs):
        calls["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(WhisperEncoder, "forward", counting_forward)
    common = ["--num_train_epochs", "2", "--per_device_train_batch_size", "4"]  # 8 utterances: 2 steps per epoch
    cached = train_hf.main(base_args(assets, tmp_path / "cached", *common, "--encoder_cache_dir",
                                     str(tmp_path / "cache")))
    cache = cached["cache"]
    assert cached["trainer"].state.global_step == 4
    assert cache.misses == 8 and cache.hits == 8  # epoch 1 computes every utterance once, epoch 2 reads them
    assert calls["n"] == cache.encoder_calls == 2  # the encoder ran only for the first epoch's two batches
    assert len(list(cache.directory.glob("*.pt"))) == 8

    calls["n"] = 0
    plain = train_hf.main(base_args(assets, tmp_path / "plain", *common))
    assert calls["n"] == 4  # without the cache the encoder runs in every step
    cached_losses, plain_losses = logged_losses(cached["trainer"]), logged_losses(plain["trainer"])
    assert cached_losses.keys() == plain_losses.keys() == {1, 2, 3, 4}
    for step in plain_losses:
        assert cached_losses[step] == pytest.approx(plain_losses[step], rel=1e-4), step

    # a later run with the same encoder reads everything from the cache
    calls["n"] = 0
    again = train_hf.main(base_args(assets, tmp_path / "again", "--max_steps", "2", "--encoder_cache_dir",
                                    str(tmp_path / "cache")))
    assert again["cache"].misses == 0 and calls["n"] == 0


def test_resume_from_checkpoint_continues_exactly(assets, tmp_path):
    common = ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", "--per_device_train_batch_size", "2",
              "--train_sampling_strategy", "group_by_length", "--train_decoder", "true"]
    full = train_hf.main(base_args(assets, tmp_path / "full", *common))
    full_losses = logged_losses(full["trainer"])
    resumed = train_hf.main(base_args(assets, tmp_path / "resumed", *common, "--resume_from_checkpoint",
                                      str(tmp_path / "full" / "checkpoint-2")))
    resumed_losses = logged_losses(resumed["trainer"])
    assert set(resumed_losses) >= {3, 4}
    for step in (3, 4):
        assert resumed_losses[step] == pytest.approx(full_losses[step], rel=1e-6, abs=1e-7), step
    for name, tensor in full["model"].state_dict().items():
        torch.testing.assert_close(resumed["model"].state_dict()[name], tensor, rtol=1e-6, atol=1e-7)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_agree(assets, tmp_path):
    script = tmp_path / "ddp_run.py"
    script.write_text(
        "import hashlib, os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import torch, train_hf\n"
        "result = train_hf.main(sys.argv[1:])\n"
        "vector = torch.cat([p.detach().reshape(-1) for p in result['model'].projector.parameters()])\n"
        "line = f\"{result['trainer'].args.world_size} {result['trainer'].state.global_step} \""
        " + hashlib.sha1(vector.numpy().tobytes()).hexdigest()\n"
        "open(os.path.join(os.environ['CHECK_DIR'], f\"rank{os.environ['RANK']}.txt\"), 'w').write(line)\n"
    )
    env = {**os.environ, "CHECK_DIR": str(tmp_path), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(script),
               *base_args(assets, tmp_path / "ddp", "--max_steps", "3", "--per_device_train_batch_size", "2",
                          "--ddp_backend", "gloo")]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [(tmp_path / f"rank{r}.txt").read_text().split() for r in (0, 1)]
    assert lines[0][:2] == ["2", "3"]  # world size 2, three optimizer steps
    assert lines[0] == lines[1]  # both ranks hold identical projector weights
    assert (tmp_path / "ddp" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------------------------
# bad data
# ----------------------------------------------------------------------------------------------------------------------


def bad_manifest(assets, tmp_path) -> tuple[Path, str]:
    entries = [json.loads(line) for line in Path(assets["manifest"]).read_text().splitlines()]
    missing = str(tmp_path / "missing.wav")
    entries.append({"audio_filepath": missing, "duration": 1.0, "text": "A CAT"})
    entries.append({**entries[0], "key": "empty", "text": "  "})
    return write_manifest(tmp_path / "bad.jsonl", entries), missing


def test_bad_data_skipped_and_counted(assets, tmp_path, capsys):
    manifest, _ = bad_manifest(assets, tmp_path)
    args = base_args(assets, tmp_path / "out", "--max_steps", "2")
    args[args.index("--train_data") + 1] = str(manifest)
    result = train_hf.main(args)
    assert len(result["trainer"].train_dataset) == 8
    assert result["metrics"]["skipped_records"] == {wld.REASON_MISSING_AUDIO: 1, wld.REASON_EMPTY_TEXT: 1}
    assert "train (total): skipped 2 record(s) (empty_text=1, missing_audio=1)" in capsys.readouterr().out


def test_unreadable_audio_is_counted_once_over_several_epochs(assets, tmp_path, caplog):
    """A file found unreadable when its batch is loaded is skipped, named and counted once, although every epoch
    reads it again (3 bad files over 4 epochs: 'skipped 3 records', not 4 or 12)."""
    entries = [json.loads(line) for line in Path(assets["manifest"]).read_text().splitlines()]
    for index in range(3):
        corrupt = tmp_path / f"corrupt{index}.wav"
        corrupt.write_bytes(b"RIFF" + bytes(40))  # passes the header check of the manifest, fails to decode
        entries.append({"audio_filepath": str(corrupt), "duration": 1.0, "text": "A CAT", "key": f"corrupt{index}"})
    manifest = write_manifest(tmp_path / "corrupt.jsonl", entries)
    args = base_args(assets, tmp_path / "out", "--num_train_epochs", "4", "--max_steps", "-1")
    args[args.index("--train_data") + 1] = str(manifest)
    with caplog.at_level(logging.WARNING, logger="train_hf"):
        result = train_hf.main(args)
    loaded = result["trainer"].state.epoch >= 4
    assert loaded and sum(result["metrics"]["skipped_records"].values()) == 3, result["metrics"]["skipped_records"]
    named = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(named) == 3, named


def test_local_path_that_does_not_exist_is_one_clear_error(assets, tmp_path):
    """A recipe naming a local folder a user's clone lacks (e.g. ../shared/models/whisper-tiny.en) gets one line naming
    it, not a Hub error about repo ids."""
    args = base_args(assets, tmp_path / "out", "--max_steps", "1")
    args[args.index("--encoder_name_or_path") + 1] = "../nowhere/models/whisper-tiny.en"
    with pytest.raises(FileNotFoundError, match=r"encoder \.\./nowhere/models/whisper-tiny\.en does not exist \(a local "
                                                r"path; a Hub id looks like owner/name\)"):
        train_hf.main(args)
    script = subprocess.run([sys.executable, str(ROOT / "train_hf.py"), *args], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert script.returncode != 0 and "Traceback" not in script.stderr
    assert script.stderr.strip().splitlines()[-1].startswith("train_hf.py: error: encoder ../nowhere/models/")


def test_push_to_hub_without_network_is_one_clear_error(assets, tmp_path, monkeypatch):
    import socket

    def no_network(self, address, *args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ConnectionError, match=r"--push_to_hub: the Hugging Face Hub cannot be reached") as caught:
        train_hf.main(base_args(assets, tmp_path / "out", "--max_steps", "1", "--push_to_hub", "true",
                                "--hub_model_id", "someone/tiny"))
    assert "\n" not in str(caught.value) and caught.value.__cause__ is None and caught.value.__suppress_context__
    assert not (tmp_path / "out" / "final").exists()  # it fails before training


def test_bad_data_error_names_the_file(assets, tmp_path):
    manifest, missing = bad_manifest(assets, tmp_path)
    args = base_args(assets, tmp_path / "out", "--max_steps", "2", "--on_bad_data", "error")
    args[args.index("--train_data") + 1] = str(manifest)
    with pytest.raises(wld.BadRecordError, match=missing):
        train_hf.main(args)


def test_clip_longer_than_its_manifest_says_is_skipped_and_named(assets, tmp_path, caplog):
    # the manifest says 1 s, the file lasts 45 s: found only when the audio is loaded
    entries = [json.loads(line) for line in Path(assets["manifest"]).read_text().splitlines()][:3]
    long_clip = tmp_path / "long.wav"
    sf.write(long_clip, np.full(45 * 16000, 0.01, dtype=np.float32), 16000)
    entries.append({"audio_filepath": str(long_clip), "duration": 1.0, "text": "A CAT", "key": "long"})
    manifest = write_manifest(tmp_path / "understated.jsonl", entries)
    args = base_args(assets, tmp_path / "out", "--max_steps", "1")  # one batch of 4: every record is loaded
    args[args.index("--train_data") + 1] = str(manifest)
    with caplog.at_level(logging.WARNING, logger="train_hf"):
        result = train_hf.main(args)
    assert result["metrics"]["skipped_records"] == {wld.REASON_AUDIO_TOO_LONG: 1}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(long_clip) in r.getMessage()]
    assert len(warnings) == 1 and "'long'" in warnings[0] and "45.00 s" in warnings[0], warnings

    args = base_args(assets, tmp_path / "out_error", "--max_steps", "1", "--on_bad_data", "error")
    args[args.index("--train_data") + 1] = str(manifest)
    with pytest.raises(wld.BadRecordError, match=re.escape(str(long_clip)) + r".*audio lasts 45\.00 s"):
        train_hf.main(args)


# ----------------------------------------------------------------------------------------------------------------------
# the demo recipe (real Whisper tiny.en + LibriSpeech from ../shared)
# ----------------------------------------------------------------------------------------------------------------------


@needs_shared(WHISPER_TINY)
@needs_shared(LIBRISPEECH)
def test_demo_config_builds_and_trains_a_step(tmp_path):
    config = ROOT / "configs" / "demo" / "whisper-tiny_llada-tiny.yaml"
    model_args, _, _ = train_hf.parse_args([str(config), "--output_dir", str(tmp_path)])
    model_args.encoder_name_or_path = str(WHISPER_TINY)
    model, processor = train_hf.prepare_model(model_args)
    assert len(processor.tokenizer) == 50368 == model.config.decoder_config.vocab_size
    assert model.config.checkpoint_weights == "full" and model.config.decoder_config.weight_tying
    assert model.config.mask_token_id == processor.mask_token_id
    assert model.encoder.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not any(p.requires_grad for p in model.encoder.parameters())
    size_fp16 = sum(p.numel() for p in model.state_dict().values()) * 2
    assert size_fp16 < 50e6

    manifest = tmp_path / "two.jsonl"
    records = wld.scan_librispeech(LIBRISPEECH)
    records = [r for r in records if wld.speaker_of(r["key"]) not in {"1737", "32", "7312"}]
    records = sorted(records, key=lambda r: r["duration"])[:2]
    prep.write_manifest(records, manifest)
    result = train_hf.main([str(config), "--encoder_name_or_path", str(WHISPER_TINY), "--train_data", str(manifest),
                            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--per_device_train_batch_size",
                            "2", "--encoder_cache_dir", "", "--final_model_dir", str(tmp_path / "final"),
                            "--max_train_minutes", "10", "--disable_tqdm", "true"])
    assert np.isfinite(result["metrics"]["train_loss"])
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "final", dtype=torch.float32)
    assert reloaded.dtype == torch.float32
    assert os.path.getsize(tmp_path / "final" / "model.safetensors") < 50e6
