"""Waveform checks and resampling: the one place audio arrays are validated.

`check_waveform(x, sample_rate, name)` turns float or int16 samples into 1-D float32
(int16 scaled by 1/32768) or raises a ValueError whose message starts with `name` (the
file, the item, the recogniser input): not 1-D, a bad sample rate, another dtype, NaN/Inf
samples, fewer than `min_samples` samples (`AudioTooShortError`). `resample` is the one
soxr resampler (HQ). Callers: the recogniser and the speaker-similarity metric
(`liveinterp.eval`) and the inference file reader (`liveinterp.inference.audio_io`).
"""

from __future__ import annotations

import numpy as np


class AudioTooShortError(ValueError):
  """Audio is empty, silent, or too short for what it is used for."""


def check_sample_rate(sample_rate, name: str = "audio") -> int:
  """`sample_rate` as a positive int, or a ValueError naming `name`."""
  if (isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer))
      or sample_rate <= 0):
    raise ValueError(f"{name}: invalid sample rate {sample_rate!r}")
  return int(sample_rate)


def check_waveform(x, sample_rate, name: str = "audio", *,
                   min_samples: int = 0) -> np.ndarray:
  """`[N]` float or int16 samples -> float32 `[N]` (int16 / 32768), checked.

  Raises ValueError naming `name` for audio that is not 1-D, a sample rate that is not a
  positive int, a dtype other than float or int16, or NaN/Inf samples; and
  AudioTooShortError (a ValueError) when it has fewer than `min_samples` samples.
  """
  x = np.asarray(x)
  if x.ndim != 1:
    raise ValueError(f"{name}: expected 1-D mono audio, got shape {x.shape}")
  sample_rate = check_sample_rate(sample_rate, name)
  if x.dtype == np.int16:
    x = x.astype(np.float32) / 32768.0
  elif np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
  else:
    raise ValueError(f"{name}: expected float or int16 audio, got dtype {x.dtype}")
  check_finite(x, name)
  if x.size < min_samples:
    raise AudioTooShortError(f"{name}: {x.size} samples ({x.size / sample_rate:.3f} s) "
                             f"is shorter than {min_samples} samples "
                             f"({min_samples / sample_rate:.3g} s)")
  return x


def check_finite(x, name: str = "audio") -> None:
  """ValueError naming `name` when `x` (any shape) holds NaN/Inf samples."""
  bad = int(np.count_nonzero(~np.isfinite(x)))
  if bad:
    raise ValueError(f"{name}: {bad} non-finite sample(s) (NaN/Inf) among {np.size(x)}")


def resample(x_n: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Mono float32 resampling with soxr, HQ (identity when the rates match or the audio
  is empty)."""
  if rate_in <= 0 or rate_out <= 0:
    raise ValueError(f"resample: sample rates must be positive, got {rate_in} -> {rate_out}")
  x = np.asarray(x_n, np.float32)
  if rate_in == rate_out or x.size == 0:
    return x
  import soxr  # pylint: disable=g-import-not-at-top
  return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)
