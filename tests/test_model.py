"""The full model: SFT loss semantics, what trains, the real Whisper encoder, prefix length, bad inputs."""

import pytest
import torch
import torch.nn.functional as F

from conftest import EOS_ID, MASK_ID, WHISPER_TINY, needs_shared, tiny_config, tiny_decoder_config
from modeling_llada import LladaForMaskedDiffusion
from modeling_whisper_llada import WhisperLladaForConditionalGeneration


def features(batch: int, seconds: list[float]):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(batch, 80, 3000, generator=g)
    mask = torch.zeros(batch, 3000, dtype=torch.long)
    for row, s in enumerate(seconds):
        mask[row, : int(s * 100)] = 1
    return feats, mask


def test_loss_backward_trains_only_the_projector(tiny_model):
    tiny_model.train()
    feats, mask = features(2, [3.0, 7.5])
    labels = torch.tensor([[5, 6, 7, EOS_ID, EOS_ID], [8, 9, 10, 11, EOS_ID]])
    out = tiny_model(input_features=feats, attention_mask=mask, labels=labels)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    out.loss.backward()
    with_grad = {n for n, p in tiny_model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert with_grad == trainable and all(n.startswith("projector.") for n in trainable)
    assert len(trainable) == len(list(tiny_model.projector.parameters()))


def test_loss_is_the_llada_sft_loss(tiny_model):
    """Recompute the loss independently: same random draws, full forward, CE on masked answer tokens / t,
    normalised by answer length (EOS padding included) and batch; the prefix is never masked."""
    feats, mask = features(2, [2.0, 4.0])
    labels = torch.tensor([[5, 6, EOS_ID, EOS_ID], [8, 9, 10, EOS_ID]])
    torch.manual_seed(123)
    loss = tiny_model(input_features=feats, attention_mask=mask, labels=labels).loss

    prefix, prefix_mask = tiny_model.prepare_prefix(feats, mask)
    torch.manual_seed(123)
    t = torch.rand(2, 1)
    p_mask = (1 - 1e-3) * t + 1e-3
    masked = torch.rand(2, 4) < p_mask
    noisy = torch.where(masked, MASK_ID, labels)
    embeds = torch.cat((prefix, tiny_model.decoder.get_input_embeddings()(noisy)), dim=1)
    logits = tiny_model.decoder(inputs_embeds=embeds, attention_mask=torch.cat((prefix_mask, torch.ones_like(labels)), 1)).logits
    logits = logits[:, prefix.shape[1]:]
    expected = 0.0
    for row in range(2):
        ce = F.cross_entropy(logits[row][masked[row]], labels[row][masked[row]], reduction="sum")
        expected += ce / p_mask[row, 0] / labels.shape[1]
    torch.testing.assert_close(loss, expected / 2, atol=1e-5, rtol=1e-5)


def test_block_masks_follow_block_decoding():
    """answer_mask_probs with block masking: the blocks before a random block (one the answer spans) are clean, that
    block's tokens share one probability, every later token is masked; without it every token gets the sample's t."""
    from modeling_llada import answer_mask_probs

    torch.manual_seed(0)
    in_answer = torch.zeros(3, 20, dtype=torch.bool)
    for row, length in enumerate([20, 9, 1]):
        in_answer[row, :length] = True
    seen = [set(), set(), set()]
    for _ in range(200):
        probs = answer_mask_probs(in_answer, 1e-3, block_prob=1.0, block_length=4)
        for row in range(3):
            current = int((probs[row] == 0).sum()) // 4
            seen[row].add(current)
            block = probs[row, 4 * current: 4 * current + 4]
            assert (probs[row, : 4 * current] == 0).all() and (probs[row, 4 * current + 4:] == 1).all()
            assert (block == block[0]).all() and 1e-3 <= block[0] <= 1
    assert seen == [set(range(5)), {0, 1, 2}, {0}]  # every block the answer spans, and only those
    uniform = answer_mask_probs(in_answer, 1e-3)
    assert (uniform == uniform[:, :1]).all() and (uniform >= 1e-3).all()
    half = torch.stack([answer_mask_probs(in_answer, 1e-3, block_prob=0.5, block_length=4) for _ in range(300)])
    structured = (half == 0).any(-1) | (half == 1).any(-1)  # (draws, B): a block sample (or t = 1 exactly)
    assert 0.4 < structured[:, 0].float().mean() < 0.6


def test_block_masked_loss_in_training_only(tiny_model):
    """With config.block_mask_prob the training loss is LLaDA's form over block-decoding masks (CE of each masked
    token / its masking probability / answer length / batch); the eval loss stays LLaDA's uniform-masking loss."""
    from modeling_llada import answer_mask_probs

    feats, mask = features(2, [2.0, 4.0])
    labels = torch.tensor([[5, 6, EOS_ID, EOS_ID, EOS_ID, EOS_ID], [8, 9, 10, 11, 12, EOS_ID]])
    tiny_model.eval()
    torch.manual_seed(7)
    plain = tiny_model(input_features=feats, attention_mask=mask, labels=labels).loss
    tiny_model.config.update_recipe(block_mask_prob=1.0, block_mask_length=2)
    torch.manual_seed(7)
    torch.testing.assert_close(tiny_model(input_features=feats, attention_mask=mask, labels=labels).loss, plain)

    tiny_model.train()
    torch.manual_seed(11)
    loss = tiny_model(input_features=feats, attention_mask=mask, labels=labels).loss
    prefix, prefix_mask = tiny_model.prepare_prefix(feats, mask)
    torch.manual_seed(11)
    p_mask = answer_mask_probs(labels != -100, 1e-3, 1.0, 2)
    masked = torch.rand(2, 6) < p_mask
    noisy = torch.where(masked, MASK_ID, labels)
    embeds = torch.cat((prefix, tiny_model.decoder.get_input_embeddings()(noisy)), dim=1)
    full_mask = torch.cat((prefix_mask, torch.ones_like(labels)), 1)
    logits = tiny_model.decoder(inputs_embeds=embeds, attention_mask=full_mask).logits[:, prefix.shape[1]:]
    expected = sum((F.cross_entropy(logits[r][masked[r]], labels[r][masked[r]], reduction="none")
                    / p_mask[r][masked[r]]).sum() / 6 for r in range(2)) / 2
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="block_mask_prob` must be between 0.0 and 1.0"):
        tiny_config(training={"block_mask_prob": -0.1})
    with pytest.raises(ValueError, match="block_mask_length` must be >= 1"):
        tiny_config(training={"block_mask_length": 0})


