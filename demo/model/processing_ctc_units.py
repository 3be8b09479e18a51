"""CTC units: a small set of the decoder's own tokens that can spell every word, and the segmentation of text into them.

A CTC head whose classes are the decoder's whole vocabulary, or every token of a small training set's transcripts, has
thousands of classes seen once or twice, and cannot write a word whose token it never saw. A unit set is a few hundred
to a few thousand of the decoder's tokens: every character of the alphabet, with and without the word-start marker, so
that any word can be spelled, and the most frequent tokens of the training text. Each unit is seen many times.

A text is segmented piece by piece (the tokenizer's own pre-tokenization: words with their leading space): a piece
keeps the tokenizer's own tokens when they are all units, and is otherwise spelled with the fewest units (the longer
units first on ties). Segmentation depends only on the tokenizer and the unit ids, so a checkpoint stores the ids. The
units are decoder tokens: a unit sequence decodes to its text with the tokenizer, exactly, and the decoder reads and
writes them like any other token.

    units = CTCUnits.choose(tokenizer, training_texts, size=512)
    ids = units.segment("knitting needles")          # unit ids; tokenizer.decode(ids) == "knitting needles"
"""

from __future__ import annotations

import collections
import string
from typing import Iterable

# Characters every unit set can spell, with and without the word-start marker (the training text's own are added).
DEFAULT_ALPHABET = string.ascii_lowercase + "'"


class UnspellableError(ValueError):
    """A text holds a character that no unit (nor unit sequence) can write."""


