"""Reading and writing audio files for inference: any wav in, 16 kHz mono float32 out.

`read_audio(path)` reads whatever libsndfile reads (wav in any PCM/float subtype, flac,
ogg, ...), averages the channels to mono and resamples to the model rate with soxr
(`HQ`, `liveinterp.common.audio.resample`). Unreadable, empty or non-finite input raises
`AudioError` naming the file (the checks of `liveinterp.common.audio`), so a bad file
never reaches the model.

Input that decodes but is suspect is used with a warning naming the file, counted by kind
in an `InputReport` (the translate CLI prints them and writes the counts to its JSON):
  `truncated_data_chunk`  a wav whose data chunk is shorter than its header says (a copy
                          or download cut short): the samples that are there are read;
  `float_peak_over_1_5`   float samples peaking above 1.5 (expected within [-1, 1]);
                          `normalize=True` (translate `--normalize`) rescales the audio
                          to a peak of 0.99 (counted as `normalized`).
"""

from __future__ import annotations

import collections
import dataclasses
import os
import struct
import warnings

import numpy as np
import soundfile as sf

from liveinterp.common import audio as audio_lib
from liveinterp.common.audio import resample  # noqa: F401  (re-exported)


class AudioError(ValueError):
  """An audio file cannot be used; the message names the file and says why."""


class AudioWarning(UserWarning):
  """Suspect but usable input audio (see the module docstring)."""


FLOAT_PEAK_LIMIT = 1.5  # float audio peaking above this is warned about
NORMALIZED_PEAK = 0.99


@dataclasses.dataclass
class InputReport:
  """Warnings about input audio: counts by kind and the messages (each names its file)."""
  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  messages: list = dataclasses.field(default_factory=list)

  def add(self, kind: str, message: str):
    self.counts[kind] += 1
    self.messages.append(message)


def wav_data_shortfall(path: str) -> tuple[int, int] | None:
  """(declared, present) bytes of a RIFF/WAVE file's data chunk when fewer bytes are
  present than its header declares; None when complete, not a wav, or streamed (a size
  of 0 or 0xFFFFFFFF: the writer did not know the length)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    head = f.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
      return None
    fmt = "<I" if head[:4] == b"RIFF" else ">I"
    pos = 12
    while pos + 8 <= size:
      f.seek(pos)
      chunk = f.read(8)
      if len(chunk) < 8:
        return None
      cid, n = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
      if cid == b"data":
        present = size - (pos + 8)
        if n in (0, 0xFFFFFFFF) or present >= n:
          return None
        return n, present
      pos += 8 + n + (n & 1)
  return None


def to_mono(x_nc: np.ndarray) -> np.ndarray:
  """`[N, C]` (or `[N]`) samples -> `[N]` float32, the mean of the channels."""
  x = np.asarray(x_nc, np.float32)
  return x if x.ndim == 1 else x.mean(axis=1, dtype=np.float32)


def read_audio(path: str, sample_rate: int = 16000, *, normalize: bool = False,
               report: InputReport | None = None) -> np.ndarray:
  """Reads `path` -> mono float32 `[N]` at `sample_rate` (channels averaged, soxr).

  Suspect input (a cut-short wav data chunk, float peaks above 1.5) is read with a
  warning counted in `report` (without one, a Python `AudioWarning`). `normalize`
  rescales the result to a peak of 0.99.

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
  try:
    audio_lib.check_finite(x, path)  # every channel, before they are averaged
  except ValueError as e:
    raise AudioError(str(e)) from None

  def warn(kind, message):
    if report is not None:
      report.add(kind, message)
    else:
      warnings.warn(message, AudioWarning, stacklevel=3)

  short = wav_data_shortfall(path)
  if short is not None:
    declared, present = short
    frame_bytes = present / x.shape[0]  # bytes per frame, from what was read
    missing_s = (declared - present) / frame_bytes / rate
    warn("truncated_data_chunk",
         f"{path}: wav data chunk is cut short: the header declares {declared} bytes, the "
         f"file holds {present} ({declared - present} bytes missing, about "
         f"{missing_s:.2f} s); using the {x.shape[0]} frames that are there")
  peak = float(np.abs(x).max())
  if peak > FLOAT_PEAK_LIMIT:
    warn("float_peak_over_1_5",
         f"{path}: samples peak at {peak:.3g}, far above 1.0 (float audio is expected in "
         f"[-1, 1]); " + ("rescaled to a peak of 0.99 (normalize)" if normalize else
                          "it is used as is; pass --normalize to rescale it"))
  out = resample(to_mono(x), int(rate), int(sample_rate))
  if normalize:
    out_peak = float(np.abs(out).max()) if out.size else 0.0
    if out_peak > 0:
      out = (out * (NORMALIZED_PEAK / out_peak)).astype(np.float32)
      if report is not None:
        report.counts["normalized"] += 1
  return out


def write_audio(path: str, audio_n: np.ndarray, sample_rate: int = 16000,
                subtype: str = "PCM_16") -> str:
  """Writes mono float samples (clipped to [-1, 1]) as a wav; returns the path."""
  x = np.asarray(audio_n, np.float32).reshape(-1)
  try:
    audio_lib.check_finite(x, path)
  except ValueError as e:
    raise AudioError(f"{e}: refusing to write them") from None
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  sf.write(path, np.clip(x, -1.0, 1.0), int(sample_rate), subtype=subtype)
  return path


# The names the rest of the code base uses for wav files.
read_wav = read_audio
write_wav = write_audio

__all__ = ["AudioError", "AudioWarning", "InputReport", "wav_data_shortfall", "read_audio", "write_audio", "read_wav", "write_wav", "to_mono",
           "resample"]