def test_eos_padding_is_in_the_loss(tiny_model):
    feats, mask = features(1, [2.0])
    short = torch.tensor([[5, EOS_ID]])
    padded = torch.tensor([[5, EOS_ID, EOS_ID, EOS_ID]])
    ignored = torch.tensor([[5, EOS_ID, -100, -100]])
    torch.manual_seed(0)
    a = tiny_model(input_features=feats, attention_mask=mask, labels=padded).loss
    torch.manual_seed(0)
    b = tiny_model(input_features=feats, attention_mask=mask, labels=ignored).loss
    assert not torch.isclose(a, b)  # EOS padding contributes; -100 positions do not
    torch.manual_seed(0)
    c = tiny_model(input_features=feats, attention_mask=mask, labels=short).loss
    assert torch.isfinite(c)


def test_prefix_length_follows_audio_length(tiny_model):
    feats, mask = features(3, [5.0, 10.0, 30.0])
    speech, lengths = tiny_model.embed_speech(feats, mask)
    assert lengths.tolist() == [50, 100, 300]  # 100 mel frames/s -> 50 encoder frames/s -> 10 embeddings/s
    assert speech.shape[1] == 300
    prefix, prefix_mask = tiny_model.build_prefix(speech, lengths)
    prompt = len(tiny_model.config.prompt_prefix_ids) + len(tiny_model.config.prompt_suffix_ids)
    assert prefix_mask.sum(-1).tolist() == [50 + prompt, 100 + prompt, 300 + prompt]
    short, short_mask = tiny_model.prepare_prefix(*features(1, [5.0]))
    assert short.shape[1] == 50 + prompt  # a 5 s clip alone is not padded to 30 s


