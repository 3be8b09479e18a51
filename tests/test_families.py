"""Every decoder family end to end through the one builder and the speech model (decoder_families.py): a tiny
official-format checkpoint of each (tests/family_checkpoints.py: config.json with the official model_type, random
weights, the family's tokenizer and chat template) and a tiny Whisper encoder are built into a speech model with no
`kind` given (the family is read off config.json), trained one step (a finite loss, gradients on the projector only),
decoded with each of the family's presets and D from a hypothesis or the CTC reading, saved, loaded in a clean process
without this package (AutoModel, AutoProcessor, the ASR pipeline) and evaluated with eval_hf.py.

The DiffusionGemma contract: the speech model's decoder generates from embeddings exactly what transformers'
`DiffusionGemmaForBlockDiffusion.generate(input_ids=P)` gives for the same checkpoint and seed."""

import copy
import json
import shutil

import pytest
import torch

from conftest import load_in_clean_process, run_eval, synthetic_speech
from decoder_families import FAMILIES
from family_checkpoints import BLANK, CANVAS_LENGTH, demo_clips, write_causal_lm, write_family_checkpoint, \
    write_whisper_encoder

# the presets each family's generation config reads (eval_hf.py rows, generate(decoding=...))
PRESETS = {"llada": ["A", "B", "C"], "dream": ["A", "B", "C"], "llada2": ["L2", "A", "B", "C"],
           "diffusion_gemma": ["DG"]}
FAMILY_NAMES = sorted(PRESETS)
# eval_hf.py's rows without --decoding for a model with a CTC head: CTC A B C D where the family reads them
DEFAULT_ROWS = {"llada": {"CTC", "A", "B", "C", "D"}, "dream": {"CTC", "A", "B", "C", "D"},
                "llada2": {"CTC", "A", "B", "C", "D"}, "diffusion_gemma": {"CTC", "D"}}
GEN_LENGTH = 16  # the answer length of the tests' decodings (DiffusionGemma: one canvas)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tiny models' ops are too small to share, and threads contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


@pytest.fixture(scope="module")
def encoder_dir(workspace):
    return write_whisper_encoder(workspace / "whisper-tiny-random")


@pytest.fixture(scope="module")
def checkpoints(workspace):
    """{family: its tiny official-format checkpoint directory}, written once."""
    return {name: write_family_checkpoint(name, workspace / name) for name in FAMILY_NAMES}


def build(checkpoints, encoder_dir, family, **spec_values):
    """(model, processor) of a speech model on `family`'s checkpoint, the family read off its config.json."""
    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    decoder = DecoderSpec(str(checkpoints[family]), kind=spec_values.pop("kind", None))
    torch.manual_seed(0)
    model, processor = build_model(ModelSpec(encoder=str(encoder_dir), decoder=decoder, projector_hidden_sizes=[32],
                                             **spec_values))
    model.generation_config.set_length(GEN_LENGTH)
    return model.eval(), processor


