"""Nothing lost, nothing cut silently, one clear line for a user's mistake: failed writes raise, saved files are
readable, output folders and command lines are checked before anything loads, a stock ASR pipeline over a loaded model
is refused naming the fix, and Whisper users' habits are accepted or named."""

import logging
import os
import stat
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import needs_whisper_tokenizer, ROOT, make_pipeline, make_processor, make_tiny_asr_model, \
    synthetic_speech, tiny_whisper_llada


def test_a_failed_write_leaves_the_old_file_no_temp_file_and_raises(tmp_path, monkeypatch):
    from whisper_llada_io import write_atomic

    target = tmp_path / "results.json"
    target.write_text("old")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new")
    assert target.read_text() == "old" and len(list(tmp_path.iterdir())) == 1


def test_save_pretrained_writes_files_readable_as_the_umask_allows(tmp_path):
    model = tiny_whisper_llada()
    old = os.umask(0o022)
    try:
        model.save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "model").iterdir()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes


def test_a_float16_checkpoint_loaded_as_float32_says_its_save_doubles(tmp_path, caplog):
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    tiny_whisper_llada().half().save_pretrained(tmp_path / "fp16")
    loaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "fp16")
    assert loaded.dtype == torch.float32
    with caplog.at_level(logging.WARNING):
        loaded.save_pretrained(tmp_path / "again")
    assert "stored in float16 and loaded as torch.float32" in caplog.text and "model.half()" in caplog.text


@pytest.mark.parametrize("make_target, problem", [
    (lambda tmp: tmp / "afile", "exists and is not a directory"),
    (lambda tmp: tmp / "afile" / "below", "cannot be created"),
    (lambda tmp: tmp / "readonly", "is not writable"),
])
def test_eval_output_dir_problems_are_one_error_line_before_the_model_loads(tmp_path, make_target, problem):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "readonly").mkdir()
    os.chmod(tmp_path / "readonly", 0o555)
    if os.geteuid() == 0 and problem == "is not writable":
        pytest.skip("root writes into read-only folders")
    done = subprocess.run([sys.executable, str(ROOT / "eval_hf.py"), "--output_dir", str(make_target(tmp_path)),
                           "--model", str(tmp_path / "no-model-needed")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: --output_dir {make_target(tmp_path)}: {problem}")


def test_eval_output_dir_not_writable_is_refused(tmp_path, monkeypatch):
    import eval_hf

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "write_text", refuse)
    assert eval_hf.output_dir_problem(tmp_path / "out").startswith("is not writable (Permission denied)")


@pytest.mark.parametrize("config_text, argv, message", [
    ("lerning_rate: 1\n", [], "unknown key(s) ['lerning_rate'] (did you mean 'learning_rate'?)"),
    ("learning_rate: [1,\n", [], "not valid YAML (line 2, column 1)"),
    ("learning_rate: abc\n", [], "`learning_rate` must be a number, got 'abc'"),
    (None, ["--lerning_rate", "1"], "unknown flag --lerning_rate (did you mean 'learning_rate'?)"),
    (None, ["--learning_rate", "abc"], "invalid float value: 'abc'"),
    (None, ["--train_data", "x.jsonl", "--resume_from_checkpoint", "true"], "holds no checkpoint-N folder"),
    (None, ["--train_data", "x.jsonl", "--encoder_name_or_path", "someone/not-reachable-offline"],
     "not a local folder, and the Hugging Face Hub cannot be reached"),
])
def test_train_hf_command_line_mistakes_are_one_line_before_loading(tmp_path, config_text, argv, message):
    args = []
    if config_text is not None:
        (tmp_path / "recipe.yaml").write_text(config_text)
        args.append(str(tmp_path / "recipe.yaml"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "train_hf.py"), *args, "--output_dir", str(tmp_path / "out"),
                           *argv], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and "Traceback" not in done.stderr and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("train_hf.py: error: ") and message in lines[0]


@pytest.fixture(scope="module")
def tiny_asr():
    processor = make_processor()  # skips without Whisper's tokenizer
    return make_tiny_asr_model(processor), processor


@needs_whisper_tokenizer
def test_a_stock_asr_pipeline_over_a_loaded_model_is_refused_naming_pipeline_class(tiny_asr):
    from transformers import pipeline

    model, processor = tiny_asr
    with pytest.raises(TypeError, match=r"pipeline_class=model\.asr_pipeline_class"):
        pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                 feature_extractor=processor.feature_extractor)
    asr = pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                   feature_extractor=processor.feature_extractor, pipeline_class=model.asr_pipeline_class)
    assert type(asr).__name__ == "WhisperLladaASRPipeline" and "text" in asr(synthetic_speech(1.0))


