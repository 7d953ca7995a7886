"""Log-mel frontend in JAX with causal framing, so streaming chunks equal the full pass.

Choices (matching `librosa.feature.melspectrogram(..., center=False, htk=False,
norm="slaney", window="hann", power=2.0)`):
- mel scale: Slaney (linear below 1 kHz, logarithmic above), filters area-normalised
  ("slaney" norm); the filterbank is built in numpy (float64) once per parameter set.
- STFT: periodic Hann window of `win_length = win_ms * sr / 1000` samples, zero-padded to
  `n_fft`, power spectrum `|X|^2`. The window sits at the *start* of the n_fft buffer
  (librosa centres it); that only changes the phase, never the power spectrum.
- causal framing: the signal is left-padded with `win_length - hop_length` zeros, so frame
  t covers samples `[(t+1)*hop - win, (t+1)*hop)` and `N` samples give `N // hop` frames.
  So frame t equals librosa's frame t (center=False) of the signal left-padded with
  `(n_fft - win) // 2 + (win - hop)` zeros (librosa centres the window in n_fft).
- output: `log(max(mel, floor))` with `floor = 1e-10`, natural log, float32.

The DFT is a real matmul against a windowed cos/sin basis (MXU friendly on TPU, exact in
float32 at HIGHEST precision); cost is tiny next to the encoder.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.common import axes, sharding

_HIGHEST = jax.lax.Precision.HIGHEST

# Slaney mel scale constants: linear 200/3 Hz per mel below 1 kHz, log above.
_F_SP = 200.0 / 3.0
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
  """Slaney mel of frequencies in Hz (float64 numpy)."""
  hz = np.asarray(hz, np.float64)
  lin = hz / _F_SP
  log = _MIN_LOG_MEL + np.log(np.maximum(hz, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOG_STEP
  return np.where(hz >= _MIN_LOG_HZ, log, lin)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
  """Inverse of `hz_to_mel`."""
  mel = np.asarray(mel, np.float64)
  lin = mel * _F_SP
  log = _MIN_LOG_HZ * np.exp(_LOG_STEP * (np.maximum(mel, _MIN_LOG_MEL) - _MIN_LOG_MEL))
  return np.where(mel >= _MIN_LOG_MEL, log, lin)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
  """Triangular Slaney-normalised mel filters `[n_mels, n_fft // 2 + 1]` (float64).

  Filter i rises from mel point i to i+1 and falls to i+2 over `n_mels + 2` points
  evenly spaced in mel between fmin and fmax; each is scaled by 2 / (bandwidth in Hz)
  so that filters have equal area.
  """
  fmax = sample_rate / 2.0 if fmax is None else float(fmax)
  fft_hz = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
  points_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
  widths = np.diff(points_hz)                       # [n_mels + 1]
  dist = points_hz[:, None] - fft_hz[None, :]       # [n_mels + 2, bins]
  rising = -dist[:-2] / widths[:-1, None]
  falling = dist[2:] / widths[1:, None]
  weights = np.maximum(0.0, np.minimum(rising, falling))
  weights *= (2.0 / (points_hz[2:] - points_hz[:-2]))[:, None]
  weights.setflags(write=False)
  return weights


@functools.lru_cache(maxsize=16)
def windowed_dft_basis(win_length: int, n_fft: int) -> np.ndarray:
  """`[win_length, 2 * (n_fft // 2 + 1)]` float32: periodic Hann times [cos | -sin]."""
  n = np.arange(win_length, dtype=np.float64)
  window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / win_length)   # periodic Hann
  k = np.arange(n_fft // 2 + 1, dtype=np.float64)
  ang = 2.0 * np.pi * np.outer(n, k) / n_fft
  basis = np.concatenate([np.cos(ang), -np.sin(ang)], axis=1) * window[:, None]
  basis = basis.astype(np.float32)
  basis.setflags(write=False)
  return basis


FrontendState = dict[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class LogMelFrontend:
  """Causal log-mel features: samples `[B, N]` -> `[B, N // hop, n_mels]` (float32).

  Holds only scalars (hashable), so it can sit on an NNX module as static data.
  """

  sample_rate: int = 16000
  n_mels: int = 80
  win_ms: float = 25.0
  hop_ms: float = 10.0
  n_fft: int = 512
  fmin: float = 0.0
  fmax: float | None = None
  floor: float = 1e-10

  def __post_init__(self):
    for name, ms in (("win_ms", self.win_ms), ("hop_ms", self.hop_ms)):
      n = self.sample_rate * ms / 1000.0
      if n != int(n) or n <= 0:
        raise ValueError(f"audio.{name}={ms} is not a positive whole number of samples at "
                         f"{self.sample_rate} Hz")
    if self.win_length > self.n_fft:
      raise ValueError(f"audio.win_ms={self.win_ms} ({self.win_length} samples) exceeds "
                       f"audio.n_fft={self.n_fft}")
    if self.hop_length > self.win_length:
      raise ValueError(f"audio.hop_ms={self.hop_ms} exceeds audio.win_ms={self.win_ms}")

  @classmethod
  def from_config(cls, audio_cfg) -> "LogMelFrontend":
    """From `config.audio` (sample_rate, n_mels, win_ms, hop_ms, n_fft)."""
    return cls(sample_rate=int(audio_cfg.sample_rate), n_mels=int(audio_cfg.n_mels),
               win_ms=float(audio_cfg.win_ms), hop_ms=float(audio_cfg.hop_ms),
               n_fft=int(audio_cfg.n_fft))

  @property
  def win_length(self) -> int:
    return int(round(self.sample_rate * self.win_ms / 1000.0))

  @property
  def hop_length(self) -> int:
    return int(round(self.sample_rate * self.hop_ms / 1000.0))

  @property
  def tail_length(self) -> int:
    """Samples carried between streaming chunks: `win - hop`."""
    return self.win_length - self.hop_length

  @property
  def num_bins(self) -> int:
    return self.n_fft // 2 + 1

  def filterbank(self) -> np.ndarray:
    """`[n_mels, n_fft // 2 + 1]` float64 Slaney mel filters."""
    return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self.fmax)

  # ---- core --------------------------------------------------------------------------
  def _frames(self, padded_bn: jax.Array, num_frames: int) -> jax.Array:
    """Frames `[B, T, win]`: frame t = padded[t*hop : t*hop + win]."""
    idx = (np.arange(num_frames)[:, None] * self.hop_length
           + np.arange(self.win_length)[None, :])
    return padded_bn[:, idx]

  def power_mel(self, frames_btw: jax.Array) -> jax.Array:
    """Frames `[B, T, win]` -> mel power `[B, T, n_mels]` (float32)."""
    basis = jnp.asarray(windowed_dft_basis(self.win_length, self.n_fft))
    spec = jnp.einsum("btw,wk->btk", frames_btw.astype(jnp.float32), basis,
                      precision=_HIGHEST)
    re, im = jnp.split(spec, 2, axis=-1)
    power = re * re + im * im                                   # [B, T, bins]
    fb = jnp.asarray(self.filterbank().T.astype(np.float32))    # [bins, n_mels]
    return jnp.einsum("btk,km->btm", power, fb, precision=_HIGHEST)

  def _log(self, mel_btm: jax.Array) -> jax.Array:
    return jnp.log(jnp.maximum(mel_btm, self.floor))

  def __call__(self, samples_bn: jax.Array,
               mask_bn: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """samples `[B, N]` (+ validity `[B, N]`) -> (log-mel `[B, N // hop, n_mels]`, mask `[B, T]`).

    A frame is valid iff its last sample is valid (right padding never leaks into valid
    frames because framing is causal).
    """
    b, n = samples_bn.shape
    t = n // self.hop_length
    x = samples_bn.astype(jnp.float32)
    if mask_bn is not None:
      x = jnp.where(mask_bn, x, 0.0)
    padded = jnp.pad(x, ((0, 0), (self.tail_length, 0)))
    feats = self._log(self.power_mel(self._frames(padded, t)))
    feats = sharding.shard_logical(feats, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MEL))
    if mask_bn is None:
      mask = jnp.ones((b, t), bool)
    else:
      mask = mask_bn[:, self.hop_length - 1::self.hop_length][:, :t].astype(bool)
    return feats, mask

  # ---- streaming ---------------------------------------------------------------------
  def init_state(self, batch: int) -> FrontendState:
    """Zero tail `[B, win - hop]` (the causal left padding)."""
    return {"tail": jnp.zeros((batch, self.tail_length), jnp.float32)}

  def extend_step(self, samples_bn: jax.Array,
                  state: FrontendState) -> tuple[jax.Array, FrontendState]:
    """A chunk `[B, n]` with n % hop == 0 -> (log-mel `[B, n // hop, n_mels]`, state)."""
    n = samples_bn.shape[1]
    if n % self.hop_length:
      raise ValueError(f"LogMelFrontend.extend_step: chunk of {n} samples is not a multiple "
                       f"of the hop ({self.hop_length})")
    x = jnp.concatenate([state["tail"], samples_bn.astype(jnp.float32)], axis=1)
    feats = self._log(self.power_mel(self._frames(x, n // self.hop_length)))
    return feats, {"tail": x[:, x.shape[1] - self.tail_length:]}

  def flops_per_frame(self) -> int:
    """Matmul FLOPs of one frame: windowed DFT + mel projection."""
    return 2 * self.win_length * 2 * self.num_bins + 2 * self.num_bins * self.n_mels