@pytest.fixture(scope="module")
def built(checkpoints, encoder_dir):
    """{family: (model, processor)} without a CTC head, built lazily."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build(checkpoints, encoder_dir, family)
        return cache[family]

    return get


def features_of(processor, seconds=(2.0,)):
    audio = [synthetic_speech(s, seed=i) for i, s in enumerate(seconds)]
    return processor(audio=audio if len(audio) > 1 else audio[0], sampling_rate=16000)


def blank_id(checkpoints, family) -> int:
    from build_whisper_llada import load_tokenizer

    return load_tokenizer(str(checkpoints[family])).convert_tokens_to_ids(BLANK)


# ----------------------------------------------------------------------------------------------------------------------
# 1. The builder reads the family off the checkpoint
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_builder_detects_the_family_and_its_special_tokens(checkpoints, encoder_dir, built, family):
    model, processor = built(family)
    entry = FAMILIES[family]
    assert model.config.decoder_type == family
    assert type(model.decoder) is entry.decoder_class()
    tokenizer = processor.tokenizer
    assert (processor.mask_token, processor.end_of_turn_token) == (entry.mask_token, entry.end_of_turn)
    assert processor.mask_token_id == model.config.mask_token_id == (
        tokenizer.convert_tokens_to_ids(entry.mask_token) if entry.mask_token else None)
    eot = tokenizer.convert_tokens_to_ids(entry.end_of_turn)
    assert model.config.eot_token_id == eot and model.config.eos_token_id == tokenizer.eos_token_id
    prefix_ids, suffix_ids = processor.prompt_ids()
    assert suffix_ids[0] == eot  # the speech goes right before the user turn's end
    assert (model.config.prompt_prefix_ids, model.config.prompt_suffix_ids) == (prefix_ids, suffix_ids)
    assert processor.decode(processor(text="knit two together")["labels"][0]) == "knit two together"
    # the speech model decodes with a copy of the decoder's defaults: the decoder keeps its checkpoint's
    assert model.generation_config is not model.decoder.generation_config
    explicit, _ = build(checkpoints, encoder_dir, family, kind=family)
    assert type(explicit.decoder) is type(model.decoder)


def test_a_causal_lm_without_kind_is_one_clear_error(workspace, encoder_dir):
    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    causal = write_causal_lm(workspace / "llama-tiny")
    with pytest.raises(ValueError, match=r"model_type 'llama' is none of the diffusion families.*kind='causal'"):
        build_model(ModelSpec(encoder=str(encoder_dir), decoder=DecoderSpec(str(causal)), projector_hidden_sizes=[32]))
    model, _ = build_model(ModelSpec(encoder=str(encoder_dir), decoder=DecoderSpec(str(causal), kind="causal"),
                                     projector_hidden_sizes=[32]))
    assert model.config.decoder_type == "causal"


# ----------------------------------------------------------------------------------------------------------------------
# 2. Training: the family's loss, gradients on the projector (and LoRA adapters) only
# ----------------------------------------------------------------------------------------------------------------------


def trained_parameters(model) -> set[str]:
    model.train()
    return {name for name, p in model.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_loss_is_finite_and_trains_the_projector_only(built, family):
    model, processor = built(family)
    features = features_of(processor, (2.0, 1.5))
    labels = processor(text=["knit two together", "after mister crow"])["labels"]
    model.train()
    torch.manual_seed(0)
    loss = model(**features, labels=labels).loss
    assert torch.isfinite(loss)
    loss.backward()
    trained = trained_parameters(model)
    assert trained and all(name.startswith("projector.") for name in trained)
    assert all(p.grad is None for p in model.decoder.parameters()) and not any(
        p.requires_grad for p in model.decoder.parameters())
    model.zero_grad(set_to_none=True)
    model.eval()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lora_adapters_train_with_the_projector(checkpoints, encoder_dir, family, tmp_path):
    model, processor = build(checkpoints, encoder_dir, family, lora={"r": 2, "lora_alpha": 4})
    assert model.config.lora["target_modules"] == list(model.decoder.lora_targets)
    with torch.no_grad():  # non-zero B, so that gradients reach A as well
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.normal_(0, 0.02)
    torch.manual_seed(0)
    model.train()
    model(**features_of(processor), labels=processor(text=["knit two together"])["labels"]).loss.backward()
    trained = trained_parameters(model)
    assert any(".lora_A" in n for n in trained) and any(".lora_B" in n for n in trained)
    assert all(name.startswith("projector.") or ".lora_" in name for name in trained)
    # saved: the projector and the adapters; loaded: the base decoder pulled, the adapters on it
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model.save_pretrained(tmp_path)
    reloaded = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path)
    assert reloaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(tensor, reloaded.state_dict()[name]) for name, tensor in model.state_dict().items())


# ----------------------------------------------------------------------------------------------------------------------
# 3. Decoding: the model's default, each preset, D from a hypothesis or the CTC reading
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_generate_runs_the_default_and_every_preset(built, family):
    model, processor = built(family)
    features = features_of(processor, (2.0, 1.0))
    torch.manual_seed(0)
    ids = model.generate(**features)
    assert ids.shape[0] == 2 and ids.shape[1] >= GEN_LENGTH
    assert all(isinstance(text, str) for text in processor.batch_decode(ids))
    for preset in PRESETS[family]:
        config = model.resolve_decoding(preset)
        assert config.name.split(",")[0] == preset
        torch.manual_seed(0)
        ids = model.generate(**features, decoding=preset)
        assert ids.shape[0] == 2 and ids.shape[1] >= GEN_LENGTH, preset
        assert not (ids == processor.mask_token_id).any() if processor.mask_token_id is not None else True


def record_starts(model, monkeypatch) -> list:
    """Records the start (`answer_start`) of every call of the decoder's generate."""
    starts, generate = [], model.decoder.generate

    def recording(*args, **kwargs):
        starts.append(kwargs.get("answer_start"))
        return generate(*args, **kwargs)

    monkeypatch.setattr(model.decoder, "generate", recording)
    return starts


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_d_starts_from_a_hypothesis(built, family, monkeypatch):
    model, processor = built(family)
    features = features_of(processor)
    hypothesis = processor.encode_text("knit two together")
    starts = record_starts(model, monkeypatch)
    # without a CTC head a hypothesis's confidences are the decoder's own; threshold 0 keeps every token
    torch.manual_seed(0)
    ids = model.generate(**features, decoding="D", decoder_input_ids=[hypothesis], anchor_threshold=0.0)
    assert starts[-1][0, : len(hypothesis)].tolist() == hypothesis
    assert starts[-1][0, len(hypothesis)] == model.config.eos_token_id  # no slack: the end of text after it
    if FAMILIES[family].masked:  # a kept token is never changed ([MASK] families; uniform noise may change any)
        assert ids[0, : len(hypothesis)].tolist() == hypothesis
        assert processor.batch_decode(ids)[0].startswith("knit two together")
    torch.manual_seed(0)
    model.generate(**features, decoding="D", hypotheses=["Knit two, together!"], anchor_threshold=1.0, anchor_slack=2)
    marker = model.resolve_decoding("D").mask_token_id  # [MASK], or DiffusionGemma's noise marker
    assert starts[-1][0, : len(hypothesis) + 2].tolist() == [marker] * (len(hypothesis) + 2)  # all re-masked


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_d_and_ctc_read_the_ctc_head(checkpoints, encoder_dir, family, monkeypatch):
    model, processor = build(checkpoints, encoder_dir, family, ctc_blank_id=blank_id(checkpoints, family))
    features = features_of(processor, (2.0, 1.0))
    reading = model.generate(**features, decoding="CTC")
    assert reading.shape[0] == 2
    starts = record_starts(model, monkeypatch)
    torch.manual_seed(0)
    ids = model.generate(**features, decoding="D", anchor_threshold=0.0)  # every CTC token kept
    for row, start, expected in zip(ids.tolist(), starts[-1].tolist(), reading.tolist()):
        words = [t for t in expected if t != model.config.eos_token_id]
        assert start[: len(words)] == words
        assert row[: len(words)] == words or not FAMILIES[family].masked
    torch.manual_seed(0)
    assert model.generate(**features, decoding="D").shape[0] == 2  # the model's own D settings
    # the CTC head and token mixtures read the decoder's token embeddings as its lookups give them
    table = model.token_embeddings()
    ids_ = torch.tensor([3, 5])
    assert torch.allclose(table[ids_], model.decoder.get_input_embeddings()(ids_).float(), atol=1e-6)


