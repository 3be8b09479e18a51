"""CTC forced alignment: where each token of a transcript sits in the speech, read off the CTC head's frame scores.

Any transcript (whatever decoding wrote it: A, B, C, D, CTC, or a first pass from another recogniser) is aligned to the
CTC head's log-posteriors (S speech embeddings x K classes) by the Viterbi path through CTC's topology (blank, t1,
blank, t2, ..., blank; a token may repeat over frames, a blank may separate anything, two equal tokens must be
separated by a blank). Each token gets the frames of its run on that path and a confidence, the highest posterior of
its class among them: for the greedy CTC reading this path is the greedy one, so the spans and confidences equal the
reading's own.

Speech embedding s covers encoder frames [s k, (s + 1) k) (k = stack_factor) of 20 ms each, so its time is
s * k * 0.02 s (0.1 s for Whisper with k = 5). Words are groups of tokens that start with a word-start marker (a
leading space when decoded); a word spans from its first token's first frame to the frame before the next word's
first token (or its last token's last frame + 1 for the last word), since CTC marks a token at its onset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ENCODER_FRAME_SECONDS = 0.02  # Whisper: 100 mel frames/s, stride-2 convolution -> 50 encoder frames/s


@dataclass
class TokenSpan:
    """A token's place in the speech: speech-embedding indices [start, end) and its confidence there."""

    start: int
    end: int
    confidence: float


def forced_align(log_probs: torch.Tensor, targets: list[int], blank: int) -> list[TokenSpan] | None:
    """The Viterbi CTC alignment of `targets` (class indices) to `log_probs` (T, K): one `TokenSpan` per target, or
    None when the targets cannot fit in T frames (a target sequence needs a frame per token plus one between equal
    neighbours)."""
    T = log_probs.shape[0]
    U = len(targets)
    if U == 0:
        return []
    if U + sum(a == b for a, b in zip(targets, targets[1:])) > T:
        return None
    log_probs = log_probs.detach().float().cpu()
    labels = torch.full((2 * U + 1,), blank, dtype=torch.long)
    labels[1::2] = torch.tensor(targets, dtype=torch.long)
    S = labels.numel()
    # a state may be entered from itself, the state before, and (a token unlike the token two back) two before
    skip = torch.zeros(S, dtype=torch.bool)
    skip[3::2] = labels[3::2] != labels[1:-2:2]
    neg = torch.tensor(-float("inf"))
    score = torch.full((S,), -float("inf"))
    score[:2] = log_probs[0, labels[:2]]
    back = torch.zeros((T, S), dtype=torch.int8)  # 0: stay, 1: from s - 1, 2: from s - 2
    for t in range(1, T):
        one = torch.cat((neg[None], score[:-1]))
        two = torch.where(skip, torch.cat((neg[None], neg[None], score[:-2])), neg)
        best, choice = torch.stack((score, one, two)).max(0)
        back[t] = choice.to(torch.int8)
        score = best + log_probs[t, labels]
    state = S - 1 if score[S - 1] >= score[S - 2] else S - 2
    path = [0] * T
    for t in range(T - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])
    spans: list[TokenSpan | None] = [None] * U
    for t, state in enumerate(path):
        if state % 2:  # a token state
            u = state // 2
            p = float(log_probs[t, targets[u]].exp())
            if spans[u] is None:
                spans[u] = TokenSpan(t, t + 1, p)
            else:
                spans[u].end, spans[u].confidence = t + 1, max(spans[u].confidence, p)
    return spans  # every target is visited: the path ends on its last token or the blank after it


def frame_seconds(stack_factor: int) -> float:
    """Seconds per speech embedding."""
    return stack_factor * ENCODER_FRAME_SECONDS


def word_chunks(pieces: list[str], times: list[tuple[float, float] | None], offset: float = 0.0,
                end_of_audio: float | None = None) -> list[dict]:
    """Words with their times from the tokens' decoded `pieces` (a piece starting with a space starts a word) and
    their `times` ((start, end) seconds from the window's start; None: not aligned, e.g. a token the CTC cannot
    write): `[{"text", "timestamp": (start, end)}]`, offset by `offset` (the window's start) and ended no later than
    `end_of_audio`, in the format of transformers' ASR pipelines. A word ends where the next one starts (CTC marks a
    token at its onset), or at its last token's end for the last word. Words with no aligned token share the time
    between their aligned neighbours evenly; (None, None) only when no word of the window is aligned."""
    words: list[tuple[str, list[tuple[float, float]]]] = []
    for piece, time in zip(pieces, times):
        if not words or piece[:1].isspace():
            words.append(("", []))
        text, found = words[-1]
        words[-1] = (text + piece, found + ([time] if time is not None else []))
    words = [(text, found) for text, found in words if text.strip()]
    spans: list[list[float] | None] = [[min(t[0] for t in f), max(t[1] for t in f)] if f else None for _, f in words]
    for index, span in enumerate(spans):  # an aligned word ends where the next word (aligned) starts
        if span is not None and index + 1 < len(spans) and spans[index + 1] is not None:
            span[1] = max(span[1], spans[index + 1][0])
    index = 0
    while index < len(spans):  # runs of unaligned words between aligned neighbours share the gap
        if spans[index] is not None:
            index += 1
            continue
        last = index
        while last < len(spans) and spans[last] is None:
            last += 1
        before = spans[index - 1][1] if index > 0 else None
        after = spans[last][0] if last < len(spans) else None
        if before is None and after is not None:  # leading words: from the window's start
            before = 0.0 if after > 0.0 else after
        if after is None and before is not None:
            after = before if end_of_audio is None else max(before, end_of_audio - offset)
        if before is not None and after is not None:
            step = (after - before) / (last - index)
            for k in range(index, last):
                spans[k] = [before + step * (k - index), before + step * (k - index + 1)]
        index = last
    chunks = []
    for (text, _), span in zip(words, spans):
        stamp = (None, None) if span is None else (round(offset + span[0], 3), round(offset + span[1], 3))
        if end_of_audio is not None and stamp[1] is not None:
            stamp = (min(stamp[0], round(end_of_audio, 3)), min(stamp[1], round(end_of_audio, 3)))
        chunks.append({"text": text.strip(), "timestamp": stamp})
    return chunks


__all__ = ["TokenSpan", "forced_align", "word_chunks", "frame_seconds", "ENCODER_FRAME_SECONDS"]
