"""eval_hf.py: WER normalisation, decodings resolved per model (global approximations, D and its CTC head), split
naming, an end-to-end run on a tiny random model, resume, long audio, and the demo defaults. The reliability cases (run signatures, bad files, Ctrl-C, a chaos run) are in
test_eval_reliability.py."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import (needs_whisper_tokenizer, CLIPS, DEMO_AUDIO, ROOT, count_generate, decoder_config_for, make_processor,
                      read_jsonl, run_eval, tiny_config, tiny_whisper_llada)

import eval_hf
from text_normalization import normalize_text, wer_percent
from whisper_llada_eval import DecodingRequest, EvalError, resolve_decodings
from whisper_llada_eval_inputs import LoadedModel, parse_splits, safe_name

# ----------------------------------------------------------------------------------------------------------------------
# WER and names
# ----------------------------------------------------------------------------------------------------------------------


def test_wer_uses_whisper_english_normaliser():
    assert normalize_text("Hello, World!") == "hello world"
    assert wer_percent(["Hello, World!"], ["hello world"]) == 0.0
    # spelling map (assets/normalizer.json) and contractions are normalised too
    assert wer_percent(["THE COLOUR ISN'T RED"], ["the color is not red"]) == 0.0
    assert wer_percent(["a b c d"], ["a x c"]) == pytest.approx(50.0)
    # corpus level: errors / reference words over all pairs; empty references are left out
    assert wer_percent(["a b", "c d e f", "?!"], ["a b", "c d", "anything"]) == pytest.approx(100 * 2 / 6)


def _llada(**config) -> LoadedModel:
    """A tiny random LLaDA-decoder model (no audio needed to resolve decodings) as eval loads models."""
    return LoadedModel("tiny", "tiny", tiny_whisper_llada(**config), None, {}, None)


def test_decodings_resolved_per_model_with_the_global_approximations():
    loaded = _llada()
    names = lambda request: [config.name for _, config in resolve_decodings(loaded, request)]  # noqa: E731
    assert names(DecodingRequest(["A", "B", "AR"])) == ["A", "B"]  # AR: for causal-decoder models only
    assert names(DecodingRequest(["B"], threshold=0.9, kv_cache="dual")) == ["B+dual+thr0.9"]
    assert names(DecodingRequest(["C,kv_cache=prefix,early_stop=1"], threshold=0.5)) == ["C+prefix+thr0.5+es"]
    # a setting in the spec wins over the global flag
    ((_, config),) = resolve_decodings(loaded, DecodingRequest(["B,threshold=0.8"], threshold=0.5, early_stop=True))
    assert (config.threshold, config.early_stop, config.name) == (0.8, True, "B+thr0.8+es")
    ((_, config),) = resolve_decodings(loaded, DecodingRequest(["steps=16,gen_length=64,block_length=32"]))
    assert (config.steps, config.gen_length, config.block_length, config.decoding) == (16, 64, 32, None)
    assert sorted(config.name.split(",")) == ["block_length=32", "gen_length=64", "steps=16"]
    # values are checked against the model: one error naming the model and the decoding
    with pytest.raises(EvalError, match=r"model tiny, decoding B,gen_length=30,block_length=8: .*divisible"):
        resolve_decodings(loaded, DecodingRequest(["B,gen_length=30,block_length=8"]))
    with pytest.raises(EvalError, match="duplicate rows"):
        resolve_decodings(loaded, DecodingRequest(["B", "B,kv_cache=dual"], kv_cache="dual"))


def test_decodings_d_and_ctc_need_a_ctc_head():
    """D and CTC apply to masked-diffusion models with a CTC head: skipped silently among the defaults, an error when
    asked for by name; every default table of a model with one has the CTC row next to D."""
    for name in ("D", "CTC"):
        with pytest.raises(EvalError, match=rf"decoding {name}: .*has none \(config\.ctc_blank_id is None\)"):
            resolve_decodings(_llada(), DecodingRequest(["A", name]))
    defaults = DecodingRequest(eval_hf.DEFAULT_DECODINGS, defaults=True)
    assert [c.name for _, c in resolve_decodings(_llada(), defaults)] == ["A", "B", "C"]
    with_ctc = [c for _, c in resolve_decodings(_llada(ctc_blank_id=59), defaults)]
    assert [c.name for c in with_ctc] == ["CTC", "A", "B", "C", "D"] and with_ctc[-1].anchored
    assert with_ctc[0].ctc_reading


def test_command_line_decodings():
    args = eval_hf.parse_args(["--model", "m", "--data", "x.jsonl", "--steps", "16", "--gen_length", "64"])
    assert args.request.decodings.specs == ["steps=16,gen_length=64"] and not args.request.decodings.defaults
    args = eval_hf.parse_args(["--model", "m", "--data", "x.jsonl", "--decoding", "A", "AR,num_beams=2",
                               "--kv_cache", "dual", "--early_stop"])
    request = args.request.decodings
    assert (request.specs, request.kv_cache, request.early_stop, request.threshold) == (["A", "AR,num_beams=2"],
                                                                                       "dual", True, None)
    # syntax errors end the command line before anything is loaded
    for bad in ("steps=8,foo=1", "E", "AR,steps=4", "A A"):
        with pytest.raises(SystemExit):
            eval_hf.parse_args(["--model", "m", "--data", "x.jsonl", "--decoding", *bad.split()])


def test_split_names(tmp_path):
    (tmp_path / "test-clean").mkdir()
    splits = parse_splits([
        "hub:openslr/librispeech_asr:clean:validation", "hub:openslr/librispeech_asr:other:test",
        str(tmp_path / "test-clean") + "/", str(tmp_path / "my_set.jsonl"), "demo=" + str(tmp_path / "m.jsonl"),
        str(tmp_path / "my_set.jsonl"),
    ])
    assert [s.name for s in splits] == ["dev-clean", "test-other", "test-clean", "my_set", "demo", "my_set-2"]
    assert splits[4].spec == str(tmp_path / "m.jsonl")
    assert safe_name("steps=16,gen_length=128") == "steps_16_gen_length_128"


# ----------------------------------------------------------------------------------------------------------------------
# End to end on a tiny random model (conftest's `tiny_checkpoint`) and 3 bundled demo clips (conftest's `manifest`)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_run(tiny_checkpoint, manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_out")
    run_eval(tiny_checkpoint, manifest, out, "--decoding", "A", "B", "--batch_size", "2", "--plot")
    return out


@needs_whisper_tokenizer
def test_results_schema(full_run, tiny_checkpoint):
    report = json.loads((full_run / "results.json").read_text())
    assert report["model"] == str(tiny_checkpoint) and report["status"] == "complete" and not report["resumed"]
    assert report["device"].startswith("cpu") and report["dtype"] == "float32" and report["date"]
    assert report["skipped"] == {"three_clips": []} and report["long_audio"] == "chunk"
    rows = report["results"]
    assert [(r["decoding"], r["split"]) for r in rows] == [("A", "three_clips"), ("B", "three_clips")]
    for row in rows:
        assert row["num_utterances"] == 3 and row["timed_utterances"] == 3 and row["resumed_utterances"] == 0
        assert row["wer"] >= 0 and row["rtfx"] > 0
        assert row["audio_seconds"] == pytest.approx(4.21 + 12.27 + 12.665, abs=0.01)
        assert row["rtfx"] == pytest.approx(row["audio_seconds"] / row["processing_seconds"])
        assert row["batch_size"] == 2 and row["gen_length"] == 32 and row["block_length"] == 32
        assert row["chunked_utterances"] == row["truncated_utterances"] == row["skipped_utterances"] == 0
        # the run signature: what a resumed run must match
        signature = row["run_signature"]
        assert signature["model"]["path"] == str(Path(tiny_checkpoint).resolve()) and signature["model"]["fingerprint"]
        assert (signature["dtype"], signature["device_type"], signature["batch_size"]) == ("float32", "cpu", 2)
        assert signature["data"]["utterances"] == 3 and signature["decoding"]["steps"] == row["steps"]
        meta = json.loads((full_run / row["hypotheses_file"].replace(".jsonl", ".meta.json")).read_text())
        assert meta["run_signature"] == signature
    assert rows[0]["steps"] == 1 and rows[1]["steps"] == 8


@needs_whisper_tokenizer
def test_results_table_hypotheses_and_plot(full_run):
    table = (full_run / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")][-3:] == ["three_clips", "avg WER", "avg RTFx"]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| model" not in line]
    assert [row.split("|")[2].strip() for row in rows] == ["A", "B"]
    for decoding in ("A", "B"):
        lines = read_jsonl(full_run / f"hypotheses_{decoding}_three_clips.jsonl")
        assert sorted(line["key"] for line in lines) == sorted(CLIPS)
        assert all(isinstance(line["hypothesis"], str) and line["reference"] for line in lines)
    assert (full_run / "wer_vs_rtfx.png").stat().st_size > 0


@needs_whisper_tokenizer
def test_resume_decodes_only_missing_utterances(full_run, tiny_checkpoint, manifest, tmp_path, monkeypatch):
    finished = read_jsonl(full_run / "hypotheses_A_three_clips.jsonl")
    kept = [line for line in finished if line["key"] != CLIPS[1]]
    hyp_file = tmp_path / "hypotheses_A_three_clips.jsonl"
    # two finished utterances and the first bytes of a line cut short by a kill, with the run's signature
    hyp_file.write_text("".join(json.dumps(line) + "\n" for line in kept) + '{"key": "7312-92')
    shutil.copy(full_run / "hypotheses_A_three_clips.meta.json", tmp_path)
    calls = count_generate(monkeypatch)
    run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "A", "--batch_size", "2")
    assert calls == [1]
    lines = read_jsonl(hyp_file)
    assert [line["key"] for line in lines] == [kept[0]["key"], kept[1]["key"], CLIPS[1]]
    report = json.loads((tmp_path / "results.json").read_text())
    row = report["results"][0]
    assert report["resumed"] and row["resumed"]
    assert row["num_utterances"] == 3 and row["resumed_utterances"] == 2 and row["timed_utterances"] == 1
    # RTFx covers all utterances: the resumed ones with the timings of the batches they were decoded in
    assert row["audio_seconds"] == pytest.approx(4.21 + 12.27 + 12.665, abs=0.01)
    assert row["rtfx"] == pytest.approx(row["audio_seconds"] / row["processing_seconds"])
    # greedy decoding is deterministic: the same hypotheses and WER as the uninterrupted run
    assert {line["key"]: line["hypothesis"] for line in lines} == {f["key"]: f["hypothesis"] for f in finished}
    full = json.loads((full_run / "results.json").read_text())["results"][0]
    assert row["wer"] == pytest.approx(full["wer"])

    # everything done: nothing decoded, the same numbers
    calls.clear()
    run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "A", "--batch_size", "2")
    assert calls == []
    again = json.loads((tmp_path / "results.json").read_text())["results"][0]
    assert again["rtfx"] == pytest.approx(row["rtfx"]) and again["wer"] == pytest.approx(row["wer"])
    assert again["timed_utterances"] == 0 and again["resumed_utterances"] == 3
    assert len(read_jsonl(hyp_file)) == 3


@needs_whisper_tokenizer
def test_explicit_decoding_and_max_utterances(tiny_checkpoint, manifest, tmp_path, monkeypatch):
    calls = count_generate(monkeypatch)
    run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "steps=4,gen_length=16,block_length=8",
             "--early_stop", "--max_utterances", "2", "--batch_size", "4")
    assert calls == [2]
    row = json.loads((tmp_path / "results.json").read_text())["results"][0]
    assert row["decoding"].endswith("+es")  # named by its settings, then the approximation the flag added
    assert sorted(row["decoding"][: -len("+es")].split(",")) == ["block_length=8", "gen_length=16", "steps=4"]
    assert (row["steps"], row["gen_length"], row["block_length"], row["early_stop"]) == (4, 16, 8, True)
    assert row["num_utterances"] == 2 and row["preset"] is None and row["partial"] is False
    assert row["hypotheses_file"] == f"hypotheses_{safe_name(row['decoding'])}_three_clips.jsonl"
    assert (tmp_path / row["hypotheses_file"]).exists()


@needs_whisper_tokenizer
def test_default_decodings_include_ctc_and_d_only_with_a_ctc_head(tiny_checkpoint, tiny_ctc_checkpoint, manifest,
                                                                    tmp_path):
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path / "ctc", "--max_utterances", "1")
    rows = json.loads((tmp_path / "ctc" / "results.json").read_text())["results"]
    assert [r["decoding"] for r in rows] == ["CTC", "A", "B", "C", "D"]
    d = rows[-1]
    assert (d["preset"], d["steps"], d["anchor_threshold"], d["anchor_slack"]) == ("D", 1, 0.3, 0)
    assert d["num_utterances"] == 1 and d["wer"] >= 0 and d["run_signature"]["decoding"]["anchor_slack"] == 0
    assert read_jsonl(tmp_path / "ctc" / "hypotheses_D_three_clips.jsonl")[0]["hypothesis"] is not None
    # without a CTC head the default set leaves D out silently ...
    run_eval(tiny_checkpoint, manifest, tmp_path / "plain", "--max_utterances", "1")
    rows = json.loads((tmp_path / "plain" / "results.json").read_text())["results"]
    assert [r["decoding"] for r in rows] == ["A", "B", "C"]


@needs_whisper_tokenizer
def test_limit_decodes_a_spread_subset_and_the_table_says_so(tiny_ctc_checkpoint, manifest, tmp_path):
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path, "--decoding", "A", "C", "--limit", "C=1")
    rows = {r["decoding"]: r for r in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert (rows["A"]["num_utterances"], rows["C"]["num_utterances"], rows["C"]["split_utterances"]) == (3, 1, 3)
    assert not rows["C"]["partial"] and (tmp_path / "hypotheses_C_three_clips-1of3.jsonl").is_file()
    table = (tmp_path / "results.md").read_text()
    assert "(1 of 3 utt.)" in table and "--limit" in table
    assert eval_hf.parse_args([]).request.decodings.limits == eval_hf.DEMO_LIMITS  # the no-argument demo run
    assert eval_hf.parse_args(["--limit", "all"]).request.decodings.limits == {}
    with pytest.raises(SystemExit):
        eval_hf.parse_args(["--model", "m", "--data", "x.jsonl", "--limit", "Q=2"])


@needs_whisper_tokenizer
def test_decoding_d_asked_for_without_a_ctc_head_is_refused_before_decoding(tiny_checkpoint, manifest, tmp_path,
                                                                            monkeypatch):
    calls = count_generate(monkeypatch)
    with pytest.raises(SystemExit, match=r"^error: model \S+, decoding D: .*CTC head.*ctc_blank_id is None"):
        run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "A", "D")
    assert calls == [] and not list(tmp_path.glob("hypotheses_*"))


def _long_clip(folder: Path) -> Path:
    """A 31 s clip (two demo utterances, repeated) and a manifest for it."""
    import numpy as np
    import soundfile

    wave = np.concatenate([soundfile.read(DEMO_AUDIO / f"{key}.flac", dtype="float32")[0] for key in CLIPS[1:]])
    soundfile.write(folder / "long.wav", np.tile(wave, 2)[: 31 * 16000], 16000)
    (folder / "long.jsonl").write_text(json.dumps({"audio_filepath": "long.wav", "text": "SOME WORDS"}) + "\n")
    return folder / "long.jsonl"


@needs_whisper_tokenizer
def test_audio_over_30_seconds_is_transcribed_long_form_by_default(tiny_checkpoint, tmp_path, monkeypatch):
    long = _long_clip(tmp_path)
    calls = count_generate(monkeypatch)
    run_eval(tiny_checkpoint, long, tmp_path / "out", "--decoding", "A")
    assert calls == [2]  # two windows, cut in a pause, decoded as one batch
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    row = report["results"][0]
    assert report["long_audio"] == "chunk" and row["chunked_utterances"] == 1 and row["truncated_utterances"] == 0
    assert row["audio_seconds"] == pytest.approx(31.0)
    line = read_jsonl(tmp_path / "out" / "hypotheses_A_long.jsonl")[0]
    assert (line["chunked"], line["windows"], line["truncated"]) == (True, 2, False)
    assert "1 utterance(s) over 30 s transcribed long-form" in (tmp_path / "out" / "results.md").read_text()

    # the old truncation, as an explicit option: counted, and the audio seconds are the 30 s decoded
    run_eval(tiny_checkpoint, long, tmp_path / "cut", "--decoding", "A", "--long_audio", "truncate")
    row = json.loads((tmp_path / "cut" / "results.json").read_text())["results"][0]
    assert row["truncated_utterances"] == 1 and row["chunked_utterances"] == 0
    assert row["audio_seconds"] == pytest.approx(30.0)
    assert read_jsonl(tmp_path / "cut" / "hypotheses_A_long.jsonl")[0]["truncated"] is True

    # error: refuses before decoding anything, naming the file
    calls.clear()
    with pytest.raises(SystemExit, match=r"--long_audio error\): \S*long\.wav \(31\.0 s\)"):
        run_eval(tiny_checkpoint, long, tmp_path / "refused", "--decoding", "A", "--long_audio", "error")
    assert calls == [] and not list((tmp_path / "refused").glob("hypotheses_*"))


# ----------------------------------------------------------------------------------------------------------------------
# The bundled demo
# ----------------------------------------------------------------------------------------------------------------------


def test_demo_audio_bundle():
    lines = read_jsonl(DEMO_AUDIO / "manifest.jsonl")
    assert len(lines) == 15
    assert sorted({line["key"].split("-")[0] for line in lines}) == ["1737", "32", "7312"]
    for line in lines:
        assert not Path(line["audio_filepath"]).is_absolute() and (DEMO_AUDIO / line["audio_filepath"]).is_file()
        assert line["text"] == line["text"].upper() and line["duration"] > 0


def test_no_argument_defaults():
    """`python eval_hf.py` with no arguments means: the bundled model and clips, CTC A B C D AR (CTC and D only for
    models with a CTC head, AR only for causal ones), C on 1 clip and B on 5 spread over the 15, into
    outputs/demo_eval, long audio transcribed long-form, bad files skipped."""
    args = eval_hf.parse_args([])
    request, options = args.request, args.options
    assert request.models == [str(eval_hf.DEMO_MODEL)] and request.data == [f"demo={eval_hf.DEMO_MANIFEST}"]
    assert request.decodings.specs == ["CTC", "A", "B", "C", "D", "first_pass", "deliberation", "AR"]
    assert request.decodings.defaults
    assert request.decodings.limits == {"C": 1, "B": 5}
    assert args.output_dir == str(eval_hf.DEMO_OUTPUT)
    assert (options.long_audio, options.on_bad_data, options.overwrite, options.batch_size) == ("chunk", "skip",
                                                                                                 False, 8)


def test_demo_run(tmp_path):
    """The bundled demo model on three of the bundled clips with one decoding, default output dir (relative to the
    working directory); the full no-argument run (A B C on all 15 clips) is what `bench_hf.py cpu` measures."""
    done = subprocess.run([sys.executable, str(ROOT / "eval_hf.py"), "--decoding", "B", "--max_utterances", "3",
                           "--no_progress"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "outputs" / "demo_eval"
    report = json.loads((out / "results.json").read_text())
    assert [(r["decoding"], r["split"]) for r in report["results"]] == [("B", "demo")]
    row = report["results"][0]
    assert row["num_utterances"] == 3 and 0 <= row["wer"] and row["rtfx"] > 0
    assert len(read_jsonl(out / "hypotheses_B_demo.jsonl")) == 3
    assert "| demo/model | B |" in (out / "results.md").read_text()


@needs_whisper_tokenizer
def test_default_dtype_is_bfloat16_on_a_cpu_with_native_bf16(tiny_checkpoint, manifest, tmp_path, monkeypatch):
    import whisper_llada_eval

    monkeypatch.setattr(whisper_llada_eval, "cpu_has_native_bf16", lambda: True)
    run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "A", "--max_utterances", "1")
    assert json.loads((tmp_path / "results.json").read_text())["dtype"] == "bfloat16"


def test_answers_cut_at_gen_length_are_counted_per_row_and_warned_about(tiny_checkpoint, manifest, tmp_path, caplog):
    """An answer that fills gen_length without an end of text may be cut: the row counts them (`cut_answers`, the
    pipeline's own count for the same audio and settings) and eval warns naming the setting."""
    import logging

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from pipeline_whisper_llada import transcribe
    from processing_whisper_llada import WhisperLladaProcessor, load_audio
    from whisper_llada_data import read_manifest

    with caplog.at_level(logging.WARNING):
        run_eval(tiny_checkpoint, manifest, tmp_path, "--decoding", "A,gen_length=4", "--dtype", "float32")
    row = json.loads((tmp_path / "results.json").read_text())["results"][0]
    model = WhisperLladaForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = WhisperLladaProcessor.from_pretrained(tiny_checkpoint)
    stats: dict = {}
    waves = [load_audio(r["audio"], 16000) for r in read_manifest(manifest)]
    transcribe(model, processor, waves, generation_config=model.resolve_decoding("A,gen_length=4"), stats=stats)
    assert row["cut_answers"] == stats["cut_answers"] > 0  # a random tiny decoder rarely ends within 4 tokens
    assert "filled their whole length without an end of text" in caplog.text and "gen_length" in caplog.text