@needs_shared(WHISPER_TINY)
def test_real_whisper_tiny_encoder_loads(tmp_path):
    """The builder pulls the real encoder and a LLaDA decoder checkpoint (with its tokenizer) from their folders."""
    from transformers import WhisperModel

    from build_whisper_llada import DecoderSpec, ModelSpec, build_model
    from conftest import decoder_config_for, make_processor

    processor = make_processor()
    LladaForMaskedDiffusion(decoder_config_for(processor)).save_pretrained(tmp_path / "decoder")
    processor.tokenizer.save_pretrained(tmp_path / "decoder")
    model, built = build_model(ModelSpec(encoder=str(WHISPER_TINY), decoder=DecoderSpec(str(tmp_path / "decoder")),
                                         projector_hidden_sizes=[32, 16, 32]))
    assert model.config.prompt_prefix_ids == built.prompt_ids()[0]
    reference = WhisperModel.from_pretrained(WHISPER_TINY, dtype=torch.float32).get_encoder().state_dict()
    for name, tensor in model.encoder.state_dict().items():
        torch.testing.assert_close(tensor, reference[name])
    assert model.config.encoder_config.d_model == 384 and model.config.checkpoint_weights == "trainable"
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert not any(p.requires_grad for p in model.decoder.parameters())
    feats, mask = features(2, [4.0, 9.0])
    _, lengths = model.embed_speech(feats, mask)
    assert lengths.tolist() == [40, 90]


@pytest.mark.parametrize(
    "make, message",
    [(lambda: torch.zeros(1, 80, 3000, dtype=torch.long), "floating-point"),
     (lambda: torch.zeros(1, 80, 1000), r"shape \(batch, 80, 3000\)"),
     (lambda: torch.zeros(80, 3000), r"shape \(batch, 80, 3000\)"),
     (lambda: torch.full((1, 80, 3000), float("nan")), "NaN")],
)
def test_bad_input_features(tiny_model, make, message):
    with pytest.raises(ValueError, match=message):
        tiny_model.generate(input_features=make())


def test_bad_prefix_and_label_inputs(tiny_model):
    with pytest.raises(ValueError, match="inputs_embeds must have shape"):
        tiny_model.generate(inputs_embeds=torch.zeros(1, 5, 7))
    with pytest.raises(ValueError, match="not both"):
        tiny_model.generate(input_features=torch.zeros(1, 80, 3000), inputs_embeds=torch.zeros(1, 5, 32))
    with pytest.raises(ValueError, match="needs `labels`"):
        tiny_model(input_features=torch.zeros(1, 80, 3000))
    bare = WhisperLladaForConditionalGeneration(tiny_config(prompt_prefix_ids=None))
    with pytest.raises(ValueError, match="prompt_prefix_ids"):
        bare.generate(input_features=torch.zeros(1, 80, 3000))


def test_auxiliary_ctc_loss_reads_speech_embeddings_as_tokens():
    """ctc_weight > 0 adds CTC(speech @ token embeddings^T, transcript up to EOS) to the diffusion loss, with the
    same random masks otherwise; speech embeddings that spell the transcript get a far lower CTC loss."""
    torch.manual_seed(0)
    plain = WhisperLladaForConditionalGeneration(tiny_config()).eval()
    torch.manual_seed(0)
    with_ctc = WhisperLladaForConditionalGeneration(tiny_config(ctc_blank_id=59, training={"ctc_weight": 0.5})).eval()
    feats, mask = features(2, [3.0, 7.5])
    labels = torch.tensor([[5, 6, 7, EOS_ID, EOS_ID], [8, 9, 10, 11, EOS_ID]])
    torch.manual_seed(7)
    base = plain(input_features=feats, attention_mask=mask, labels=labels).loss
    torch.manual_seed(7)
    total = with_ctc(input_features=feats, attention_mask=mask, labels=labels).loss
    states, lengths = with_ctc.project_speech(feats, mask)
    ctc = with_ctc._speech_ctc_loss(states, lengths, labels)
    torch.testing.assert_close(total, base + 0.5 * ctc)
    total.backward()
    assert with_ctc.projector.mlp[0].weight.grad.abs().sum() > 0

    table = with_ctc.decoder.get_input_embeddings().weight.detach()
    spelled = torch.zeros(1, 12, table.shape[1])
    for i, token in enumerate([5, 59, 6, 59, 7, 59]):  # the transcript with blanks between
        spelled[0, 2 * i : 2 * i + 2] = 300 * table[token] / table[token].norm()
    good = with_ctc._speech_ctc_loss(spelled, torch.tensor([12]), labels[:1])
    shuffled = with_ctc._speech_ctc_loss(spelled.flip(1), torch.tensor([12]), labels[:1])
    assert good < 0.5 * shuffled
    with pytest.raises(ValueError, match="ctc_blank_id"):
        tiny_config(training={"ctc_weight": 1.0})


