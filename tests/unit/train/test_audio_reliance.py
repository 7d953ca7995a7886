"""Audio reliance and the auxiliary CTC loss of the stream stages (issue #9 §1).

A decoder that ignores its audio has the same loss with zeroed or swapped audio; these
tests pin the measurement itself, the pieces of the fix (adapter output norm, CTC on the
adapter output through the LLM embedding table) and, on micro, that ASR training opens
the gap.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import micro
from liveinterp.models import adapter as adapter_lib, s2st
from liveinterp.train.stages import stream_lm


def _batch(b=3, slots=4, s=16, seq=12, seed=0):
  rng = np.random.default_rng(seed)
  seg = np.zeros((b, slots), np.int32)
  for i, n in enumerate([4, 2, 3][:b]):
    seg[i, :n] = 1
  audio = rng.integers(-3000, 3000, (b, slots, s)).astype(np.int16) * seg[..., None]
  return dict(audio=jnp.asarray(audio), audio_segment_ids=jnp.asarray(seg),
              tokens=jnp.zeros((b, seq), jnp.int32))


def test_audio_variants_zero_and_swap_keep_each_rows_own_slots():
  batch = _batch()
  v = stream_lm.audio_variants(batch)
  assert not np.any(np.asarray(v["zero"]["audio"]))
  sw, a, seg = (np.asarray(v["swap"]["audio"]), np.asarray(batch["audio"]),
                np.asarray(batch["audio_segment_ids"]))
  for i in range(3):
    j = (i - 1) % 3                      # row i hears row i-1's audio ...
    own = seg[i] > 0                     # ... only in its own slots
    np.testing.assert_array_equal(sw[i][own], a[j][own])
    assert not np.any(sw[i][~own])
  assert v["swap"]["tokens"] is batch["tokens"]


def test_audio_reliance_is_zero_for_a_loss_that_ignores_audio_and_positive_otherwise():
  batches = [_batch(seed=s) for s in range(2)]
  deaf = lambda m, b: (0.0, {"lm_loss": jnp.float32(1.5)})  # noqa: E731
  r = stream_lm.audio_reliance(deaf, None, batches)
  assert r["gap_zero"] == 0 and r["gap_swap"] == 0
  # a "listening" loss: low when the audio is the real one
  ref = {id(b): np.asarray(b["audio"]) for b in batches}
  def listening(m, b):
    err = min(float(np.abs(np.asarray(b["audio"]) - r_).mean()) for r_ in ref.values())
    return 0.0, {"lm_loss": jnp.float32(1.0 + err)}
  r = stream_lm.audio_reliance(listening, None, batches)
  assert r["gap_zero"] > 100 and r["gap_swap"] > 100


def test_adapter_output_is_normalised_to_token_scale():
  x = 50.0 * jax.random.normal(jax.random.key(0), (2, 8, 6))
  with nnx.use_eager_sharding(False):
    on = adapter_lib.Adapter(6, 16, 2, rngs=nnx.Rngs(0))
    off = adapter_lib.Adapter(6, 16, 2, out_norm=False, rngs=nnx.Rngs(0))
  y, _ = on(x)
  rms = np.sqrt(np.mean(np.square(np.asarray(y)), axis=-1))
  np.testing.assert_allclose(rms, 1.0, rtol=1e-3)
  y_off, _ = off(x)
  assert np.sqrt(np.mean(np.square(np.asarray(y_off)))) > 5.0


def test_ctc_loss_ignores_unlabelled_rows_and_rewards_the_spoken_tokens():
  cfg = micro.get_config()
  with nnx.use_eager_sharding(False):
    model = s2st.S2ST(cfg, rngs=nnx.Rngs(0))
  d = cfg.encoder.d_model
  labels = np.asarray([[33, 35, 0, 0], [34, 0, 0, 0]], np.int32)
  # a head that reads the token id off the frame: frames = one-hot rows of a basis
  basis = np.random.default_rng(0).standard_normal((model.ctc_ids, d)).astype(np.float32)
  model.ctc_head.kernel[...] = jnp.asarray(8.0 * basis.T)
  spell = [[33, 0, 35, 0, 0, 0], [34, 0, 0, 0, 0, 0]]      # labels with blanks between
  def frames_of(ids):  # frame k scores 8 for its own id, ~0 for the others
    ids = np.asarray(ids)
    return jnp.asarray(basis[ids] / np.sum(basis ** 2, 1)[ids][..., None])
  frames = frames_of(spell)
  mask = jnp.ones((2, 6), bool)
  batch = dict(src_ids=jnp.asarray(labels), src_len=jnp.asarray([2, 1], jnp.int32))
  good, n = stream_lm.ctc_loss(model, frames, mask, batch)
  assert int(n) == 2
  other = np.random.default_rng(1).integers(1, model.ctc_ids, (2, 6))
  rnd = frames_of(other)
  bad, _ = stream_lm.ctc_loss(model, rnd, mask, batch)
  assert float(good) < float(bad)
  # an unlabelled row (src_len 0) changes nothing
  batch3 = dict(src_ids=jnp.asarray(np.concatenate([labels, labels[:1]])),
                src_len=jnp.asarray([2, 1, 0], jnp.int32))
  l3, n3 = stream_lm.ctc_loss(model, jnp.concatenate([frames, rnd[:1]]),
                              jnp.ones((3, 6), bool), batch3)
  assert int(n3) == 2
  np.testing.assert_allclose(float(l3), float(good), rtol=1e-5)
