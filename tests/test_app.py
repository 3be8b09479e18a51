"""demo/app.py: the view model of the sampler's history (plain functions, no browser), and the page itself served as a
subprocess and driven in a real headless Chromium (Debian's `chromium` + `chromium-driver`, through selenium).

The browser helpers also take the README's screenshot:

    python tests/test_app.py --model demo/model --screenshot assets/app.png
"""

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "demo" / "app.py"
CLIP = "7312-92432-0000"  # 4.2 s
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1280,1100"]


def load_app():
    """demo/app.py as a module (it imports gradio only when building the page)."""
    spec = importlib.util.spec_from_file_location("whisper_llada_app", APP)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def app():
    return load_app()


@pytest.fixture(scope="module")
def asr(processor):
    """A tiny random model with the real tokenizer (gen_length 32, B = 8 steps) and a CTC head, and its processor."""
    from conftest import make_tiny_asr_model

    model = make_tiny_asr_model(processor, gen_length=32, block_length=32)
    model.config.ctc_blank_id = processor.tokenizer.convert_tokens_to_ids("!")
    return model, processor


def clip_path(key: str = CLIP) -> Path:
    return ROOT / "demo" / "audio" / f"{key}.flac"


def expected_b(model, processor, audio) -> tuple[str, int]:
    """The transcript and number of sampler steps of `model.generate(decoding="B")` on one clip (one window)."""
    features = processor(audio=audio, sampling_rate=16000)
    out = model.generate(input_features=features["input_features"], attention_mask=features["attention_mask"],
                         decoding="B", return_dict_in_generate=True, output_history=True)
    return processor.batch_decode(out.sequences)[0], out.history.shape[1] - 1


# ----------------------------------------------------------------------------------------------------------------------
# The view model, without a browser
# ----------------------------------------------------------------------------------------------------------------------


def test_form_values_become_generate_settings(app):
    assert app.decoding_settings("B", steps=0, threshold=0.0, kv_cache="off", early_stop=False,
                                 anchor_threshold=0.7) == {}
    assert app.decoding_settings("C", steps=32, threshold=0.9, kv_cache="dual", early_stop=True,
                                 anchor_threshold=0.7) == {"steps": 32, "threshold": 0.9, "kv_cache": "dual",
                                                           "early_stop": True}
    assert app.decoding_settings("D", anchor_threshold=0.0) == {"anchor_threshold": 0.0}
    # the form starts from the model's own D: an untouched slider passes nothing, so the model's D decodes
    own = {"anchor_threshold": 0.3, "anchor_slack": 0}
    assert app.decoding_settings("D", anchor_threshold=0.3, anchor_slack=0, model_defaults=own) == {}
    assert app.decoding_settings("D", anchor_threshold=0.5, model_defaults=own) == {"anchor_threshold": 0.5}


def test_ctc_and_d_are_offered_only_with_a_ctc_head_and_the_model_s_default_is_preselected(app, asr):
    from conftest import tiny_whisper_llada

    assert app.decoding_choices(tiny_whisper_llada()) == ["A", "B", "C"]
    assert app.decoding_choices(asr[0]) == ["A", "B", "C", "CTC", "D"]
    model = asr[0]
    assert app.default_decoding(tiny_whisper_llada()) == "B"
    saved = model.generation_config
    try:
        model.generation_config = model.resolve_decoding("D", anchor_threshold=0.45)
        assert app.default_decoding(model) == "D" and app.model_setting(model, "anchor_threshold") == 0.45
    finally:
        model.generation_config = saved


def test_drafts_arrive_while_decoding_and_words_are_laid_out_under_the_audio(app, asr):
    model, processor = asr
    events = list(app.decode_live(model, processor, str(clip_path()), "B"))
    drafts, done = events[:-1], events[-1]
    assert done[0] == "done" and [e[0] for e in drafts] == ["draft"] * 9  # the start and B's 8 steps
    assert [e[2] for e in drafts] == list(range(9)) and drafts[-1][3] == done[1].windows[0].states[-1]
    result = done[1]
    assert result.words and " ".join(w["text"] for w in result.words) == result.text
    timeline = app.render_words(result.words, result.audio_s)
    assert timeline.count('class="wl-word"') == sum(w["timestamp"][0] is not None for w in result.words)
    draft = app.render_draft(drafts[0][3], {}, model.config.mask_token_id, model.config.eos_token_id, 0, 0)
    assert draft.count("wl-mask") == 32


