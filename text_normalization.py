"""Text normalisation and WER for evaluating whisper-llada.

References and hypotheses are normalised with Whisper's English text normaliser
(`transformers.models.whisper.english_normalizer.EnglishTextNormalizer`) and its spelling map
(`assets/normalizer.json`, shipped with this repository), then scored with jiwer. This is the usual protocol for
LibriSpeech results of Whisper-based models: case, punctuation, number formats and British/American spellings
do not count as errors.

Not part of the remote-code package: it is used by `eval_hf.py` (and can be by training scripts).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

NORMALIZER_FILE = Path(__file__).resolve().parent / "assets" / "normalizer.json"


@functools.lru_cache(maxsize=4)
def _english_normalizer(spelling_file: str):
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    if not os.path.isfile(spelling_file):
        raise FileNotFoundError(
            f"{spelling_file}: Whisper's English spelling map is missing (it ships with this repository as "
            "assets/normalizer.json)."
        )
    with open(spelling_file, encoding="utf-8") as handle:
        return EnglishTextNormalizer(json.load(handle))


def normalize_text(text: str, spelling_file: str | os.PathLike = NORMALIZER_FILE) -> str:
    """Whisper's English normalisation: lower case, no punctuation, standardised numbers and spellings.

    >>> normalize_text("Hello, World!")
    'hello world'
    """
    return _english_normalizer(os.fspath(spelling_file))(text)


def word_error_counts(references: Iterable[str], hypotheses: Iterable[str]) -> dict[str, int]:
    """Edit counts of already-normalised texts (corpus level). Pairs whose reference is empty are left out (WER is
    undefined for them) and counted under "empty_references"."""
    import jiwer

    refs, hyps, empty = [], [], 0
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        if not reference.strip():
            empty += 1
            continue
        refs.append(reference)
        hyps.append(hypothesis)
    counts = {"substitutions": 0, "deletions": 0, "insertions": 0, "reference_words": 0, "empty_references": empty}
    if refs:
        out = jiwer.process_words(refs, hyps)
        counts.update(substitutions=out.substitutions, deletions=out.deletions, insertions=out.insertions,
                      reference_words=out.hits + out.substitutions + out.deletions)
    return counts


def wer_percent(references: Iterable[str], hypotheses: Iterable[str], normalize: bool = True) -> float:
    """Corpus-level WER in percent: (S + D + I) / reference words * 100, after Whisper's English normalisation
    (unless `normalize=False`). Raises ValueError when no reference has a word.

    >>> wer_percent(["Hello, World!"], ["hello world"])
    0.0
    """
    references, hypotheses = list(references), list(hypotheses)
    if normalize:
        references = [normalize_text(text) for text in references]
        hypotheses = [normalize_text(text) for text in hypotheses]
    counts = word_error_counts(references, hypotheses)
    if not counts["reference_words"]:
        raise ValueError("WER is undefined: no reference has any word after normalisation.")
    errors = counts["substitutions"] + counts["deletions"] + counts["insertions"]
    return 100.0 * errors / counts["reference_words"]


__all__ = ["NORMALIZER_FILE", "normalize_text", "word_error_counts", "wer_percent"]