@needs_whisper_tokenizer
def test_whisper_habits_are_accepted_or_named(tiny_asr):
    model, processor = tiny_asr
    asr = make_pipeline(model, processor)
    audio = synthetic_speech(2.0)
    expected = asr(audio)["text"]
    assert asr(audio, language="en")["text"] == expected  # English transcription is what the model does
    assert asr(audio, generate_kwargs={"language": "english", "task": "transcribe"})["text"] == expected
    with pytest.raises(ValueError, match="`language='fr'` is not supported by whisper-llada: the model transcribes "
                                         "English only"):
        asr(audio, generate_kwargs={"language": "fr"})
    with pytest.raises(ValueError, match="`task='translate'`"):
        asr(audio, task="translate")
    with pytest.raises(TypeError, match=r"max_new_tokens: a masked-diffusion decoder's answer length is gen_length"):
        asr(audio, generate_kwargs={"max_new_tokens": 64})
    with pytest.raises(TypeError, match="num_beams"):
        asr(audio, generate_kwargs={"beams": 2})  # the list of valid names includes num_beams
    assert asr(audio, chunk_length_s=0)["text"] == expected  # 0: no chunking, as transformers reads it


def test_unscaled_float_pcm_is_warned_about_and_unsigned_pcm_is_read(caplog):
    from processing_whisper_llada import load_audio

    wave = synthetic_speech(0.5)
    with caplog.at_level(logging.WARNING):
        load_audio({"array": wave * 32767, "sampling_rate": 16000})
    assert "looks like unscaled 16-bit PCM" in caplog.text
    unsigned = np.round(wave * 127 + 128).astype(np.uint8)
    np.testing.assert_allclose(load_audio({"array": unsigned, "sampling_rate": 16000}), wave, atol=0.01)


def test_train_hf_help_lists_what_the_recipes_use():
    out = subprocess.run([sys.executable, str(ROOT / "train_hf.py"), "--help"], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "trainable+encoder" in text  # the demo's checkpoint_weights
    assert "Resume an interrupted run: true (or last)" in text  # this package's words, not transformers'


def test_lab_tools_live_in_tools_and_the_data_library_imports_no_command():
    import ast

    assert not [p.name for p in (ROOT / "demo").glob("*.py") if p.name != "app.py"]  # demo/: model, clips, app
    assert {"diagnostics.py", "swap_projector.py", "convert_ar_to_diffusion.py", "synthesize_speech.py"} <= {
        p.name for p in (ROOT / "tools").glob("*.py")}
    tree = ast.parse((ROOT / "whisper_llada_data.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert "whisper_llada_data_prep" not in imported  # the commands import the library, not the other way round


def test_recipe_headers_do_not_claim_the_bundled_model_unless_they_made_it():
    for recipe in sorted((ROOT / "configs").rglob("*.yaml")):
        if "shipped demo/model" in recipe.read_text() or "bundled demo/model" in recipe.read_text():
            assert recipe.name == "whisper-tiny_smollm2-mixture-diffusion.yaml", recipe


@pytest.mark.parametrize("doc", ["BENCHMARKS.md", "demo/README.md"])
def test_long_docs_lead_with_the_current_model_and_keep_dated_runs_under_history_newest_first(doc):
    import re

    text = (ROOT / doc).read_text()
    assert text.count("\n# History") == 1, "one History heading"
    current, history = text.split("\n# History", 1)
    assert "2026-11" not in "".join(re.findall(r"^## .*$", current, flags=re.M))  # no old run leads
    dates = [re.search(r"\d{4}-\d{2}-\d{2}", h).group(0) for h in re.findall(r"^## .*$", history, flags=re.M)
             if re.search(r"\d{4}-\d{2}-\d{2}", h)]
    assert dates and dates == sorted(dates, reverse=True)