def test_b_view_follows_the_history_of_generate(app, asr):
    """Each step's tokens are the history's state: all [MASK] at the start, then the committed tokens with the
    confidence they were committed with (bold at their own step); the text and step count are generate's."""
    model, processor = asr
    result = app.transcribe(model, processor, str(clip_path()), "B")
    assert (result.text, result.steps) == expected_b(model, processor, str(clip_path()))
    assert result.decoding == "B" and len(result.windows) == 1 and result.rtfx > 0
    window = result.windows[0]
    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    start = app.step_tokens(window, 0, mask_id, eos_id)
    assert [t.kind for t in start] == ["mask"] * 32
    shown = 0
    for step in range(1, window.steps + 1):
        tokens = app.step_tokens(window, step, mask_id, eos_id)
        new = [t for t in tokens if t.new]
        assert len(new) == 4  # B: 32 positions in 8 steps
        assert all(t.kind != "mask" and 0 <= t.confidence <= 1 for t in new)
        assert sum(t.kind != "mask" for t in tokens) == shown + 4
        shown += 4
    last = app.step_tokens(window, window.steps, mask_id, eos_id)
    assert all(t.confidence is not None for t in last)
    html = app.render_tokens(start)
    assert html.count("wl-token wl-mask") == 32 + 1  # the chips and the legend's
    assert app.step_tokens(window, 99, mask_id, eos_id) == last  # a step past the end shows the end


def test_d_view_starts_from_the_ctc_hypothesis(app, asr):
    """D's start state shows the kept CTC tokens as anchors (no confidence), [MASK] where the sampler fills in."""
    model, processor = asr
    result = app.transcribe(model, processor, str(clip_path()), "D", anchor_threshold=0.0, anchor_slack=2)
    window = result.windows[0]
    mask_id, eos_id = model.config.mask_token_id, model.config.eos_token_id
    kinds = [t.kind for t in app.step_tokens(window, 0, mask_id, eos_id)]
    assert kinds == ["mask" if i == mask_id else "eos" if i == eos_id else "anchor" for i in window.states[0]]
    assert "anchor" in kinds and "mask" in kinds
    last = app.step_tokens(window, window.steps, mask_id, eos_id)
    assert all((t.confidence is None) == (t.kind == "anchor") for t in last if t.kind in ("anchor", "token"))


def test_long_audio_is_viewed_window_by_window(app, asr):
    """Audio over 30 s: one view per window (the pipeline's windows), the text joined as the pipeline joins it."""
    from pipeline_whisper_llada import transcribe as pipeline_transcribe
    from processing_whisper_llada import load_audio

    model, processor = asr
    wave = np.concatenate([load_audio(str(clip_path(key))) for key in ("1737-146161-0000", "1737-146161-0001",
                                                                       "1737-146161-0002")])  # 46 s
    result = app.transcribe(model, processor, wave, "A")
    assert len(result.windows) == len(app.window_labels(result)) > 1
    assert result.windows[0].start_s == 0 and result.windows[-1].end_s == pytest.approx(len(wave) / 16000)
    assert result.steps == len(result.windows)  # A: one step per window
    assert result.text == pipeline_transcribe(model, processor, [wave], generation_config="A")[0]
    second = app.render_step(result, 1, 5, model.config.mask_token_id, model.config.eos_token_id)
    assert 'data-window="1" data-step="1"' in second  # the step is clamped to the window's last


def test_confidences_stay_with_their_tokens(app):
    """A token keeps the confidence it was committed with until it changes (an early-stop EOS fill has none)."""
    mask, eos, nan = 9, 8, float("nan")
    states = torch.tensor([[mask, mask, mask], [mask, eos, 3], [4, eos, eos]])
    confidences = torch.tensor([[nan, nan, nan], [nan, 0.75, 0.5], [0.25, nan, nan]])
    assert app.carried_confidences(states, confidences) == [[None, None, None], [None, 0.75, 0.5], [0.25, 0.75, None]]


def test_timing_table_and_colours(app):
    rows = [{"clip": "a.flac", "decoding": "B", "windows": 1, "audio_s": 4.2, "seconds": 0.5, "rtfx": 8.4,
             "steps": 8}, {"clip": "b.flac", "decoding": "A", "windows": 1, "audio_s": 3.0, "seconds": 0.1,
                           "rtfx": 30.0, "steps": 1}]
    table = app.render_runs(rows)
    assert table.index('data-field="steps">1<') < table.index('data-field="steps">8<')  # newest first
    assert app.render_runs([]) == ""
    assert app.confidence_colour(0.0) == "hsl(0,75%,80%)" and app.confidence_colour(1.0) == "hsl(120,75%,80%)"


def test_bad_settings_and_model_paths_are_one_line_errors(app, asr, tmp_path, capsys):
    model, processor = asr
    with pytest.raises(ValueError, match="divisible"):
        app.transcribe(model, processor, str(clip_path()), "C", steps=10)
    assert app.main(["--model", str(tmp_path / "missing")]) == 2
    assert "no whisper-llada checkpoint there" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------------
# The page in a headless Chromium
# ----------------------------------------------------------------------------------------------------------------------