@pytest.mark.parametrize("family", [name for name in FAMILY_NAMES if FAMILIES[name].mask_token])
def test_editor_examples_and_the_ctc_loss_train_the_masked_families(saved, family):
    _, model, processor = saved(family)  # a CTC head
    kept = copy.deepcopy(model.config.training)
    try:
        model.config.update_recipe(ctc_weight=0.5, anchor_prob=1.0, anchor_threshold=0.9)  # every row an editor example
        model.train()
        torch.manual_seed(0)
        out = model(**features_of(processor, (2.0, 1.5)), labels=processor(text=["knit two", "after mister"])["labels"])
        assert torch.isfinite(out.loss) and torch.isfinite(out.ctc_loss)
        out.loss.backward()
        assert trained_parameters(model) and all(n.startswith("projector.") for n in trained_parameters(model))
    finally:
        model.zero_grad(set_to_none=True)
        model.config.training = kept
        model.eval()


# ----------------------------------------------------------------------------------------------------------------------
# 4. Saved, loaded without this package, evaluated
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(workspace, checkpoints, encoder_dir):
    """{family: (directory, in-process model, processor)}: a speech model with a CTC head, saved as remote code."""
    cache = {}

    def get(family):
        if family not in cache:
            model, processor = build(checkpoints, encoder_dir, family, ctc_blank_id=blank_id(checkpoints, family))
            directory = workspace / f"saved-{family}"
            model.save_pretrained(directory)
            processor.save_pretrained(directory)
            cache[family] = directory, model, processor
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_a_saved_model_loads_without_this_package_and_transcribes(saved, family, tmp_path):
    from build_whisper_llada import REMOTE_CODE_FILES

    directory, model, processor = saved(family)
    files = {path.name for path in directory.iterdir()}
    assert set(REMOTE_CODE_FILES) <= files  # the family modules travel with every checkpoint
    assert json.loads((directory / "processor_config.json").read_text())["end_of_turn_token"] == \
        FAMILIES[family].end_of_turn
    audio = synthetic_speech(2.0)
    features = processor(audio=audio, sampling_rate=16000)
    torch.manual_seed(0)
    expected = model.generate(features["input_features"], features["attention_mask"])
    result = load_in_clean_process(directory, audio, features, tmp_path, generate_kwargs={})
    assert not result["repo_importable"]
    assert result["classes"][-2:] == ["WhisperLladaASRPipeline", "WhisperLladaForConditionalGeneration"]
    assert result["ids_model"] == expected.tolist() == result["ids_s2s"]
    assert isinstance(result["pipeline"]["text"], str)


