"""The pure train step: sharded on a (2,2,2) mesh == unsharded; params really sharded."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import micro
from liveinterp.common import mesh as mesh_lib, sharding
from liveinterp.train import optimizer, step as step_lib, train_state
from tests.tiny_models import TinyLM, lm_loss as loss_fn


def _run(mesh_kw, steps=3):
  c = micro.get_config()
  for k, v in mesh_kw.items():
    c.mesh[k] = v
  devices = jax.devices()[: int(np.prod(list(mesh_kw.values())))] if mesh_kw else jax.devices()[:1]
  mesh = mesh_lib.create_mesh(c.mesh, devices)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  model_fn = lambda rngs: TinyLM(64, 16, 32, rngs)
  graphdef, state, shard = train_state.create_train_state(model_fn, tx, mesh, rules, seed=1)
  rng = np.random.default_rng(0)
  ids = rng.integers(0, 64, (8, 9)).astype(np.int32)
  batch = {"inputs": jnp.asarray(ids[:, :-1]), "targets": jnp.asarray(ids[:, 1:])}
  abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  step = step_lib.make_train_step(graphdef, loss_fn, tx)
  compiled, batch_sh = step_lib.compile_step(step, abstract, shard, abstract_batch, mesh, rules)
  batch = jax.device_put(batch, batch_sh)
  losses = []
  for i in range(steps):
    state, metrics = compiled(state, batch, jax.random.key(0))
    losses.append(float(metrics["train/loss"]))
  return state, losses


def test_sharded_step_equals_unsharded_and_params_are_sharded():
  s1, l1 = _run({"ici_data": 1, "ici_fsdp": 1, "ici_tensor": 1})
  s8, l8 = _run({"ici_data": 2, "ici_fsdp": 2, "ici_tensor": 2})
  np.testing.assert_allclose(l1, l8, rtol=1e-5)
  assert l8[-1] < l8[0]
  for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s8.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  up = s8.params["up"]["kernel"][...]
  assert up.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
  assert up.addressable_shards[0].data.shape == (8, 16)
  emb = s8.params["embed"]["embedding"][...]
  assert emb.sharding.spec == jax.sharding.PartitionSpec("tensor", "fsdp")
  mu = s8.opt_state[1][0].mu["up"]["kernel"][...]
  assert mu.sharding.spec == up.sharding.spec  # optimizer state follows the params


def test_nonfinite_step_is_skipped():
  c = micro.get_config()
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  graphdef, state, shard = train_state.create_train_state(
      lambda r: TinyLM(16, 8, 8, r), tx, mesh, rules)

  def bad_loss(model, batch, rng):
    loss, aux = loss_fn(model, batch, rng)
    return loss * batch["scale"], aux

  step = jax.jit(step_lib.make_train_step(graphdef, bad_loss, tx))
  ids = jnp.zeros((2, 4), jnp.int32)
  before = jax.tree.map(np.asarray, state.params)
  state, m = step(state, {"inputs": ids, "targets": ids, "scale": jnp.float32(jnp.nan)},
                  jax.random.key(0))
  assert int(m["train/skipped"]) == 1 and int(state.step) == 1
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(a, np.asarray(b))


def test_step_with_nonfinite_new_params_is_skipped():
  """Finite loss and gradients but a NaN learning rate: the new parameters would be
  non-finite, so the step is skipped (params and optimizer state unchanged) — before
  issue #12 only loss and gradient norm were checked and NaN params were written."""
  c = micro.get_config()
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  ids = jnp.asarray(np.random.default_rng(0).integers(0, 16, (2, 5)), jnp.int32)
  batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
  c.train.learning_rate = float("nan")  # validate() rejects it now; the step must cope
  c.train.warmup_steps = 0
  tx = optimizer.make_optimizer(c.train)
  graphdef, state, _ = train_state.create_train_state(
      lambda r: TinyLM(16, 8, 8, r), tx, mesh, rules)
  before = jax.tree.map(np.asarray, (state.params, state.opt_state))
  step = jax.jit(step_lib.make_train_step(graphdef, loss_fn, tx))
  state, m = step(state, batch, jax.random.key(0))
  assert np.isfinite(float(m["train/loss"])) and np.isfinite(float(m["train/grad_norm"]))
  assert int(m["train/skipped"]) == 1 and int(state.step) == 1
  after = jax.tree.map(np.asarray, (state.params, state.opt_state))
  for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)):
    np.testing.assert_array_equal(a, b)


