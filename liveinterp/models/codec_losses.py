"""Codec training losses: multi-resolution STFT, log-mel L1 and the quantizer terms.

- STFT loss at each resolution (n_fft, hop, win): spectral convergence
  `||S - Ŝ||_F / ||S||_F` (per example, then averaged) plus log-magnitude L1
  `mean |log S - log Ŝ|`; averaged over resolutions. Frames are "valid" (no padding).
  The windowed DFT basis is the audio frontend's (`layers.audio_frontend`).
- Mel loss: L1 between log-mels of `LogMelFrontend` (config `audio`), with a higher floor
  (1e-5) than the recogniser's features so silence does not dominate.
- Quantizer: `quantizer_loss` from the codec output (commitment + codebook loss).

Adversarial and feature-matching losses (SoundStream/EnCodec discriminators) are left out
at this scale: they matter for perceptual quality of large codecs, cost a second model,
and are not needed for the token/voice plumbing this project tests. Losses assume
fixed-length crops (no padding masks).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.layers.audio_frontend import LogMelFrontend, windowed_dft_basis

_HIGHEST = jax.lax.Precision.HIGHEST
# (n_fft, hop, win) at 16 kHz: 32 ms / 16 ms / 8 ms windows.
DEFAULT_RESOLUTIONS = ((512, 128, 512), (256, 64, 256), (128, 32, 128))


def stft_magnitude(x_bn: jax.Array, n_fft: int, hop: int, win: int,
                   eps: float = 1e-7) -> jax.Array:
  """|STFT| with a periodic Hann window: [B, N] -> [B, F, n_fft // 2 + 1] (float32).

  Frame f covers samples `[f * hop, f * hop + win)`; F = (N - win) // hop + 1 (a signal
  shorter than `win` is right-padded to one frame). Magnitudes are floored at sqrt(eps).
  """
  x = x_bn.astype(jnp.float32)
  n = x.shape[1]
  if n < win:
    x = jnp.pad(x, ((0, 0), (0, win - n)))
    n = win
  num_frames = (n - win) // hop + 1
  idx = np.arange(num_frames)[:, None] * hop + np.arange(win)[None, :]
  basis = jnp.asarray(windowed_dft_basis(win, n_fft))            # [win, 2 * bins]
  spec = jnp.einsum("bfw,wk->bfk", x[:, idx], basis, precision=_HIGHEST)
  re, im = jnp.split(spec, 2, axis=-1)
  return jnp.sqrt(jnp.maximum(re * re + im * im, eps))


def spectral_convergence(mag_ref_bfk: jax.Array, mag_bfk: jax.Array) -> jax.Array:
  """Mean over the batch of ||S - Ŝ||_F / ||S||_F."""
  num = jnp.sqrt(jnp.sum(jnp.square(mag_ref_bfk - mag_bfk), axis=(1, 2)))
  den = jnp.sqrt(jnp.sum(jnp.square(mag_ref_bfk), axis=(1, 2)))
  return jnp.mean(num / jnp.maximum(den, 1e-7))


def log_magnitude_l1(mag_ref_bfk: jax.Array, mag_bfk: jax.Array) -> jax.Array:
  """mean |log S - log Ŝ| (magnitudes are already floored)."""
  return jnp.mean(jnp.abs(jnp.log(mag_ref_bfk) - jnp.log(mag_bfk)))


def multi_resolution_stft_loss(ref_bn: jax.Array, est_bn: jax.Array,
                               resolutions=DEFAULT_RESOLUTIONS) -> dict[str, jax.Array]:
  """Averages over resolutions: {'spectral_convergence', 'log_magnitude', 'stft'}."""
  sc, lm = 0.0, 0.0
  for n_fft, hop, win in resolutions:
    s_ref = stft_magnitude(ref_bn, n_fft, hop, win)
    s_est = stft_magnitude(est_bn, n_fft, hop, win)
    sc = sc + spectral_convergence(s_ref, s_est)
    lm = lm + log_magnitude_l1(s_ref, s_est)
  k = float(len(resolutions))
  return {"spectral_convergence": sc / k, "log_magnitude": lm / k, "stft": (sc + lm) / k}


def mel_l1_loss(ref_bn: jax.Array, est_bn: jax.Array, frontend: LogMelFrontend) -> jax.Array:
  """L1 distance of log-mels [B, N // hop, n_mels] of reference and estimate."""
  m_ref, _ = frontend(ref_bn)
  m_est, _ = frontend(est_bn)
  return jnp.mean(jnp.abs(m_ref - m_est))


@dataclasses.dataclass(frozen=True)
class CodecLossConfig:
  """Loss weights and settings (from `cfg.codec` optional fields, with defaults)."""

  stft_weight: float = 1.0
  mel_weight: float = 1.0
  waveform_weight: float = 0.0
  quantizer_weight: float = 1.0
  resolutions: tuple = DEFAULT_RESOLUTIONS
  frontend: LogMelFrontend = LogMelFrontend(floor=1e-5)

  @classmethod
  def from_config(cls, cfg) -> "CodecLossConfig":
    cc, a = cfg.codec, cfg.audio
    frontend = LogMelFrontend(sample_rate=int(a.sample_rate), n_mels=int(a.n_mels),
                              win_ms=float(a.win_ms), hop_ms=float(a.hop_ms),
                              n_fft=int(a.n_fft), floor=1e-5)
    res = tuple(tuple(int(v) for v in r) for r in cc.get("stft_resolutions",
                                                         DEFAULT_RESOLUTIONS))
    return cls(stft_weight=float(cc.get("stft_weight", 1.0)),
               mel_weight=float(cc.get("mel_weight", 1.0)),
               waveform_weight=float(cc.get("waveform_weight", 0.0)),
               quantizer_weight=float(cc.get("quantizer_weight", 1.0)),
               resolutions=res, frontend=frontend)


def codec_loss(audio_bn: jax.Array, out: dict,
               loss_cfg: CodecLossConfig = CodecLossConfig()) -> tuple[jax.Array, dict]:
  """Total codec loss and metrics.

  Args:
    audio_bn: the target audio [B, N]; cropped to the reconstruction's length.
    out: `Codec.__call__` output (`recon` [B, T * hop], `quantizer_loss`, ...).
    loss_cfg: weights.

  Returns:
    (scalar loss, metrics dict with `codec/...` names).
  """
  recon = out["recon"]
  ref = audio_bn[:, :recon.shape[1]].astype(jnp.float32)
  stft = multi_resolution_stft_loss(ref, recon, loss_cfg.resolutions)
  mel = mel_l1_loss(ref, recon, loss_cfg.frontend)
  wave = jnp.mean(jnp.abs(ref - recon))
  recon_loss = (loss_cfg.stft_weight * stft["stft"] + loss_cfg.mel_weight * mel
                + loss_cfg.waveform_weight * wave)
  loss = recon_loss + loss_cfg.quantizer_weight * out["quantizer_loss"]
  metrics = {"codec/loss": loss, "codec/recon_loss": recon_loss,
             "codec/stft": stft["stft"],
             "codec/spectral_convergence": stft["spectral_convergence"],
             "codec/log_magnitude": stft["log_magnitude"], "codec/mel": mel,
             "codec/waveform_l1": wave,
             "codec/commitment": out["commitment_loss"],
             "codec/codebook": out["codebook_loss"],
             "codec/perplexity": out["perplexity"]}
  return loss, metrics