@pytest.fixture(scope="module")
def two_clips(workspace):
    from conftest import DEMO_AUDIO

    folder = workspace / "two-clips"
    folder.mkdir()
    lines = sorted(demo_clips(), key=lambda line: line["duration"])[:2]  # the two shortest
    for line in lines:
        shutil.copy(DEMO_AUDIO / line["audio_filepath"], folder / line["audio_filepath"])
    path = folder / "two_clips.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_eval_hf_runs_the_family_presets_and_its_defaults(saved, family, two_clips, tmp_path):
    directory, _, _ = saved(family)
    run_eval(directory, two_clips, tmp_path / "one", "--decoding", PRESETS[family][0], "--batch_size", "2")
    rows = json.loads((tmp_path / "one" / "results.json").read_text())["results"]
    assert [(row["decoding"], row["num_utterances"]) for row in rows] == [(PRESETS[family][0], 2)]
    # no --decoding: each default decoding that applies (CTC and D with the CTC head), else the model's own
    run_eval(directory, two_clips, tmp_path / "defaults", "--batch_size", "2", "--limit", "C=1")
    rows = json.loads((tmp_path / "defaults" / "results.json").read_text())["results"]
    assert rows and all(row["num_utterances"] >= 1 for row in rows)
    assert {row["decoding"] for row in rows} == DEFAULT_ROWS[family]