class CTCUnits:
    """A set of decoder token ids used as CTC classes and as the spelling of answers.

    Args:
        tokenizer: the decoder's fast tokenizer (its pre-tokenizer and BPE model segment text; its vocabulary names
            the units).
        unit_ids: the units' token ids.
    """

    def __init__(self, tokenizer, unit_ids: Iterable[int]):
        self.tokenizer = tokenizer
        self.ids = sorted({int(i) for i in unit_ids})
        if not self.ids:
            raise ValueError("CTCUnits: the unit set is empty.")
        strings = tokenizer.convert_ids_to_tokens(self.ids)
        missing = [i for i, s in zip(self.ids, strings) if s is None]
        if missing:
            raise ValueError(f"CTCUnits: ids {missing[:8]} are not in the tokenizer's vocabulary.")
        self.string_to_id = dict(zip(strings, self.ids))
        self.ids_to_string = dict(zip(self.ids, strings))
        self.longest = max(len(s) for s in strings)
        self._id_set = set(self.ids)
        self._pieces: dict[str, tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, token_id: int) -> bool:
        return int(token_id) in self._id_set

    # -- segmentation ------------------------------------------------------------------------------------------------

    def pieces(self, text: str) -> list[str]:
        """The tokenizer's pre-tokenized pieces of `text` (byte-level: words with a leading "Ġ")."""
        return pre_tokenize(self.tokenizer, text)

    def segment(self, text: str, skip_unspellable: bool = False) -> list[int]:
        """Unit ids that spell `text` (`tokenizer.decode` gives `text` back). A character no unit can write raises
        `UnspellableError` naming it, or is left out with `skip_unspellable`."""
        return [i for piece in self.pieces(text) for i in self.segment_piece(piece, skip_unspellable)]

    def segment_piece(self, piece: str, skip_unspellable: bool = False) -> tuple[int, ...]:
        """One pre-tokenized piece: the tokenizer's own tokens when all are units, else the fewest units."""
        cached = self._pieces.get(piece)
        if cached is not None:
            return cached
        own = canonical_ids(self.tokenizer, piece)
        ids = tuple(own) if own and all(i in self._id_set for i in own) else self._spell(piece, skip_unspellable)
        if len(self._pieces) < 200_000:
            self._pieces[piece] = ids
        return ids

    def _spell(self, piece: str, skip_unspellable: bool) -> tuple[int, ...]:
        """Fewest units covering `piece` (dynamic programming from its end; on ties the longest first unit)."""
        n = len(piece)
        best: list[tuple[int, ...] | None] = [None] * (n + 1)  # best[i]: the units spelling piece[i:]
        best[n] = ()
        for start in range(n - 1, -1, -1):
            options = [(len(best[end]), start - end, end) for end in range(start + 1, min(n, start + self.longest) + 1)
                       if best[end] is not None and piece[start:end] in self.string_to_id]
            if options:
                _, _, end = min(options)
                best[start] = (self.string_to_id[piece[start:end]],) + best[end]
            elif skip_unspellable:
                best[start] = best[start + 1]  # the character at `start` is left out
        if best[0] is None:
            word = self.tokenizer.convert_tokens_to_string([piece]).strip()
            bad = next((c for c in word if not all(p in self.string_to_id for p in pre_tokenize(self.tokenizer, c))),
                       word)
            raise UnspellableError(
                f"CTC units cannot spell {word!r}: no unit writes {bad!r} (a unit set spells the characters of "
                f"{DEFAULT_ALPHABET!r} and of the text it was chosen from).")
        return best[0]

    # -- choosing a unit set -----------------------------------------------------------------------------------------

    @classmethod
    def choose(cls, tokenizer, texts: Iterable[str], size: int, alphabet: str = DEFAULT_ALPHABET,
               exclude_ids: Iterable[int] = (), prune: float = 0.15) -> "CTCUnits":
        """`size` units for `texts`: every character of `alphabet` and of the texts, with and without the word-start
        marker (what spelling any word needs), then the tokens the texts are best spelled with. It starts from every
        vocabulary token that occurs inside a piece of the texts and, round by round, drops the `prune` share of the
        units the segmentation uses least (as unigram tokenizers prune their vocabulary), so that the units left
        are the ones the texts are spelled with, each seen as often as possible."""
        counts: collections.Counter = collections.Counter()
        for text in texts:
            counts.update(pre_tokenize(tokenizer, text))
        if not counts:
            raise ValueError("CTCUnits.choose: no text to choose units from.")
        characters = sorted(set(alphabet) | {c for piece in counts for c in tokenizer.convert_tokens_to_string([piece])
                                             if not c.isspace()})
        exclude = {int(i) for i in exclude_ids} | set(getattr(tokenizer, "all_special_ids", []))
        base = spelling_ids(tokenizer, characters) - exclude
        if size < len(base):
            raise ValueError(f"CTCUnits.choose: size {size} is below the {len(base)} units needed to spell every word "
                             f"(the characters {''.join(characters)!r} with and without the word-start marker).")
        vocab = tokenizer.get_vocab()
        longest = max(len(token) for token in vocab)
        candidates = set(base)
        for piece in counts:
            for start in range(len(piece)):
                for end in range(start + 1, min(len(piece), start + longest) + 1):
                    token_id = vocab.get(piece[start:end])
                    if token_id is not None and token_id not in exclude:
                        candidates.add(token_id)
        units = cls(tokenizer, candidates)
        while len(units) > size:
            usage: collections.Counter = collections.Counter()
            for piece, n in counts.items():
                for token_id in units.segment_piece(piece):
                    usage[token_id] += n
            removable = sorted((usage[i], -len(units.ids_to_string[i]), i) for i in units.ids if i not in base)
            drop = {i for _, _, i in removable[: max(1, min(len(units) - size, int(prune * len(removable))))]}
            units = cls(tokenizer, [i for i in units.ids if i not in drop])
        return units

    def usage(self, texts: Iterable[str]) -> collections.Counter:
        """How often each unit occurs in the segmentation of `texts`."""
        counts: collections.Counter = collections.Counter()
        for text in texts:
            counts.update(self.segment(text, skip_unspellable=True))
        return counts


def pre_tokenize(tokenizer, text: str) -> list[str]:
    """`text` normalised and pre-tokenized as the tokenizer does it, before its BPE model."""
    backend = tokenizer.backend_tokenizer
    if backend.normalizer is not None:
        text = backend.normalizer.normalize_str(text)
    if backend.pre_tokenizer is None:
        return [text] if text else []
    return [piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text)]


def canonical_ids(tokenizer, piece: str) -> list[int]:
    """The tokenizer's own token ids for one pre-tokenized piece."""
    return [token.id for token in tokenizer.backend_tokenizer.model.tokenize(piece)]


def spelling_ids(tokenizer, characters: Iterable[str]) -> set[int]:
    """Token ids of each character on its own and at a word's start (with its leading space), and of the bare
    word-start marker, where the vocabulary has them."""
    ids = set()
    for text in [" "] + [f"{prefix}{c}" for c in characters for prefix in ("", " ")]:
        for piece in pre_tokenize(tokenizer, text):
            token_id = tokenizer.convert_tokens_to_ids(piece)
            if token_id is not None and token_id != tokenizer.unk_token_id:
                ids.add(int(token_id))
            else:  # e.g. a multi-byte character: its bytes' own tokens
                ids.update(canonical_ids(tokenizer, piece))
    return ids


__all__ = ["CTCUnits", "UnspellableError", "DEFAULT_ALPHABET", "pre_tokenize", "canonical_ids", "spelling_ids"]
