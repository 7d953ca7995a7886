"""Log-mel frontend: filterbank and mel power vs librosa; chunked streaming == full."""

import jax
import jax.numpy as jnp
import librosa
import numpy as np
import pytest

from configs import micro
from liveinterp.layers import audio_frontend as af


def _fe():
  return af.LogMelFrontend.from_config(micro.get_config().audio)


def _signal(n, seed=0):
  """A chirp plus noise with silence at the start (exercises the log floor region)."""
  rng = np.random.default_rng(seed)
  t = np.arange(n) / 16000.0
  y = 0.3 * np.sin(2 * np.pi * (200 + 2000 * t) * t) + 0.05 * rng.standard_normal(n)
  y[:800] = 0.0
  return y.astype(np.float32)


@pytest.mark.parametrize("sr,n_fft,n_mels,fmin,fmax", [
    (16000, 512, 80, 0.0, None),
    (16000, 400, 40, 20.0, 7600.0),
    (24000, 1024, 128, 0.0, 10000.0),
])
def test_filterbank_matches_librosa_slaney(sr, n_fft, n_mels, fmin, fmax):
  ours = af.mel_filterbank(sr, n_fft, n_mels, fmin, fmax)
  ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                            htk=False, norm="slaney", dtype=np.float64)
  assert ours.shape == (n_mels, n_fft // 2 + 1)
  np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(af.mel_to_hz(af.hz_to_mel(np.array([50.0, 999.0, 1000.0,
                                                                  4321.0]))),
                             [50.0, 999.0, 1000.0, 4321.0], rtol=1e-12)


def test_features_match_librosa_melspectrogram():
  fe = _fe()
  assert (fe.win_length, fe.hop_length, fe.n_fft, fe.n_mels) == (400, 160, 512, 80)
  y = _signal(16000)
  feats, mask = jax.jit(fe.__call__)(jnp.asarray(y[None]))
  assert feats.shape == (1, 100, 80) and feats.dtype == jnp.float32
  assert bool(mask.all())
  # Causal frame t covers y[(t+1)*hop - win : (t+1)*hop]; librosa (center=False) centres
  # the 400-sample window in the 512 FFT buffer, so pad its input on the left.
  lpad = (fe.n_fft - fe.win_length) // 2 + fe.win_length - fe.hop_length
  ref = librosa.feature.melspectrogram(
      y=np.pad(y.astype(np.float64), (lpad, 0)), sr=16000, n_fft=512, hop_length=160,
      win_length=400, window="hann", center=False, power=2.0, n_mels=80, htk=False,
      norm="slaney").T                                        # [T_ref, 80]
  n = ref.shape[0]
  assert n >= 98
  ours = np.exp(np.asarray(feats[0, :n], np.float64))
  big = ref > 1e-6 * ref.max()
  np.testing.assert_allclose(ours[big], ref[big], rtol=2e-4)
  np.testing.assert_allclose(np.asarray(feats[0, :n]), np.log(np.maximum(ref, 1e-10)),
                             atol=2e-3)
  # Leading digital silence hits the floor exactly.
  np.testing.assert_allclose(np.asarray(feats[0, 0]), np.log(1e-10), atol=1e-5)


def test_chunked_streaming_equals_full_and_mask():
  fe = _fe()
  y = np.stack([_signal(8000, 1), _signal(8000, 2)])
  full, _ = fe(jnp.asarray(y))
  step = jax.jit(fe.extend_step)
  state = fe.init_state(2)
  assert state["tail"].shape == (2, 240)
  outs, start = [], 0
  for n in (160, 1600, 3200, 480, 2560):
    o, state = step(jnp.asarray(y[:, start:start + n]), state)
    outs.append(np.asarray(o))
    start += n
  assert start == 8000
  np.testing.assert_allclose(np.concatenate(outs, 1), np.asarray(full), rtol=1e-6, atol=1e-5)
  # Frame validity from a sample mask: frame t valid iff sample (t+1)*hop-1 is.
  mask = np.arange(8000)[None] < np.array([[8000], [1000]])
  feats, fmask = fe(jnp.asarray(y), jnp.asarray(mask))
  assert fmask.shape == (2, 50)
  np.testing.assert_array_equal(np.asarray(fmask).sum(1), [50, 6])
  # Valid frames do not see the padding (it is zeroed, framing is causal).
  short, _ = fe(jnp.asarray(y[1:, :960]))
  np.testing.assert_allclose(np.asarray(feats[1, :6]), np.asarray(short[0]), atol=1e-5)
  with pytest.raises(ValueError, match="multiple of the hop"):
    fe.extend_step(jnp.zeros((2, 100)), fe.init_state(2))