def test_ctc_over_a_subset_of_tokens_is_the_ctc_of_that_submatrix():
    """config.ctc_token_ids: the speech embeddings are scored against those tokens' embeddings only (class k = the k-th
    id), targets are mapped to class indices and tokens outside the set are left out; bad sets are clear errors."""
    ids = [5, 6, 7, 9, 59]
    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(tiny_config(ctc_blank_id=59, ctc_token_ids=ids, training={"ctc_weight": 1.0})).eval()
    assert model.ctc_class_ids().tolist() == ids
    feats, mask = features(2, [3.0, 7.5])
    labels = torch.tensor([[5, 6, 7, EOS_ID, EOS_ID], [9, 8, 5, 11, EOS_ID]])  # 8 and 11 are no class
    speech, lengths = model.embed_speech(feats, mask)
    table = model.decoder.get_input_embeddings().weight[ids]
    log_probs = torch.log_softmax((speech @ table.T).float(), -1)
    expected = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), torch.tensor([0, 1, 2, 3, 0]), lengths,
                                            torch.tensor([3, 2]), blank=4, reduction="mean", zero_infinity=True)
    torch.testing.assert_close(model._speech_ctc_loss(speech, lengths, labels), expected)
    assert model.speech_token_logits(speech).shape == (*speech.shape[:2], len(ids))
    with pytest.raises(ValueError, match=r"must hold the CTC blank \(59\)"):
        tiny_config(ctc_blank_id=59, ctc_token_ids=[5, 6])
    with pytest.raises(ValueError, match="ctc_token_ids"):
        tiny_config(ctc_blank_id=59, ctc_token_ids="5,59")
    assert tiny_config(ctc_blank_id=59, ctc_token_ids=[59, 5, 5]).ctc_token_ids == [5, 59]


def test_token_mixture_speech_embeddings_are_ctc_expected_token_embeddings():
    """speech_embeddings="token_mixture": the decoder reads softmax(CTC scores of the projector output) @ the classes'
    token embeddings, so a confidently read output is exactly that token's embedding; the CTC loss still reads the
    projector outputs, and the decoder's loss reaches the projector through the mixture."""
    ids = [5, 6, 7, 59]
    torch.manual_seed(0)
    model = WhisperLladaForConditionalGeneration(tiny_config(ctc_blank_id=59, ctc_token_ids=ids,
                                                             speech_embeddings="token_mixture",
                                                             training={"ctc_weight": 1.0}))
    feats, mask = features(2, [3.0, 7.5])
    states, lengths = model.project_speech(feats, mask)
    table = model.decoder.get_input_embeddings().weight[ids]
    expected = torch.softmax((states @ table.T).float(), -1) @ table
    speech, same_lengths = model.embed_speech(feats, mask)
    torch.testing.assert_close(speech, expected)
    assert torch.equal(lengths, same_lengths)
    confident = 1e3 * table[None, [2]]  # scored far above every other class as token 7
    torch.testing.assert_close(model.speech_embeddings_from(confident), table[None, [2]])
    labels = torch.tensor([[5, 6, 7, EOS_ID, EOS_ID], [6, 7, EOS_ID, EOS_ID, EOS_ID]])
    model.config.update_recipe(ctc_weight=0.0)  # the decoder's loss alone still trains the projector (mixture)
    model(input_features=feats, attention_mask=mask, labels=labels).loss.backward()
    assert model.projector.mlp[0].weight.grad.abs().sum() > 0
    plain = WhisperLladaForConditionalGeneration(tiny_config())
    torch.testing.assert_close(plain.embed_speech(feats, mask)[0], plain.project_speech(feats, mask)[0])
    with pytest.raises(ValueError, match="speech_embeddings` must be one of"):
        tiny_config(speech_embeddings="tokens", ctc_blank_id=59)
    with pytest.raises(ValueError, match="token_mixture.*needs|reads the CTC head"):
        tiny_config(speech_embeddings="token_mixture")


