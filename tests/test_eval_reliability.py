"""eval_hf.py as a user meets its failure modes: resuming only a matching run, one table per run, unreadable audio,
a mistyped model folder, Ctrl-C, a chaos run (bad files, long audio, a kill, a resume), and the model card hook.
All on a tiny random model saved to a tmp dir (conftest's `tiny_checkpoint`)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from conftest import needs_whisper_tokenizer, CLIPS, DEMO_AUDIO, ROOT, count_generate, read_jsonl, run_eval

import eval_hf

pytestmark = needs_whisper_tokenizer
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def _write_manifest(path: Path, entries: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return path


def _good_clips(folder: Path, copies: int) -> list[dict]:
    """The three demo clips, each listed `copies` times under its own key."""
    references = {line["key"]: line for line in read_jsonl(DEMO_AUDIO / "manifest.jsonl")}
    entries = []
    for key in CLIPS:
        shutil.copy(DEMO_AUDIO / f"{key}.flac", folder / f"{key}.flac")
        for copy in range(copies):
            entries.append({"key": f"{key}-{copy}", "audio_filepath": f"{key}.flac", "text": references[key]["text"],
                            "duration": references[key]["duration"]})
    return entries


def _bad_files(folder: Path) -> list[dict]:
    """A missing file, a 0-byte wav, a text file named .wav, random bytes named .flac, and a flac cut short (its
    header is fine: it fails only when decoded)."""
    (folder / "empty.wav").write_bytes(b"")
    (folder / "notaudio.wav").write_text("this is not audio\n")
    (folder / "corrupt.flac").write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    data = (DEMO_AUDIO / f"{CLIPS[2]}.flac").read_bytes()
    (folder / "truncated.flac").write_bytes(data[: len(data) // 3])
    names = ["missing.flac", "empty.wav", "notaudio.wav", "corrupt.flac", "truncated.flac"]
    return [{"key": f"bad-{name}", "audio_filepath": name, "text": "SOME WORDS", "duration": 5.0} for name in names]


def _signal_after_first_lines(command: list[str], hypotheses: Path, sig: int, lines: int = 1, cwd=None):
    """Starts `command`, waits until `hypotheses` holds `lines` complete lines, sends `sig`; returns the process's
    (returncode, stdout, stderr)."""
    process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if hypotheses.exists() and hypotheses.read_bytes().count(b"\n") >= lines:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the eval ended before it could be interrupted: " + process.stderr.read()
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


# ----------------------------------------------------------------------------------------------------------------------
# Resume only what matches; one table per run
# ----------------------------------------------------------------------------------------------------------------------


def test_resume_refuses_a_different_run_and_overwrite_starts_afresh(tiny_checkpoint, manifest, tmp_path, monkeypatch):
    out = tmp_path / "out"
    common = ["--decoding", "A", "--max_utterances", "2"]
    run_eval(tiny_checkpoint, manifest, out, *common, "--batch_size", "2")
    hypotheses = out / "hypotheses_A_three_clips.jsonl"
    before = hypotheses.read_bytes()
    calls = count_generate(monkeypatch)

    def refused(*extra, model=tiny_checkpoint, match):
        with pytest.raises(SystemExit, match=match) as error:
            run_eval(model, manifest, out, *extra)
        assert "--overwrite" in str(error.value) and "hypotheses_A_three_clips.jsonl" in str(error.value)
        assert calls == [] and hypotheses.read_bytes() == before  # nothing decoded, nothing appended

    refused(*common, "--batch_size", "1", match="batch_size: 2 -> 1")
    refused(*common, "--batch_size", "2", "--dtype", "bfloat16", match="dtype: float32 -> bfloat16")
    refused(*common, "--batch_size", "2", "--long_audio", "truncate", match="long_audio: chunk -> truncate")
    refused("--decoding", "A", "--max_utterances", "3", "--batch_size", "2", match="data.utterances: 2 -> 3")
    other = tmp_path / "other_model"  # the same files elsewhere: another model path
    shutil.copytree(tiny_checkpoint, other)
    refused(*common, "--batch_size", "2", model=other, match="model.path: ")
    # the same folder, retrained in place: the weights' fingerprint differs
    run_eval(other, manifest, tmp_path / "other_out", *common, "--batch_size", "2")
    weights = other / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(SystemExit, match=r"model\.fingerprint: \w+ -> \w+"):
        run_eval(other, manifest, tmp_path / "other_out", *common, "--batch_size", "2")

    # --overwrite decodes and times everything again, under the new signature
    calls.clear()
    run_eval(tiny_checkpoint, manifest, out, *common, "--batch_size", "1", "--overwrite")
    assert calls == [1, 1]
    row = json.loads((out / "results.json").read_text())["results"][0]
    assert (row["timed_utterances"], row["resumed_utterances"], row["resumed"]) == (2, 0, False)
    assert row["run_signature"]["batch_size"] == 1 and len(read_jsonl(hypotheses)) == 2
    # a finished eval with the same settings: nothing decoded unless --overwrite asks to re-time it
    calls.clear()
    run_eval(tiny_checkpoint, manifest, out, *common, "--batch_size", "1")
    assert calls == []
    run_eval(tiny_checkpoint, manifest, out, *common, "--batch_size", "1", "--overwrite")
    assert calls == [1, 1] and len(read_jsonl(hypotheses)) == 2
    # hypotheses without a signature (an older eval_hf.py): refused, not trusted
    calls.clear()
    (out / "hypotheses_A_three_clips.meta.json").unlink()
    with pytest.raises(SystemExit, match="no readable run signature"):
        run_eval(tiny_checkpoint, manifest, out, *common, "--batch_size", "1")


def test_results_show_only_this_runs_rows(tiny_checkpoint, manifest, tmp_path):
    out = tmp_path / "out"
    run_eval(tiny_checkpoint, f"one={manifest}", out, "--decoding", "A", "B", "--max_utterances", "1")
    run_eval(tiny_checkpoint, f"two={manifest}", out, "--decoding", "B", "--max_utterances", "1")
    report = json.loads((out / "results.json").read_text())
    assert [(r["decoding"], r["split"]) for r in report["results"]] == [("B", "two")]
    assert list(report["splits"]) == ["two"]
    table = (out / "results.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert [c.strip() for c in header.strip("|").split("|")][3:] == ["two", "avg WER", "avg RTFx"]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "| model" not in line]
    assert len(rows) == 1 and "| B |" in rows[0]
    wer = report["results"][0]["wer"]
    assert rows[0].split("|")[-3].strip() == f"{wer:.2f}"  # avg WER = this run's only split
    assert (out / "hypotheses_A_one.jsonl").exists()  # earlier runs' hypotheses stay (and resume when asked again)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def test_unreadable_audio_is_skipped_counted_and_named(tiny_checkpoint, tmp_path, capsys):
    entries = _good_clips(tmp_path, 1)[:1] + _bad_files(tmp_path)
    data = _write_manifest(tmp_path / "bad.jsonl", entries)
    run_eval(tiny_checkpoint, data, tmp_path / "out", "--decoding", "A")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    row = report["results"][0]
    assert row["num_utterances"] == 1 and row["skipped_utterances"] == 5
    skipped = {Path(item["audio"]).name: item["reason"] for item in report["skipped"]["bad"]}
    assert skipped == {"missing.flac": "missing_audio", "empty.wav": "unreadable_audio",
                       "notaudio.wav": "unreadable_audio", "corrupt.flac": "unreadable_audio",
                       "truncated.flac": "unreadable_audio"}
    printed = capsys.readouterr().out
    assert "Skipped 5 utterance(s)" in printed and all(name in printed for name in skipped)
    assert "5 unreadable or unusable utterance(s) were skipped" in (tmp_path / "out" / "results.md").read_text()

    # --on_bad_data error: the first bad file (in manifest order) stops the run, named
    with pytest.raises(SystemExit, match=r"missing\.flac \(key bad-missing\.flac\): missing_audio"):
        run_eval(tiny_checkpoint, data, tmp_path / "strict", "--decoding", "A", "--on_bad_data", "error")
    # a file that fails only when decoded, decoded first: the run stops with no (0-byte) hypotheses file left behind
    cut = _write_manifest(tmp_path / "cut.jsonl", [entries[0], entries[-1]])
    with pytest.raises(SystemExit, match=r"truncated\.flac .*unreadable_audio.*--on_bad_data error"):
        run_eval(tiny_checkpoint, cut, tmp_path / "strict2", "--decoding", "A", "--on_bad_data", "error")
    assert not list((tmp_path / "strict2").glob("hypotheses_*"))


def test_missing_model_folder_is_named(manifest, tmp_path):
    for name in ("./no_such_model", str(tmp_path / "no_such_model"), "runs/no/such_model"):
        with pytest.raises(SystemExit, match=f"^error: model path {name} does not exist$"):
            eval_hf.main(["--model", name, "--data", str(manifest), "--output_dir", str(tmp_path / "out")])
    # owner/name is a Hub id when no such folder exists: one line, no traceback, from the command line
    done = subprocess.run([sys.executable, str(ROOT / "eval_hf.py"), "--model", "no_such_owner/no_such_model",
                           "--data", str(manifest), "--output_dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env=ENV, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "error: model path no_such_owner/no_such_model does not exist" in done.stderr.strip().splitlines()[-1]


# ----------------------------------------------------------------------------------------------------------------------
# Interruptions
# ----------------------------------------------------------------------------------------------------------------------


def test_ctrl_c_prints_one_line_and_a_rerun_resumes(tiny_checkpoint, tmp_path):
    data = _write_manifest(tmp_path / "many.jsonl", _good_clips(tmp_path, 6))  # 18 utterances
    out = tmp_path / "out"
    args = ["--model", str(tiny_checkpoint), "--data", str(data), "--output_dir", str(out), "--device", "cpu",
            "--decoding", "B", "--batch_size", "1", "--warmup_batches", "0", "--no_progress",
            "--dtype", "float32"]  # the subprocess does not see conftest's float32 default
    rc, _, err = _signal_after_first_lines([sys.executable, str(ROOT / "eval_hf.py"), *args],
                                           out / "hypotheses_B_many.jsonl", signal.SIGINT)
    assert rc == 130 and "Traceback" not in err and "KeyboardInterrupt" not in err
    message = [line for line in err.splitlines() if "interrupted" in line]
    assert len(message) == 1 and str(out) in message[0] and "rerun the same command to resume" in message[0]
    finished = len(read_jsonl(out / "hypotheses_B_many.jsonl"))
    assert 1 <= finished < 18
    report = json.loads((out / "results.json").read_text())
    assert report["status"] == "interrupted"
    # the split in progress is a partial row of what its hypotheses file holds, and the message says so
    assert [(r["decoding"], r["partial"], r["num_utterances"], r["planned_utterances"]) for r in report["results"]] == [
        ("B", True, finished, 18)]
    assert f"0 complete row(s) and a partial row (B / many: {finished} of 18 utterances" in message[0]

    assert eval_hf.main(args) == 0
    report = json.loads((out / "results.json").read_text())
    row = report["results"][0]
    assert report["status"] == "complete" and report["resumed"]
    assert (row["num_utterances"], row["resumed_utterances"], row["timed_utterances"]) == (18, finished, 18 - finished)
    assert sorted(line["key"] for line in read_jsonl(out / "hypotheses_B_many.jsonl")) == sorted(
        f"{key}-{copy}" for key in CLIPS for copy in range(6))


def test_ctrl_c_mid_split_keeps_the_decoded_part_as_a_partial_row(tiny_checkpoint, manifest, tmp_path, monkeypatch,
                                                                   capsys):
    """Ctrl-C in the second batch of B, after A is done: results.json/results.md hold A's row and B's first batch as
    a row marked partial; the message says which is which and where the hypotheses are; a rerun completes B."""
    import whisper_llada_eval

    transcribe, calls = whisper_llada_eval.transcribe, []

    def interrupted_in_the_fourth_batch(*args, **kwargs):  # A: batches 1-2, B: batch 3, then Ctrl-C
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return transcribe(*args, **kwargs)

    monkeypatch.setattr(whisper_llada_eval, "transcribe", interrupted_in_the_fourth_batch)
    out = tmp_path / "out"
    args = ["--model", str(tiny_checkpoint), "--data", str(manifest), "--output_dir", str(out), "--device", "cpu",
            "--decoding", "A", "B", "--batch_size", "2", "--warmup_batches", "0", "--no_progress"]
    assert eval_hf.main(args) == 130
    report = json.loads((out / "results.json").read_text())
    assert report["status"] == "interrupted"
    rows = [(r["decoding"], r["partial"], r["num_utterances"], r["planned_utterances"]) for r in report["results"]]
    assert rows == [("A", False, 3, 3), ("B", True, 2, 3)]
    partial = report["results"][1]
    assert partial["timed_utterances"] == 2 and partial["wer"] >= 0 and partial["rtfx"] > 0
    assert len(read_jsonl(out / "hypotheses_B_three_clips.jsonl")) == 2
    table = (out / "results.md").read_text()
    assert "(interrupted)" in table and "(partial: 2 of 3)" in table and "partial: the run stopped" in table
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message == (f"interrupted: {out / 'results.json'} and results.md hold 1 complete row(s) and a partial row "
                       "(B / three_clips: 2 of 3 utterances, from hypotheses_B_three_clips.jsonl); every decoded "
                       f"utterance is kept in {out}/hypotheses_*.jsonl; rerun the same command to resume")

    monkeypatch.setattr(whisper_llada_eval, "transcribe", transcribe)
    assert eval_hf.main(args) == 0
    report = json.loads((out / "results.json").read_text())
    rows = [(r["decoding"], r["partial"], r["num_utterances"], r["resumed_utterances"]) for r in report["results"]]
    assert report["status"] == "complete" and rows == [("A", False, 3, 3), ("B", False, 3, 2)]


def test_chaos_run_killed_and_resumed_gives_the_clean_runs_hypotheses(tiny_checkpoint, tmp_path, capsys):
    """Good, missing, corrupt, too-long and mis-described files; killed midway (SIGKILL), then resumed."""
    good = _good_clips(tmp_path, 3)
    waves = [soundfile.read(DEMO_AUDIO / f"{key}.flac", dtype="float32")[0] for key in CLIPS]
    soundfile.write(tmp_path / "long.wav", np.concatenate(waves + waves)[: 35 * 16000], 16000)
    soundfile.write(tmp_path / "long_said_short.wav", np.concatenate(waves + waves)[: 33 * 16000], 16000)
    good += [
        {"key": "long-35s", "audio_filepath": "long.wav", "text": "SOME WORDS", "duration": 35.0},
        # mis-described: the manifest's duration is wrong (the audio header is what counts)
        {"key": "said-2s", "audio_filepath": f"{CLIPS[2]}.flac", "text": "SOME WORDS", "duration": 2.0},
        {"key": "said-25s", "audio_filepath": "long_said_short.wav", "text": "SOME WORDS", "duration": 25.0},
    ]
    bad = _bad_files(tmp_path)
    interleaved = [e for i, g in enumerate(good) for e in ([g, bad[i]] if i < len(bad) else [g])]
    mixed = _write_manifest(tmp_path / "mixed.jsonl", interleaved)
    clean = _write_manifest(tmp_path / "clean.jsonl", good)

    common = ["--model", str(tiny_checkpoint), "--device", "cpu", "--decoding", "B", "--batch_size", "1",
              "--warmup_batches", "0", "--no_progress", "--dtype", "float32"]
    out = tmp_path / "out"
    args = [*common, "--data", f"chaos={mixed}", "--output_dir", str(out)]
    rc, _, _ = _signal_after_first_lines([sys.executable, str(ROOT / "eval_hf.py"), *args],
                                         out / "hypotheses_B_chaos.jsonl", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    killed = len(read_jsonl(out / "hypotheses_B_chaos.jsonl"))
    assert 1 <= killed < len(good)

    capsys.readouterr()
    assert eval_hf.main(args) == 0
    printed = capsys.readouterr().out
    assert eval_hf.main([*common, "--data", f"chaos={clean}", "--output_dir", str(tmp_path / "clean_out")]) == 0

    resumed = {line["key"]: line for line in read_jsonl(out / "hypotheses_B_chaos.jsonl")}
    reference = {line["key"]: line for line in read_jsonl(tmp_path / "clean_out" / "hypotheses_B_chaos.jsonl")}
    assert len(resumed) == len(good) and resumed.keys() == reference.keys()
    assert {k: v["hypothesis"] for k, v in resumed.items()} == {k: v["hypothesis"] for k, v in reference.items()}
    assert resumed["long-35s"]["chunked"] and resumed["said-25s"]["chunked"] and not resumed["said-2s"]["chunked"]
    assert resumed["said-2s"]["duration"] == pytest.approx(12.665, abs=0.01)

    report = json.loads((out / "results.json").read_text())
    row = report["results"][0]
    assert (row["num_utterances"], row["resumed_utterances"], row["skipped_utterances"]) == (len(good), killed, 5)
    assert row["chunked_utterances"] == 2 and report["resumed"]
    names = sorted(Path(item["audio"]).name for item in report["skipped"]["chaos"])
    assert names == sorted(Path(e["audio_filepath"]).name for e in bad)
    assert all(name in printed for name in names)
    clean_row = json.loads((tmp_path / "clean_out" / "results.json").read_text())["results"][0]
    assert row["wer"] == pytest.approx(clean_row["wer"]) and clean_row["skipped_utterances"] == 0


# ----------------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------------


def test_model_card_from_this_runs_results(tiny_checkpoint, manifest, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    out = tmp_path / "out"
    run_eval(model, f"dev-clean={manifest}", out, "--decoding", "A", "--max_utterances", "1", "--model_card", str(model))
    wer = json.loads((out / "results.json").read_text())["results"][0]["wer"]
    text = (model / "README.md").read_text()
    meta = yaml.safe_load(text.split("---")[1])
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "openslr/librispeech_asr" and result["dataset"]["split"] == "validation"
    assert result["metrics"][0]["type"] == "wer" and result["metrics"][0]["value"] == round(wer, 2)
    assert "decoding A" in result["metrics"][0]["name"]
    # the card is not part of the model's fingerprint: the same eval still resumes
    run_eval(model, f"dev-clean={manifest}", out, "--decoding", "A", "--max_utterances", "1", "--model_card", str(model))
    with pytest.raises(SystemExit):
        eval_hf.parse_args(["--model", str(model), "--model_card", str(tmp_path)])  # no config.json there
