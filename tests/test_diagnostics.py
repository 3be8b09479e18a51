"""tools/diagnostics.py: the word-coverage breakdown (reference words bucketed by their count in the training
transcripts, and the share of each bucket the hypotheses get right)."""

import importlib.util
import json

from conftest import ROOT


def load_diagnostics():
    spec = importlib.util.spec_from_file_location("demo_diagnostics", ROOT / "tools" / "diagnostics.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_word_coverage_buckets_by_training_count_and_counts_aligned_words():
    diagnostics = load_diagnostics()
    # "the" 50 times, "cat" 5 times, "sat" once; "mat" and "zebra" never (after normalisation: case and punctuation
    # do not count)
    train = ["The cat sat."] + ["the cat"] * 4 + ["the"] * 45
    references = ["THE CAT SAT ON THE MAT", "ZEBRA"]
    # alignment of the first pair: the=the, cat->hat (sub), sat=sat, "on" deleted, the=the, mat=mat; the second is empty
    hypotheses = ["the hat sat the mat", ""]
    result = diagnostics.word_coverage(train, references, hypotheses)
    assert result["50+"] == {"words": 2, "share": round(100 * 2 / 7, 2), "correct": 100.0}
    assert result["5-49"] == {"words": 1, "share": round(100 / 7, 2), "correct": 0.0}
    assert result["1-4"] == {"words": 1, "share": round(100 / 7, 2), "correct": 100.0}
    # on, mat, zebra: unseen; only "mat" is right
    assert result["unseen"] == {"words": 3, "share": round(300 / 7, 2), "correct": round(100 / 3, 2)}


def test_word_coverage_command_reads_manifests_and_hypotheses_files(tmp_path, capsys):
    diagnostics = load_diagnostics()
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "a.flac", "duration": 1.0, "text": "HELLO WORLD"}) + "\n")
    hypotheses = tmp_path / "hypotheses_C_demo.jsonl"
    hypotheses.write_text(json.dumps({"key": "x", "reference": "HELLO THERE WORLD", "hypothesis": "hello world"}) + "\n")
    assert diagnostics.main(["word-coverage", "--train", str(manifest), "--hypotheses", str(hypotheses)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hypotheses"] == str(hypotheses)
    assert out["1-4"] == {"words": 2, "share": 66.67, "correct": 100.0}
    assert out["unseen"] == {"words": 1, "share": 33.33, "correct": 0.0}
    assert out["50+"]["words"] == 0 and out["50+"]["correct"] is None


def test_word_coverage_command_rejects_a_missing_or_malformed_hypotheses_file(tmp_path):
    import pytest

    diagnostics = load_diagnostics()
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(json.dumps({"audio_filepath": "a.flac", "duration": 1.0, "text": "HELLO"}) + "\n")
    missing = tmp_path / "hypotheses_X.jsonl"
    with pytest.raises(SystemExit, match=r"hypotheses_X\.jsonl: no such hypotheses file"):
        diagnostics.main(["word-coverage", "--train", str(manifest), "--hypotheses", str(missing)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"reference": "A", "hypothesis": "a"}) + "\n{not json\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:2: not a JSON line"):
        diagnostics.main(["word-coverage", "--train", str(manifest), "--hypotheses", str(bad)])
    bad.write_text(json.dumps({"reference": "A"}) + "\n")
    with pytest.raises(SystemExit, match=r"bad\.jsonl:1: expected an object with string fields reference and hypothesis"):
        diagnostics.main(["word-coverage", "--train", str(manifest), "--hypotheses", str(bad)])