def test_eval_hf_defaults_to_the_model_s_own_decoding_when_no_preset_fits(built, two_clips, tmp_path):
    model, processor = built("diffusion_gemma")  # no CTC head: neither CTC nor D, and no A/B/C
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    run_eval(tmp_path / "model", two_clips, tmp_path / "out", "--batch_size", "2")
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert [(row["decoding"], row["num_utterances"]) for row in rows] == [("DG", 2)]


# ----------------------------------------------------------------------------------------------------------------------
# 5. DiffusionGemma: the speech model's decoder is transformers' own
# ----------------------------------------------------------------------------------------------------------------------


def test_diffusion_gemma_decoder_generates_what_transformers_generates(checkpoints, encoder_dir):
    from transformers import DiffusionGemmaForBlockDiffusion

    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    model, _ = build_model(ModelSpec(encoder=str(encoder_dir), decoder=DecoderSpec(str(checkpoints["diffusion_gemma"])),
                                     projector_hidden_sizes=[32]))  # as built, no eval(): the decoder is frozen
    native = DiffusionGemmaForBlockDiffusion.from_pretrained(checkpoints["diffusion_gemma"])
    prompt = torch.randint(12, 200, (2, 9), generator=torch.Generator().manual_seed(3))
    for tokens in (CANVAS_LENGTH, 2 * CANVAS_LENGTH):
        torch.manual_seed(7)
        ours = model.decoder.generate(inputs_embeds=model.decoder.get_input_embeddings()(prompt),
                                      max_new_tokens=tokens)
        torch.manual_seed(7)
        reference = native.generate(input_ids=prompt, max_new_tokens=tokens)
        reference = getattr(reference, "sequences", reference)
        assert torch.equal(ours, reference[:, prompt.shape[1]:])
        assert torch.equal(ours.sequences, ours)  # also read as DiffusionGemma's own output is (`.sequences`)


# ----------------------------------------------------------------------------------------------------------------------
# 6. The LibriSpeech recipes at the published sizes (meta device: no memory, no download)
# ----------------------------------------------------------------------------------------------------------------------

# openai/whisper-large-v3's config.json (the encoder's fields)
WHISPER_LARGE_V3 = dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120,
                        decoder_layers=32, decoder_attention_heads=20, decoder_ffn_dim=5120, num_mel_bins=128,
                        vocab_size=51866, max_source_positions=1500, max_target_positions=448)
WHISPER_LARGE_V3_ENCODER_PARAMETERS = 636_968_960


def published(family: str) -> tuple[dict, int]:
    """(the published checkpoint's config.json, its parameter count) from the family module."""
    if family == "dream":
        from modeling_dream import DREAM_V0_7B_CONFIG, count_parameters

        return DREAM_V0_7B_CONFIG, count_parameters()  # 7,615,616,512
    if family == "llada2":
        from modeling_llada2 import LLADA2_MINI_CONFIG, count_parameters

        return LLADA2_MINI_CONFIG, count_parameters(LLADA2_MINI_CONFIG)[0]  # 16.26B total
    from modeling_diffusion_gemma_decoder import DIFFUSION_GEMMA_26B_A4B_CONFIG, DIFFUSION_GEMMA_26B_A4B_PARAMETERS

    return DIFFUSION_GEMMA_26B_A4B_CONFIG, DIFFUSION_GEMMA_26B_A4B_PARAMETERS


@pytest.mark.parametrize("family,size", [("dream", 7_615_616_512), ("llada2", 16_255_638_528),
                                         ("diffusion_gemma", 25_823_778_864)])
