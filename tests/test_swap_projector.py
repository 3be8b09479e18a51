"""tools/swap_projector.py, the step that pairs the demo model's decoder with its CTC warm-up's projector."""
import importlib.util

import pytest
import torch

from conftest import needs_whisper_tokenizer, ROOT, make_tiny_asr_model


def _tool():
    spec = importlib.util.spec_from_file_location("swap_projector", ROOT / "tools" / "swap_projector.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _save(model, processor, path):
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return str(path)


@needs_whisper_tokenizer
def test_the_projector_moves_and_everything_else_stays(processor, tmp_path):
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model = make_tiny_asr_model(processor, steps=2)
    donor = make_tiny_asr_model(processor)
    with torch.no_grad():
        for param in donor.parameters():
            param.add_(torch.randn_like(param))
    _tool().swap_projector(_save(model, processor, tmp_path / "model"), _save(donor, processor, tmp_path / "donor"),
                           str(tmp_path / "out"))
    out = WhisperLladaForConditionalGeneration.from_pretrained(tmp_path / "out")
    for name, tensor in out.state_dict().items():
        source = donor if name.startswith("projector.") else model
        assert torch.equal(tensor, source.state_dict()[name]), name
    assert any(name.startswith("projector.") for name in out.state_dict())
    assert out.generation_config.steps == 2 and (tmp_path / "out" / "tokenizer.json").exists()


@needs_whisper_tokenizer
def test_a_donor_that_reads_speech_differently_is_refused_before_anything_is_written(processor, tmp_path):
    from modeling_whisper_llada import WhisperLladaForConditionalGeneration

    model = make_tiny_asr_model(processor)
    config = model.config.to_dict()
    config["projector_hidden_sizes"] = [8]
    donor = WhisperLladaForConditionalGeneration(type(model.config).from_dict(config))
    with pytest.raises(SystemExit, match=r"donor: config.projector_hidden_sizes is \[8\], .* has \[24, 16, 24\]"):
        _tool().swap_projector(_save(model, processor, tmp_path / "model"), _save(donor, processor, tmp_path / "donor"),
                               str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
