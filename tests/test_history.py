"""generate(..., return_dict_in_generate=True, output_history=True): the sampler's state after every step and the
confidence of each commit, for every decoding (A/B/C/D) and option (kv_cache, threshold, early_stop)."""

import pytest
import torch

from conftest import EOS_ID, MASK_ID, synthetic_speech, tiny_whisper_llada
from generation_llada import anchored_answer, num_transfer_schedule

BLANK_ID = 59
SECONDS = (2.0, 5.0, 3.0)  # three clips -> speech prefixes of three lengths (left-padded in a batch)

# (decoding, settings): every preset with the options that change the loop (cache, early finish, early stop)
RUNS = [
    ("A", {}),
    ("B", {}),
    ("C", {}),
    ("B", {"kv_cache": "prefix"}),
    ("B", {"kv_cache": "dual"}),
    ("C", {"kv_cache": "dual"}),
    ("B", {"threshold": 0.6}),
    ("C", {"threshold": 0.6}),
    ("B", {"early_stop": True}),
    ("C", {"early_stop": True, "kv_cache": "prefix"}),
    ("D", {}),
    ("D", {"anchor_threshold": 0.0}),
    ("D", {"steps": 4, "threshold": 0.6, "kv_cache": "dual"}),
    ("D", {"early_stop": True}),
    ("D", {"anchor_threshold": 0.0, "anchor_slack": 0}),
]
EARLY_STOP_RUNS = [run for run in RUNS if run[1].get("early_stop")]
EXACT_STATE_RUNS = [run for run in RUNS if not run[1].get("early_stop")]


def run_ids(runs) -> list[str]:
    """Test ids such as "C,kv_cache=dual"."""
    return [decoding + "".join(f",{k}={v}" for k, v in settings.items()) for decoding, settings in runs]


@pytest.fixture(scope="module")
def ctc_model():
    """A tiny random speech model with a CTC head (so that D runs). Its decoder and projector weights are drawn with
    std 0.5 instead of 0.02, so that predictions differ from position to position and confidences spread over
    (0.1, 1) rather than tying near 1/64; EOS is made likelier so that early stop has something to stop on."""
    torch.manual_seed(0)
    model = tiny_whisper_llada(ctc_blank_id=BLANK_ID)
    with torch.no_grad():
        for weight in [*model.decoder.parameters(), *model.projector.parameters()]:
            if weight.dim() > 1:
                weight.normal_(0.0, 0.5)
        model.decoder.model.transformer.ff_out.weight[EOS_ID] *= 2.0
    return model


@pytest.fixture(scope="module")
def clips():
    """Log-mel features of the SECONDS clips: the batch, and each clip alone."""
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80)
    waves = [synthetic_speech(s, seed=i, amplitude=0.0, noise=0.1) for i, s in enumerate(SECONDS)]

    def features(batch):
        out = extractor(batch, sampling_rate=16000, return_attention_mask=True, return_tensors="pt")
        return {"input_features": out.input_features, "attention_mask": out.attention_mask}

    return features(waves), [features([wave]) for wave in waves]


def run_with_history(model, inputs, decoding, settings):
    """generate with history, and the number of decoder forwards it ran (one per sampler step)."""
    forwards = []
    hook = model.decoder.register_forward_hook(lambda *args: forwards.append(1))
    try:
        out = model.generate(**inputs, decoding=decoding, return_dict_in_generate=True, output_history=True, **settings)
    finally:
        hook.remove()
    return out, len(forwards)


def committed_at_each_step(history: torch.Tensor) -> torch.Tensor:
    """(B, S + 1, G) bool: positions that went from [MASK] to a token at each step (none at state 0)."""
    was_masked = torch.cat((torch.zeros_like(history[:, :1], dtype=torch.bool), history[:, :-1] == MASK_ID), dim=1)
    return was_masked & (history != MASK_ID)


def eos_filled(history: torch.Tensor) -> torch.Tensor:
    """(B, S + 1, G) bool: positions after the first EOS of their state (early stop makes them EOS)."""
    return ((history == EOS_ID).long().cumsum(-1) - (history == EOS_ID).long()) > 0


def check_history(out, steps_run: int, early_stop: bool) -> None:
    """The invariants of every history: S + 1 states, [MASK]s never come back, the last state is the answer, each
    commit has its confidence in [0, 1] and nothing else has one."""
    history, confidences = out.history, out.confidences
    batch, gen_length = out.sequences.shape
    assert history.shape == confidences.shape == (batch, steps_run + 1, gen_length)
    assert confidences.dtype.is_floating_point
    masked = history == MASK_ID
    assert not (masked[:, 1:] & ~masked[:, :-1]).any(), "a position was masked again"
    assert torch.equal(history[:, -1], out.sequences.cpu())
    assert confidences[:, 0].isnan().all()
    committed = committed_at_each_step(history)
    has_confidence = ~confidences.isnan()
    if early_stop:  # the EOS fill after a committed EOS is no prediction: it has no confidence
        assert not (has_confidence & ~committed).any()
        assert (history[committed & ~has_confidence] == EOS_ID).all()
    else:
        assert torch.equal(has_confidence, committed)
        kept = ~masked[:, :-1]
        assert torch.equal(history[:, 1:][kept], history[:, :-1][kept]), "a committed token changed"
    assert ((confidences[has_confidence] >= 0) & (confidences[has_confidence] <= 1)).all()