def test_librispeech_recipe_parses_and_builds_at_the_published_size(family, size):
    from conftest import ROOT
    from configuration_whisper_llada import WhisperLladaConfig
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from train_hf import model_spec, parse_args

    recipe = ROOT / "configs" / "librispeech" / f"whisper-large-v3_{family}.yaml"
    model_args, data_args, training_args = parse_args([str(recipe), "--bf16", "false"])  # (bf16 needs a GPU here)
    spec = model_spec(model_args)
    assert spec.decoder.kind == family and spec.dtype == "bfloat16" and spec.checkpoint_weights == "trainable"
    assert data_args.train_data == ["hub:openslr/librispeech_asr:clean:train.100"] and training_args.max_steps == 2700
    assert training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps == 32
    values, count = published(family)
    assert count == size
    config = WhisperLladaConfig(encoder_config=WHISPER_LARGE_V3, decoder_config=dict(values), decoder_type=family,
                                projector_hidden_sizes=spec.projector_hidden_sizes, stack_factor=spec.stack_factor,
                                downsample_method=spec.downsample_method)
    with torch.device("meta"):
        model = WhisperLladaForConditionalGeneration(config)
    assert type(model.decoder) is FAMILIES[family].decoder_class()
    parameters = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731 (shared tensors once)
    assert parameters(model.decoder) == size
    assert parameters(model.encoder) == WHISPER_LARGE_V3_ENCODER_PARAMETERS
    width = model.decoder.get_input_embeddings().weight.shape[1]
    sizes = [5 * 1280, 2048, 1024, 2048, width]  # "sln-large": LayerNorms after the 2nd and 3rd Linear
    expected = sum(a * b + b for a, b in zip(sizes, sizes[1:])) + 2 * (1024 + 2048)
    assert parameters(model.projector) == expected
    assert {name for name, p in model.named_parameters() if p.requires_grad} == {
        name for name, _ in model.named_parameters() if name.startswith("projector.")}


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_model_card_names_the_decoder_family(saved, family):
    from modelcard_whisper_llada import write_model_card

    directory, model, _ = saved(family)
    card = write_model_card(directory).read_text()
    entry = FAMILIES[family]
    assert f"| decoder | {entry.title}, family `{family}`" in card
    assert all(f"- {tag}" in card for tag in entry.tags)
    assert "## Decoding presets" in card and all(f"| {preset} |" in card for preset in PRESETS[family])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_training_records_d_as_the_default_where_the_family_reads_it(saved, built, family):
    from train_hf import record_default_decoding, reads_decoding

    _, model, _ = saved(family)  # a CTC head
    plain, _ = built(family)  # no CTC head: the family's own default stays
    kept = {m: copy.deepcopy(m.generation_config) for m in (model, plain)}
    try:
        assert reads_decoding(model, "D") and reads_decoding(model, "CTC") and not reads_decoding(model, "AR")
        record_default_decoding(model, None)
        assert model.generation_config.name == "D" and model.generation_config.anchored
        before = plain.resolve_decoding().name
        record_default_decoding(plain, None)
        assert plain.resolve_decoding().name == before
    finally:
        for m, config in kept.items():
            m.generation_config = config


def test_train_hf_reads_the_family_and_refuses_editor_examples_without_a_mask_token(checkpoints, encoder_dir):
    from train_hf import TrainConfigError, parse_args, prepare_model

    common = ["--encoder_name_or_path", str(encoder_dir), "--projector_hidden_sizes", "32", "--output_dir", "unused",
              "--ctc_blank_id", str(blank_id(checkpoints, "diffusion_gemma")), "--ctc_weight", "0.5"]
    model_args, _, _ = parse_args(["--decoder_name_or_path", str(checkpoints["diffusion_gemma"]), *common])
    model, _ = prepare_model(model_args)  # no --decoder_type: read off config.json
    assert model.config.decoder_type == "diffusion_gemma"
    model_args, _, _ = parse_args(["--decoder_name_or_path", str(checkpoints["diffusion_gemma"]), *common,
                                   "--anchor_prob", "0.5"])
    with pytest.raises(TrainConfigError, match="anchor_prob.*diffusion_gemma.*has none"):
        prepare_model(model_args)