def browser_missing() -> str | None:
    """Why the browser test cannot run here, or None."""
    for module, extra in (("gradio", "app"), ("selenium", "test")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return f"{path} is absent (apt-get install chromium chromium-driver)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(model_dir, log_path: Path, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """demo/app.py on a free localhost port; returns the process and its URL once the page answers."""
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1"}
    log = open(log_path, "w")
    process = subprocess.Popen([sys.executable, str(APP), "--model", str(model_dir), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return process, url
        except OSError:
            time.sleep(1)
    stop_app(process)
    raise RuntimeError(f"the app did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


def stop_app(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def new_browser(profile: str):
    """Headless Debian Chromium through its chromedriver, with a fresh profile and no background traffic."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium fetch a driver or a browser
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def wait_for(condition, timeout: float, what: str):
    """Polls `condition()` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def transcribe_in_page(driver, url: str, clip: str, decoding: str, timeout: float = 600.0) -> dict:
    """Loads the page, picks a bundled clip and a decoding, runs it; returns the page's transcript, the newest timing
    row and the URLs the page loaded."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.get(url)
    combobox = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#clip input"), 120, "the page")[0]
    combobox.click()
    option = wait_for(lambda: [o for o in driver.find_elements(By.CSS_SELECTOR, "#clip [role=option]")
                               if (o.get_attribute("aria-label") or "").startswith(clip)], 30, f"option {clip}")[0]
    ActionChains(driver).move_to_element(option).click().perform()
    wait_for(lambda: "Reference" in driver.find_element(By.CSS_SELECTOR, "#reference").text, 60, "the clip to load")
    driver.find_element(By.CSS_SELECTOR, f"#decoding input[value='{decoding}']").click()
    driver.find_element(By.CSS_SELECTOR, "#run").click()
    cells = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#timing tbody tr:first-child td"), timeout,
                     "the timing row")
    row = {cell.get_attribute("data-field"): cell.text for cell in cells}
    transcript = driver.find_element(By.CSS_SELECTOR, "#transcript textarea").get_property("value")
    resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return {"transcript": transcript, "row": row, "resources": resources}


def show_step(driver, step: int) -> str:
    """Sets the step slider (through its number box) and returns the token view's HTML once it shows that step."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, "#step input[type=number]")
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(str(step), Keys.ENTER)
    driver.execute_script("document.activeElement.blur()")
    view = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f"#tokens .wl-step[data-step='{step}']"), 60,
                    f"step {step}")
    return view[0].get_attribute("outerHTML")


@pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))
def test_page_transcribes_a_bundled_clip_like_generate(tiny_checkpoint, tmp_path):
    """The page, driven as a person would: pick a bundled clip, choose B, run; its transcript and number of decoder
    steps are `model.generate`'s, the step slider rewinds to the all-[MASK] start, and nothing came from outside."""
    from selenium.webdriver.common.by import By

    from modeling_whisper_llada import WhisperLladaForConditionalGeneration
    from processing_whisper_llada import WhisperLladaProcessor

    model = WhisperLladaForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = WhisperLladaProcessor.from_pretrained(tiny_checkpoint)
    text, steps = expected_b(model, processor, str(clip_path()))
    process, url = start_app(tiny_checkpoint, tmp_path / "app.log")
    driver = None
    try:
        driver = new_browser(str(tmp_path / "profile"))
        page = transcribe_in_page(driver, url, CLIP, "B")
        assert page["transcript"] == text
        assert page["row"]["decoding"] == "B" and page["row"]["steps"] == str(steps)
        assert page["row"]["clip"] == f"{CLIP}.flac"
        assert not driver.find_elements(By.CSS_SELECTOR, "#decoding input[value='D']")  # no CTC head, no D
        start = show_step(driver, 0)
        assert start.count("wl-token wl-mask") == model.generation_config.gen_length + 1  # + the legend's chip
        outside = [u for u in page["resources"] if not u.startswith(url.rstrip("/")) and not u.startswith("data:")]
        assert not outside, f"the page fetched from outside the app: {outside}"
    finally:
        if driver is not None:
            driver.quit()
        stop_app(process)


def take_screenshot(model_dir: str, output: Path, clip: str, step: int | None = None) -> None:
    """Decodes `clip` with B in the page and saves a screenshot (a palette PNG) at `step` (None: the last)."""
    from PIL import Image

    with tempfile.TemporaryDirectory() as folder:
        process, url = start_app(model_dir, Path(folder) / "app.log")
        driver = None
        try:
            driver = new_browser(str(Path(folder) / "profile"))
            page = transcribe_in_page(driver, url, clip, "B")
            if step is not None:
                show_step(driver, step)
            height = driver.execute_script("return document.querySelector('gradio-app').scrollHeight")
            driver.set_window_size(1280, min(height + 200, 2400))  # + the window's own frame
            time.sleep(1)
            driver.save_screenshot(str(output))
        finally:
            if driver is not None:
                driver.quit()
            stop_app(process)
    Image.open(output).convert("RGB").quantize(colors=256).save(output, optimize=True)
    print(json.dumps({"screenshot": str(output), "bytes": output.stat().st_size, **page["row"],
                      "transcript": page["transcript"]}))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Screenshot of demo/app.py after decoding a bundled clip with B.")
    parser.add_argument("--model", default=str(ROOT / "demo" / "model"))
    parser.add_argument("--screenshot", type=Path, default=ROOT / "assets" / "app.png")
    parser.add_argument("--clip", default=CLIP)
    parser.add_argument("--step", type=int, default=None, help="the step the slider shows (default: the last)")
    args = parser.parse_args()
    if browser_missing():
        sys.exit(f"error: {browser_missing()}")
    take_screenshot(args.model, args.screenshot, args.clip, args.step)
