"""Reading and writing audio files for inference: any wav in, 16 kHz mono float32 out.

`read_audio(path)` reads whatever libsndfile reads (wav in any PCM/float subtype, flac,
ogg, ...), averages the channels to mono and resamples to the model rate with soxr
(`HQ`). Unreadable, empty or non-finite input raises `AudioError` naming the file, so a
bad file never reaches the model.
"""

from __future__ import annotations

import os

import numpy as np
import soundfile as sf
import soxr


class AudioError(ValueError):
  """An audio file cannot be used; the message names the file and says why."""


def to_mono(x_nc: np.ndarray) -> np.ndarray:
  """`[N, C]` (or `[N]`) samples -> `[N]` float32, the mean of the channels."""
  x = np.asarray(x_nc, np.float32)
  return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def resample(x_n: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
  """Mono float32 resampling with soxr (identity when the rates match)."""
  if rate_in <= 0 or rate_out <= 0:
    raise ValueError(f"resample: sample rates must be positive, got {rate_in} -> {rate_out}")
  x = np.asarray(x_n, np.float32)
  if rate_in == rate_out or x.size == 0:
    return x
  return soxr.resample(x, rate_in, rate_out, quality="HQ").astype(np.float32)


def read_audio(path: str, sample_rate: int = 16000) -> np.ndarray:
  """Reads `path` -> mono float32 `[N]` at `sample_rate` (channels averaged, soxr).

  Raises:
    FileNotFoundError: no such file.
    AudioError: the file is not audio libsndfile can decode, holds no samples, or holds
      NaN/Inf samples.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no such audio file")
  if os.path.isdir(path):
    raise AudioError(f"{path}: is a directory, expected an audio file")
  if os.path.getsize(path) == 0:
    raise AudioError(f"{path}: empty file (0 bytes)")
  try:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
  except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
    raise AudioError(f"{path}: cannot decode audio ({e})") from e
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise AudioError(f"{path}: holds no audio samples")
  bad = ~np.isfinite(x)
  if bad.any():
    raise AudioError(f"{path}: {int(bad.sum())} non-finite sample(s) (NaN/Inf) among "
                     f"{x.size}")
  return resample(to_mono(x), int(rate), int(sample_rate))


def write_audio(path: str, audio_n: np.ndarray, sample_rate: int = 16000,
                subtype: str = "PCM_16") -> str:
  """Writes mono float samples (clipped to [-1, 1]) as a wav; returns the path."""
  x = np.asarray(audio_n, np.float32).reshape(-1)
  if not np.all(np.isfinite(x)):
    raise AudioError(f"{path}: refusing to write non-finite samples")
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  sf.write(path, np.clip(x, -1.0, 1.0), int(sample_rate), subtype=subtype)
  return path


# The names the rest of the code base uses for wav files.
read_wav = read_audio
write_wav = write_audio

__all__ = ["AudioError", "read_audio", "write_audio", "read_wav", "write_wav", "to_mono",
           "resample"]
