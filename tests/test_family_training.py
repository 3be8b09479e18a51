"""tools/family_tiny_training.py's pieces on each decoder family: a tiny decoder trained from scratch (with the
projector) on one bundled demo clip with the family's own loss, through the speech model: the loss falls within 30
steps. (The tool itself trains for minutes on all 15 clips and reads them back with the family's sampler.)"""

import itertools
import sys

import pytest
import torch

from conftest import ROOT
from family_checkpoints import FAMILY_NAMES, demo_clips, write_family_checkpoint, write_whisper_encoder

sys.path.insert(0, str(ROOT / "tools"))
from family_tiny_training import batch_of, encode_clips, training_steps, word_recovery  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    return write_whisper_encoder(tmp_path_factory.mktemp("whisper-tiny-random"))


def fixed_loss(model, items) -> float:
    """The loss of `items` under the same random draws (seed 0), in evaluation mode."""
    model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        return float(model(**batch_of(items, model.config.eos_token_id)).loss)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_the_family_loss_falls_when_a_tiny_decoder_trains_on_one_clip(family, encoder_dir, tmp_path):
    from build_whisper_llada import DecoderSpec, ModelSpec, build_model

    checkpoint = write_family_checkpoint(family, tmp_path / family)
    torch.manual_seed(0)
    model, processor = build_model(ModelSpec(encoder=str(encoder_dir), decoder=DecoderSpec(str(checkpoint)),
                                             projector_hidden_sizes=[32], train_decoder=True))
    assert all(p.requires_grad for p in model.decoder.parameters())
    items = encode_clips(model, processor, demo_clips()[:1])
    before = fixed_loss(model, items)
    losses = list(itertools.islice(training_steps(model, items, lr=3e-3, batch_size=1, warmup=5), 30))
    after = fixed_loss(model, items)
    assert all(map(lambda x: x == x, losses))  # finite
    assert after < 0.6 * before, (family, before, after, losses[::5])


def test_word_recovery_counts_each_reference_word_as_often_as_the_hypothesis_has_it():
    assert word_recovery("knit one knit two", "knit two two") == 0.5
    assert word_recovery("a b", "") == 0.0 and word_recovery("a b", "b a c") == 1.0
