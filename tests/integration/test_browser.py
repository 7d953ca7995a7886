"""The browser page of `python -m liveinterp.serve` (issue #15) in a real headless Chromium.

The real server (`liveinterp.serving.server.StreamServer`, in-process on a free port, in a
background thread) serves the page and streams with the micro config's random-weight
decoder (seed 2: it writes 16-token turns with speech on this kind of audio). Chromium's
fake microphone plays a test wav (tone bursts over noise, 16 kHz; Chromium loops it), so
the page's whole path runs: getUserMedia -> AudioContext at 16 kHz -> AudioWorklet ->
float32 frames over the websocket -> captions, Web Audio playback, latency per turn.
The test asserts that the translation captions and latency lines appear, that translated
audio arrives and finishes playing (`#audio-played`, counted when each scheduled chunk's
playback ends), and that Stop ends the session cleanly: the page shows "done", no error.
Then the same page streams the wav through its file picker (real time; the page stops by
itself at the end of the file), and the server counts both sessions as done, no error,
no active session left.

Needs Debian's `chromium` + `chromium-driver` (`bash launch/setup_browser.sh`, which
launch/test.sh runs); skipped only when they cannot be installed.
"""

from __future__ import annotations

import os
import subprocess
import time
import wave

import numpy as np
import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from configs import micro
from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib, loading
from liveinterp.serving import server as server_lib

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WAIT_S = 60  # for captions + played audio, and for the end of the session


def _browser_or_skip():
  """Installs chromium + chromedriver when missing (the idempotent set-up script);
  skips the test only when they cannot be installed."""
  if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    subprocess.run(["bash", os.path.join(REPO, "launch", "setup_browser.sh")], check=False,
                   timeout=900)
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
  if missing:
    pytest.skip(f"{' and '.join(missing)} missing and launch/setup_browser.sh could not "
                "install them (needs apt-get as root or sudo)")


def _write_wav(path: str, seconds: float = 4.0, rate: int = 16000):
  """Tone bursts (220 Hz, 0.3 s on / 0.2 s off) over low noise, 16-bit mono."""
  rng = np.random.default_rng(0)
  t = np.arange(int(seconds * rate)) / rate
  on = (t % 0.5) < 0.3
  x = 0.3 * np.sin(2 * np.pi * 220 * t) * on + 0.02 * rng.standard_normal(t.size)
  with wave.open(path, "wb") as w:
    w.setnchannels(1)
    w.setsampwidth(2)
    w.setframerate(rate)
    w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def running_server():
  """The real streaming server on 127.0.0.1:<free port>, micro random-weight decoder
  with the options of tests/unit/inference/conftest.py; compiled before it listens.
  Checks for the browser first, so a machine without one skips before compiling."""
  _browser_or_skip()
  cfg = micro.get_config()
  model, codec, speaker = loading.build_models(cfg, seed=2)
  decoder = decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg,
      temperature=0.0, grammar=True, max_turn_tokens=16,
      speaker_window_ms=cfg.stream.chunk_ms, codec_blocks=(4,))
  server = server_lib.StreamServer(
      decoder, config=server_lib.ServerConfig(port=0, max_sessions=2, idle_timeout_s=60))
  with server.start_in_thread() as running:
    yield running


@pytest.fixture
def wav(tmp_path):
  path = str(tmp_path / "mic.wav")
  _write_wav(path)
  return path


@pytest.fixture
def browser(wav):
  opts = webdriver.ChromeOptions()
  opts.binary_location = CHROMIUM
  for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
              f"--use-file-for-fake-audio-capture={wav}",
              "--autoplay-policy=no-user-gesture-required"):
    opts.add_argument(arg)
  opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(options=opts, service=Service(executable_path=CHROMEDRIVER))
  driver.set_page_load_timeout(30)
  try:
    yield driver
  finally:
    driver.quit()


IDS = ("status", "error", "source", "translation", "latency", "audio-sent",
       "audio-received", "audio-scheduled", "audio-played", "summary")


