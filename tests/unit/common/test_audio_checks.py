"""One owner of waveform checks (issue #11): `liveinterp.common.audio.check_waveform` and
`resample`, and the three callers (recogniser, speaker similarity, the inference file
reader) raise through it with messages naming the item."""

import numpy as np
import pytest
import soundfile as sf

from liveinterp.common import audio as A


def test_check_waveform_converts_and_names_the_item():
  x = A.check_waveform(np.array([0, 16384, -32768], np.int16), 16000, "clip 3")
  assert x.dtype == np.float32 and x.tolist() == [0.0, 0.5, -1.0]
  y = A.check_waveform(np.array([0.25, -0.5], np.float64), 8000, "clip 4")
  assert y.dtype == np.float32 and y.tolist() == [0.25, -0.5]
  with pytest.raises(ValueError,
                     match=r"^clip 1: expected 1-D mono audio, got shape \(2, 3\)"):
    A.check_waveform(np.zeros((2, 3), np.float32), 16000, "clip 1")
  for rate in (0, -16000, 16000.0, True, "16k"):
    with pytest.raises(ValueError, match=r"^clip 2: invalid sample rate"):
      A.check_waveform(np.zeros(4, np.float32), rate, "clip 2")
  with pytest.raises(ValueError,
                     match=r"^clip 5: expected float or int16 audio, got dtype int32"):
    A.check_waveform(np.zeros(4, np.int32), 16000, "clip 5")
  bad = np.zeros(10, np.float32)
  bad[[2, 7]] = [np.nan, np.inf]
  with pytest.raises(ValueError,
                     match=r"^clip 6: 2 non-finite sample\(s\) \(NaN/Inf\) among 10"):
    A.check_waveform(bad, 16000, "clip 6")
  with pytest.raises(A.AudioTooShortError, match=r"^clip 7: 3 samples"):
    A.check_waveform(np.zeros(3, np.float32), 16000, "clip 7", min_samples=4)
  assert A.check_waveform(np.zeros(0, np.float32), 16000, "empty").size == 0


def test_resample_is_soxr_hq_and_identity_at_the_same_rate():
  import soxr
  t = np.arange(8000) / 8000.0
  x = np.sin(2 * np.pi * 440 * t).astype(np.float32)
  y = A.resample(x, 8000, 16000)
  assert y.dtype == np.float32 and y.size == 16000
  np.testing.assert_array_equal(y, soxr.resample(x, 8000, 16000, quality="HQ"))
  assert np.array_equal(A.resample(x, 8000, 8000), x)
  assert A.resample(np.zeros(0, np.float32), 8000, 16000).size == 0
  with pytest.raises(ValueError, match="sample rates must be positive"):
    A.resample(x, 0, 16000)


def test_the_three_callers_use_the_one_check(tmp_path):
  from liveinterp.eval import recognizers, speaker_similarity
  from liveinterp.inference import audio_io
  nan = np.zeros(16000, np.float32)
  nan[5] = np.nan
  with pytest.raises(ValueError, match=r"^recogniser input: 1 non-finite"):
    recognizers._to_int16_16k(nan, 16000)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match=r"^source 0: 1 non-finite"):
    speaker_similarity.embed(nan, 16000, name="source 0")
  with pytest.raises(speaker_similarity.AudioTooShortError, match="^tiny: 3 samples"):
    speaker_similarity.embed(np.ones(3, np.float32) * 0.1, 16000, name="tiny")
  assert speaker_similarity.AudioTooShortError is A.AudioTooShortError
  path = str(tmp_path / "nan.wav")
  sf.write(path, np.stack([nan, np.zeros_like(nan)], 1), 16000, subtype="FLOAT")
  with pytest.raises(audio_io.AudioError,
                     match=r"nan.wav: 1 non-finite sample\(s\).*among 32000"):
    audio_io.read_audio(path)
  with pytest.raises(audio_io.AudioError,
                     match=r"out.wav: 1 non-finite.*refusing to write"):
    audio_io.write_audio(str(tmp_path / "out.wav"), nan)
  # int16 in, 8 kHz: the recogniser converts through the same resampler.
  x16 = (np.sin(np.arange(8000) / 5.0) * 8000).astype(np.int16)
  out = recognizers._to_int16_16k(x16, 8000)  # pylint: disable=protected-access
  ref = A.resample(x16.astype(np.float32) / 32768.0, 8000, 16000)
  np.testing.assert_array_equal(
      out, (np.clip(ref, -1, 1) * 32767.0).round().astype(np.int16))