def test_spec_augment_masks_spans_of_encoder_frames_in_training_only():
    """SpecAugment settings zero about mask_time_prob of each audio's encoder frames, in spans inside the audio, and
    channel spans; in eval mode (decoding) the model is unchanged; bad settings are clear errors."""
    from configuration_whisper_llada import TrainingRecipe
    from modeling_projector import spans_mask, spec_augment

    torch.manual_seed(0)
    lengths = torch.tensor([400, 100, 0, 4])
    mask = spans_mask(lengths.repeat(200), 500, 0.3, 10).view(200, 4, 500)
    assert not mask[:, 0, 400:].any() and not mask[:, 1, 100:].any() and not mask[:, 2].any()
    assert not mask[:, 3, 4:].any()  # a span longer than the audio stops at its end
    coverage = mask[:, 0, :400].float().mean()
    assert 0.2 < coverage < 0.3  # 0.3 * 400 / 10 = 12 spans of 10 frames, overlaps allowed
    runs = torch.diff(mask[0, 0].long(), prepend=torch.zeros(1, dtype=torch.long))
    assert (runs == 1).sum() <= 12  # at most 12 span starts

    frames = torch.ones(2, 40, 16)
    out = spec_augment(frames, torch.tensor([40, 20]), TrainingRecipe(mask_time_prob=0.5, mask_time_length=4))
    assert (out[1, 20:] == 1).all() and (out[:, :20] == 0).all(-1).any(-1).all()  # whole frames zeroed
    out = spec_augment(frames, torch.tensor([40, 20]), TrainingRecipe(mask_feature_prob=0.25, mask_feature_length=2))
    zero_channels = (out == 0).all(1)  # (B, channels) zeroed at every frame
    assert zero_channels.any(-1).all() and not zero_channels.all() and ((out == 0) == zero_channels[:, None]).all()

    config = tiny_config(training={"mask_time_prob": 0.5, "mask_time_length": 4, "mask_feature_prob": 0.25,
                                   "mask_feature_length": 2})

    model = WhisperLladaForConditionalGeneration(config).eval()
    feats, attention = features(2, [3.0, 7.5])
    speech, _ = model.embed_speech(feats, attention)
    torch.testing.assert_close(model.embed_speech(feats, attention)[0], speech)
    model.train()
    assert not torch.allclose(model.embed_speech(feats, attention)[0], speech)
    model.config.update_recipe(mask_time_prob=0.0, mask_feature_prob=0.0)
    torch.testing.assert_close(model.embed_speech(feats, attention)[0], speech)
    with pytest.raises(ValueError, match="mask_time_prob` must be between 0.0 and 1.0"):
        tiny_config(training={"mask_time_prob": 1.5})
    with pytest.raises(ValueError, match="mask_feature_length"):
        tiny_config(training={"mask_feature_length": 0})


def test_decoder_dropout_follows_the_official_config_fields():
    """residual_dropout / attention_dropout / embedding_dropout (LLaDA's config fields, 0 in LLaDA-8B) act in training
    only: in eval mode the logits equal those of the same weights without dropout."""
    torch.manual_seed(0)
    plain = LladaForMaskedDiffusion(tiny_decoder_config())
    dropped = LladaForMaskedDiffusion(tiny_decoder_config(residual_dropout=0.3, attention_dropout=0.3,
                                                          embedding_dropout=0.3))
    dropped.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 50, (2, 12))
    expected = plain.eval()(input_ids=ids).logits
    torch.testing.assert_close(dropped.eval()(input_ids=ids).logits, expected)
    dropped.train()
    torch.manual_seed(1)
    first = dropped(input_ids=ids).logits
    assert not torch.allclose(first, expected)
    torch.manual_seed(1)
    torch.testing.assert_close(dropped(input_ids=ids).logits, first)