def _page(driver) -> dict:
  """The text of the page's readouts (IDS), read at one instant (one script call: the
  counters change while the page streams), and the number of turn rows."""
  return driver.execute_script(
      "const out = {turns: document.querySelectorAll('#turns tr').length};"
      "for (const id of arguments[0]) out[id] = document.getElementById(id).textContent;"
      "return out;", list(IDS))


def _describe(driver, running) -> str:
  """What the page and the server show (for failure messages)."""
  shown = {k: v[-200:] if isinstance(v, str) else v for k, v in _page(driver).items()}
  logs = [e["message"] for e in driver.get_log("browser")][-10:]
  return f"page {shown}; console {logs}; server {running.server.stats()['counts']}"


def test_page_streams_microphone_and_picked_wav_and_stops_cleanly(running_server, browser, wav):
  running = running_server
  browser.get(running.http_url)
  assert browser.title.startswith("liveinterp"), browser.page_source[:500]
  browser.find_element(By.ID, "start").click()

  def captions_and_played_audio(d):
    page = _page(d)
    if page["error"]:
      raise AssertionError(f"the page shows an error: {_describe(d, running)}")
    return (page["translation"].strip() and page["latency"] != "-"
            and int(page["audio-played"]) > 0)

  try:
    WebDriverWait(browser, WAIT_S, poll_frequency=0.25).until(captions_and_played_audio)
  except TimeoutException:
    pytest.fail(f"no captions + played audio within {WAIT_S} s: {_describe(browser, running)}")
  page = _page(browser)
  assert int(page["audio-sent"]) > 0, page
  assert int(page["audio-received"]) >= int(page["audio-scheduled"]) > 0, page
  assert page["turns"] > 0 and "ms after the source" in page["latency"], page

  browser.find_element(By.ID, "stop").click()
  try:
    WebDriverWait(browser, WAIT_S, poll_frequency=0.25).until(
        lambda d: _page(d)["status"] in ("done", "error") or "closed" in _page(d)["status"])
  except TimeoutException:
    pytest.fail(f"Stop did not end the session within {WAIT_S} s: "
                f"{_describe(browser, running)}")
  page = _page(browser)
  assert page["status"] == "done" and not page["error"], _describe(browser, running)
  assert "chunks" in page["summary"], page
  # After `done` every received chunk has been queued for playback, in order.
  assert int(page["audio-scheduled"]) == int(page["audio-received"]), page

  # A picked wav instead of the microphone: streamed in real time, the page stops by
  # itself at its end and the session ends with `done`.
  browser.find_element(By.ID, "file").send_keys(wav)
  browser.find_element(By.ID, "start").click()
  try:
    WebDriverWait(browser, WAIT_S, poll_frequency=0.25).until(
        lambda d: _page(d)["status"] in ("done", "error") or "closed" in _page(d)["status"])
  except TimeoutException:
    pytest.fail(f"the picked wav's session did not end within {WAIT_S} s: "
                f"{_describe(browser, running)}")
  page = _page(browser)
  assert page["status"] == "done" and not page["error"], _describe(browser, running)
  # The whole 4 s file was sent (less at most one 128-sample render quantum per end).
  assert int(page["audio-sent"]) >= 4 * 16000 - 256, page
  assert page["translation"].strip() and int(page["audio-received"]) > 0, page

  # The server: both sessions finished with `done`, nothing failed, no slot held.
  deadline = time.monotonic() + 10
  while running.server.stats()["active"] and time.monotonic() < deadline:
    time.sleep(0.1)
  stats = running.server.stats()
  assert stats["active"] == 0, stats
  assert [s["outcome"] for s in stats["sessions"]] == ["done", "done"], stats
  assert stats["counts"].get("done") == 2, stats
  assert not [k for k in stats["counts"] if k.startswith("error:")], stats
  assert all(s["chunks"] > 0 and s["audio_s"] > 0 for s in stats["sessions"]), stats
