"""Composite model: audio splicing, and streaming pieces == the training forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import micro
from liveinterp.common import mesh as mesh_lib, sharding
from liveinterp.models import s2st

AUDIO_ID = 7


def test_splice_audio_places_embeddings_in_order():
  tok = jnp.zeros((1, 6, 2))
  slot = jnp.asarray([[0, 1, 1, 0, 1, 1]], bool)
  audio = jnp.arange(1, 7, dtype=jnp.float32).reshape(1, 3, 2)
  out = np.asarray(s2st.splice_audio(tok, slot, audio))
  np.testing.assert_array_equal(out[0, :, 0], [0, 1, 3, 0, 5, 0])  # 4th slot: no audio left


def _stream(cfg, turns, rng):
  spc = s2st.slots_per_chunk(cfg)
  tokens, slots = [], []
  for n in turns:
    tokens += [AUDIO_ID] * spc
    slots += [True] * spc
    turn = list(rng.integers(40, cfg.llm.vocab_size, n))
    tokens += turn
    slots += [False] * n
  return np.asarray([tokens], np.int32), np.asarray([slots])


def test_streaming_equals_training_forward():
  cfg = micro.get_config()
  model = s2st.S2ST(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  turns = [2, 0, 3]
  tokens, slots = _stream(cfg, turns, rng)
  audio = (rng.standard_normal((1, len(turns) * model.chunk_samples)) * 0.1).astype(np.float32)
  logits_full, values_full = nnx.jit(lambda m, *a: m(*a))(
      model, jnp.asarray(tokens), jnp.asarray(audio), jnp.asarray(slots))

  read = nnx.jit(lambda m, st, x: m.read_chunk(st, x))
  write = nnx.jit(lambda m, st, t: m.write_tokens(st, t))
  state = model.init_stream(1)
  pos, spc = 0, model.slots_per_chunk
  for t, n in enumerate(turns):
    chunk = audio[:, t * model.chunk_samples:(t + 1) * model.chunk_samples]
    lg, val, state = read(model, state, jnp.asarray(chunk))
    pos += spc
    np.testing.assert_allclose(lg[0], logits_full[0, pos - 1], atol=2e-4, rtol=2e-4)
    np.testing.assert_allclose(val[0], values_full[0, pos - 1], atol=2e-4, rtol=2e-4)
    if n:
      lg, val, state = write(model, state, jnp.asarray(tokens[:, pos:pos + n]))
      np.testing.assert_allclose(lg[0], logits_full[0, pos:pos + n], atol=2e-4, rtol=2e-4)
      pos += n
  assert int(state.cache.length[0]) == tokens.shape[1]


def test_unpadded_audio_is_rejected():
  cfg = micro.get_config()
  model = s2st.S2ST(cfg, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="whole number of chunks"):
    model.audio_embeddings(jnp.zeros((1, model.chunk_samples + 5)))


def test_sharded_forward_backward_equals_unsharded():
  cfg = micro.get_config()
  rng = np.random.default_rng(1)
  tokens, slots = _stream(cfg, [1, 2], rng)
  tokens, slots = np.repeat(tokens, 4, 0), np.repeat(slots, 4, 0)
  model0 = s2st.S2ST(cfg, rngs=nnx.Rngs(0))
  audio = (rng.standard_normal((4, 2 * model0.chunk_samples)) * 0.1).astype(np.float32)

  def loss(model):
    logits, values = model(jnp.asarray(tokens), jnp.asarray(audio), jnp.asarray(slots))
    return jnp.mean(jax.nn.logsumexp(logits, -1)) + jnp.mean(values ** 2)

  l0, g0 = nnx.jit(nnx.value_and_grad(loss))(model0)
  cfg.mesh.ici_data, cfg.mesh.ici_fsdp, cfg.mesh.ici_tensor = 2, 2, 2
  mesh = mesh_lib.create_mesh(cfg.mesh)
  with sharding.use_mesh(mesh, sharding.rules_from_config(cfg.logical_axis_rules)):
    model8 = s2st.S2ST(cfg, rngs=nnx.Rngs(0))
    l8, g8 = nnx.jit(nnx.value_and_grad(loss))(model8)
  np.testing.assert_allclose(float(l8), float(l0), rtol=1e-5)
  for a, b in zip(jax.tree.leaves(nnx.state(g0)), jax.tree.leaves(nnx.state(g8))):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-4)
  emb = model8.llm.embedder.embedding[...]
  assert emb.sharding.spec != jax.sharding.PartitionSpec()
