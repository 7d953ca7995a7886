"""Suspect but readable input audio (issue #12): a wav cut short and float audio far above
1.0 are read with a warning naming the file, counted by kind; `normalize` rescales."""

import warnings

import numpy as np
import pytest
import soundfile as sf

from liveinterp.inference import audio_io

SR = 16000


def _tone(seconds, amp=0.5):
  t = np.arange(int(SR * seconds)) / SR
  return (amp * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)


def test_wav_cut_short_is_read_with_a_counted_warning(tmp_path):
  path = str(tmp_path / "cut.wav")
  sf.write(path, _tone(1.0), SR, subtype="PCM_16")  # 32000 data bytes
  with open(path, "r+b") as f:  # a copy cut short: the last 0.25 s (8000 bytes) missing
    f.truncate(44 + 24000)
  assert audio_io.wav_data_shortfall(path) == (32000, 24000)
  report = audio_io.InputReport()
  x = audio_io.read_audio(path, SR, report=report)
  assert x.size == 12000  # what is there is used
  assert report.counts == {"truncated_data_chunk": 1}
  (msg,) = report.messages
  assert msg.startswith(path) and "8000 bytes missing" in msg and "0.25 s" in msg
  with pytest.warns(audio_io.AudioWarning, match="cut.wav: wav data chunk is cut short"):
    audio_io.read_audio(path, SR)  # without a report: a Python warning


def test_complete_and_float_wavs_raise_no_warning(tmp_path):
  for subtype in ("PCM_16", "PCM_24", "FLOAT"):
    path = str(tmp_path / f"ok_{subtype}.wav")
    sf.write(path, _tone(0.3), SR, subtype=subtype)
    assert audio_io.wav_data_shortfall(path) is None
    report = audio_io.InputReport()
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      audio_io.read_audio(path, SR, report=report)
    assert not report.counts
  flac = str(tmp_path / "x.flac")
  sf.write(flac, _tone(0.3), SR)
  assert audio_io.wav_data_shortfall(flac) is None


def test_float_peaks_far_above_one_warn_and_normalize_rescales(tmp_path):
  path = str(tmp_path / "loud.wav")
  sf.write(path, _tone(0.5, amp=4.0), SR, subtype="FLOAT")
  report = audio_io.InputReport()
  x = audio_io.read_audio(path, SR, report=report)
  assert report.counts == {"float_peak_over_1_5": 1}
  assert "loud.wav: samples peak at 4" in report.messages[0]
  assert "--normalize" in report.messages[0]
  assert np.abs(x).max() > 3.9  # unchanged without the flag
  report = audio_io.InputReport()
  y = audio_io.read_audio(path, SR, normalize=True, report=report)
  assert report.counts == {"float_peak_over_1_5": 1, "normalized": 1}
  np.testing.assert_allclose(np.abs(y).max(), 0.99, rtol=1e-5)
  np.testing.assert_allclose(y, x * (0.99 / np.abs(x).max()), rtol=1e-5, atol=1e-6)
  # 1.2 is loud but within the limit: no warning
  sf.write(path, _tone(0.5, amp=1.2), SR, subtype="FLOAT")
  report = audio_io.InputReport()
  audio_io.read_audio(path, SR, report=report)
  assert not report.counts


def test_translate_cli_prints_and_passes_the_flag(tmp_path, monkeypatch, capsys):
  """`python -m liveinterp.translate loud.wav --normalize`: the warning is printed on
  stderr naming the file before any model work, and the audio handed on is rescaled
  (the heavy part is stopped right after reading)."""
  import os
  from liveinterp import translate
  from liveinterp.inference import loading
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  path = str(tmp_path / "loud.wav")
  sf.write(path, _tone(0.5, amp=3.0), SR, subtype="FLOAT")
  seen = {}
  real_read = audio_io.read_audio

  def spy_read(*a, **k):
    seen["audio"] = real_read(*a, **k)
    seen["report"] = k.get("report")
    return seen["audio"]

  class Stop(Exception):
    pass

  def stop(*a, **k):
    raise Stop()

  monkeypatch.setattr(audio_io, "read_audio", spy_read)
  monkeypatch.setattr(loading, "build_models", stop)
  with pytest.raises(Stop):
    translate.main([path, "--out", str(tmp_path / "o.wav"), "--config",
                    os.path.join(root, "configs", "micro.py"), "--init", "random",
                    "--normalize"])
  err = capsys.readouterr().err
  assert f"[translate] warning: {path}: samples peak at 3" in err
  assert seen["report"].counts == {"float_peak_over_1_5": 1, "normalized": 1}
  np.testing.assert_allclose(np.abs(seen["audio"]).max(), 0.99, rtol=1e-5)