def expected_start(model, inputs, decoding, settings) -> torch.Tensor:
    """State 0: all [MASK] for A/B/C; for D the CTC hypothesis with its uncertain tokens masked (`anchored_answer`)."""
    config = model.resolve_decoding(decoding, **settings)
    if decoding != "D":
        return torch.full((inputs["input_features"].shape[0], config.gen_length), MASK_ID)
    states, lengths = model.project_speech(inputs["input_features"], inputs["attention_mask"])
    return anchored_answer(*model.ctc_hypotheses(states, lengths), config)


def without_idle_steps(history: torch.Tensor, confidences: torch.Tensor):
    """One row's history without the steps that left it unchanged (in a batch a row waits while others finish)."""
    keep = [0] + [s for s in range(1, history.shape[0])
                  if not torch.equal(history[s], history[s - 1]) or not confidences[s].isnan().all()]
    return history[keep], confidences[keep]


@pytest.mark.parametrize("decoding, settings", RUNS, ids=run_ids(RUNS))
def test_history_invariants(ctc_model, clips, decoding, settings):
    batch, _ = clips
    out, steps_run = run_with_history(ctc_model, batch, decoding, settings)
    check_history(out, steps_run, settings.get("early_stop", False))
    if settings.get("early_stop"):  # the test model commits EOS, so early stop has something to stop on
        assert (out.sequences == EOS_ID).any()
    assert torch.equal(out.history[:, 0], expected_start(ctc_model, batch, decoding, settings))
    config = ctc_model.resolve_decoding(decoding, **settings)
    if not config.may_finish_blocks_early:  # the exact sampler runs every scheduled step that commits something
        per_block = num_transfer_schedule(config.block_length, config.steps_per_block)
        assert steps_run == config.num_blocks * sum(n > 0 for n in per_block)


@pytest.mark.parametrize("decoding, settings", RUNS, ids=run_ids(RUNS))
def test_history_does_not_change_the_tokens(ctc_model, clips, decoding, settings):
    batch, _ = clips
    plain = ctc_model.generate(**batch, decoding=decoding, **settings)
    as_dict = ctc_model.generate(**batch, decoding=decoding, return_dict_in_generate=True, **settings)
    with_history = ctc_model.generate(**batch, decoding=decoding, return_dict_in_generate=True, output_history=True,
                                      **settings)
    assert as_dict.history is None and as_dict.confidences is None
    assert torch.equal(as_dict.sequences, plain) and torch.equal(with_history.sequences, plain)


def check_batched_equals_one_by_one(model, clips, decoding, settings) -> None:
    """Each row's history in a batch of mixed-length prefixes is its history alone, once the steps it waited for
    other rows are left out (the exact sampler has no such steps: there the histories are equal as they are)."""
    batch, alone = clips
    together, _ = run_with_history(model, batch, decoding, settings)
    exact = not model.resolve_decoding(decoding, **settings).may_finish_blocks_early
    for row, inputs in enumerate(alone):
        single, _ = run_with_history(model, inputs, decoding, settings)
        if exact:
            assert torch.equal(together.history[row], single.history[0])
            torch.testing.assert_close(together.confidences[row], single.confidences[0], equal_nan=True)
        else:
            history, confidences = without_idle_steps(together.history[row], together.confidences[row])
            expected_history, expected_confidences = without_idle_steps(single.history[0], single.confidences[0])
            assert torch.equal(history, expected_history), f"row {row}"
            torch.testing.assert_close(confidences, expected_confidences, equal_nan=True)


@pytest.mark.parametrize("decoding, settings", EXACT_STATE_RUNS, ids=run_ids(EXACT_STATE_RUNS))
def test_batched_history_equals_one_by_one(ctc_model, clips, decoding, settings):
    check_batched_equals_one_by_one(ctc_model, clips, decoding, settings)


@pytest.mark.parametrize("decoding, settings", EARLY_STOP_RUNS, ids=run_ids(EARLY_STOP_RUNS))
def test_early_stop_history_shows_the_eos_fill_at_its_step(ctc_model, clips, decoding, settings):
    """With early stop, the state after a step that commits an EOS is already EOS after it (the fill is part of that
    step), and a batch's histories equal the one-by-one ones."""
    batch, _ = clips
    out, _ = run_with_history(ctc_model, batch, decoding, settings)
    after_eos = eos_filled(out.history[:, 1:])
    assert (out.history[:, 1:][after_eos] == EOS_ID).all(), "a state shows tokens after a committed EOS"
    check_batched_equals_one_by_one(ctc_model, clips, decoding, settings)