# ---- the real S2ST model and stream loss (issue #11) ----------------------------------

S2ST_MESH = ("mesh.ici_data", "mesh.ici_fsdp", "mesh.ici_tensor")


def _s2st_batch(cfg, b=8, seq=64, slots=16, seed=0):
  """A synthetic SFT-shaped batch, as `pipelines.stream_dataset` pads one (unpacked):
  row i is `<ctrl> <audio>×n_i words…` with n_i audio slots, its source audio, loss on
  the words (text and speech tokens), frame labels per encoder frame (-1 = none)."""
  rng = np.random.default_rng(seed)
  spec_frame_ms = cfg.audio.hop_ms * cfg.encoder.subsample
  stack = int(cfg.adapter.stack)
  per_slot = int(cfg.audio.sample_rate * spec_frame_ms * stack // 1000)
  text0 = 32                                          # tokenizer.NUM_SPECIAL_TOKENS
  speech0 = text0 + int(cfg.tokenizer.text_vocab_size)
  tokens = np.zeros((b, seq), np.int32)
  loss_mask, slot_mask, seg, pos = (np.zeros((b, seq), np.int32) for _ in range(4))
  audio = np.zeros((b, slots, per_slot), np.int16)
  audio_seg = np.zeros((b, slots), np.int32)
  src_frames = np.full((b, slots * stack), -1, np.int32)
  for i in range(b):
    n = slots - i                                     # audio slots of the row
    words = 20 + 3 * i
    length = 1 + n + words
    tokens[i, 0] = 5                                  # a control token
    tokens[i, 1 + n:length] = np.where(rng.random(words) < 0.7,
                                       rng.integers(text0, speech0, words),
                                       rng.integers(speech0, cfg.llm.vocab_size, words))
    slot_mask[i, 1:1 + n] = 1
    loss_mask[i, 1 + n:length] = 1
    seg[i, :length] = 1
    pos[i, :length] = np.arange(length)
    audio[i, :n] = rng.integers(-8000, 8000, (n, per_slot))
    audio_seg[i, :n] = 1
    src_frames[i, :n * stack] = rng.integers(0, text0 + 40, n * stack)
  return {k: jnp.asarray(v) for k, v in dict(
      tokens=tokens, loss_mask=loss_mask, audio_slot_mask=slot_mask, segment_ids=seg,
      positions=pos, audio=audio, audio_segment_ids=audio_seg,
      src_ids=np.zeros((b, 8), np.int32), src_len=np.zeros((b,), np.int32),
      src_frames=src_frames).items()}


def _s2st_parts(mesh_shape):
  """(config, mesh, rules, optimizer, model_fn) of the micro S2ST sft stage on a mesh of
  `mesh_shape` (data, fsdp, tensor) over the first devices."""
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  from liveinterp.models import s2st  # pylint: disable=g-import-not-at-top
  overrides = [f"{k}={v}" for k, v in zip(S2ST_MESH, mesh_shape)]
  cfg = config_lib.load("configs/micro.py:sft", overrides + ["train.warmup_steps=0"])
  mesh = mesh_lib.create_mesh(cfg.mesh, jax.devices()[:int(np.prod(mesh_shape))])
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  return (cfg, mesh, rules, optimizer.make_optimizer(cfg.train),
          lambda rngs: s2st.S2ST(cfg, rngs=rngs))


def _run_s2st(cfg, mesh, rules, tx, graphdef, state, shard, steps=2):
  """`steps` real train steps from `state` (the trainer's stream loss, step and compile
  path, liveinterp/train/loop.py) on the same synthetic batch; (state, metrics)."""
  from liveinterp.train.stages import stream_lm  # pylint: disable=g-import-not-at-top
  speech_offset = 32 + int(cfg.tokenizer.text_vocab_size)
  weights = stream_lm.aux_loss_weights(cfg)
  step = step_lib.make_train_step(
      graphdef, lambda m, b, r: stream_lm.loss_fn(m, b, r, speech_offset, **weights), tx,
      optimizer.learning_rate_schedule(cfg.train))
  batch = _s2st_batch(cfg)
  abstract_batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  compiled, batch_sh = step_lib.compile_step(step, abstract, shard, abstract_batch, mesh,
                                             rules, log_memory=False)
  batch = jax.device_put(batch, batch_sh)
  metrics = []
  for _ in range(steps):
    state, m = compiled(state, batch, jax.random.key(0))
    metrics.append(jax.tree.map(float, m))
  return state, metrics


# Parameters the SFT loss does not reach (the value head is RL's; with frame_tied the
# CTC head only sees weight decay, which spares vectors): Adam leaves them unchanged.
S2ST_UNTRAINED = ("['ctc_head']['bias']", "['llm']['value_head']['bias']",
                  "['llm']['value_norm']['scale']")


@pytest.mark.slow  # two step compiles + one init: ~2.5 min of CPU (issue #11 asked < 60 s)
def test_sharded_s2st_step_equals_single_device():
  """The real micro S2ST model and stream loss: two train steps on a (2,2,2)
  data/fsdp/tensor mesh give the loss, auxiliary metrics and updated parameters of one
  device (same initial state, resharded; same batch; fp32 reductions only change order).
  The state is initialised once (`create_train_state`, on one device) and put into the
  mesh's shardings, which saves compiling the init a second time."""
  cfg1, mesh1, rules1, tx1, model_fn1 = _s2st_parts((1, 1, 1))
  graphdef1, state1, shard1 = train_state.create_train_state(model_fn1, tx1, mesh1, rules1,
                                                             seed=3)
  init = jax.tree.map(np.asarray, state1.params)
  cfg8, mesh8, rules8, tx8, model_fn8 = _s2st_parts((2, 2, 2))
  graphdef8, _, shard8 = train_state.abstract_state(model_fn8, tx8, mesh8, rules8)
  # A copy first: device_put may alias device 0's buffers, and state1 is donated below.
  state8 = jax.device_put(jax.tree.map(jnp.copy, state1), shard8)
  s1, m1 = _run_s2st(cfg1, mesh1, rules1, tx1, graphdef1, state1, shard1)
  s8, m8 = _run_s2st(cfg8, mesh8, rules8, tx8, graphdef8, state8, shard8)
  for k in ("train/loss", "train/lm_loss", "train/frame_loss", "train/grad_norm",
            "train/accuracy"):
    np.testing.assert_allclose([m[k] for m in m8], [m[k] for m in m1], rtol=1e-4,
                               err_msg=k)
  assert all(m["train/skipped"] == 0 for m in m1 + m8)
  assert m8[1]["train/loss"] < m8[0]["train/loss"]  # it trains
  flat1 = jax.tree_util.tree_flatten_with_path(s1.params)[0]
  p8 = jax.tree.leaves(s8.params)
  for (path, a), b, a0 in zip(flat1, p8, jax.tree.leaves(init)):
    name = jax.tree_util.keystr(path).removesuffix(".value")
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)
    assert np.any(a != a0) == (name not in S2ST_UNTRAINED), name  # the step updated it
  specs = {str(x.sharding.spec) for x in p8}
  assert any("fsdp" in s for s in specs) and any("tensor" in s for s in specs)
