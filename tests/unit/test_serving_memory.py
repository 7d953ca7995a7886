"""benchmarks/serving_memory: the per-device bytes it reports from abstract shapes equal
what a real micro decoder's weights and state hold on device 0 when placed with the same
shardings on 8 fake devices."""

import jax
import pytest

from benchmarks import serving_memory
from liveinterp.common import config as config_lib, sharding
from liveinterp.inference import decoder as decoder_lib
from liveinterp.inference import loading
from liveinterp.common import token_layout


BATCH = 8  # every mesh below divides it: one state, one init compile for all cases


@pytest.fixture(scope="module")
def micro():
  cfg = config_lib.load("micro:sft")
  model, codec, speaker = loading.build_models(cfg)  # random "fill" weights, no compile
  dec = decoder_lib.StreamingDecoder(model, codec, speaker,
                                     token_layout.TokenLayout.from_config(cfg), cfg,
                                     prompt_ids=())
  real = dec.init_stream(BATCH)
  real = real._replace(rng=jax.random.key_data(real.rng))  # bytes of the key data
  return cfg, dec, real, serving_memory.abstract_decoder(cfg, BATCH)


def _device0_bytes(arrays, shardings) -> int:
  dev = jax.devices()[0]
  total = 0
  for x, s in zip(arrays, shardings):
    placed = jax.device_put(x, s)
    total += sum(sh.data.nbytes for sh in placed.addressable_shards if sh.device == dev)
  return total


# (2, 2): kv heads (2) split over tensor; (1, 4), (2, 4): not divisible, replicated.
@pytest.mark.parametrize("mesh_shape", [(1, 4), (2, 2), (2, 4), (8, 1)])
def test_reported_bytes_equal_the_real_sharded_decoder(micro, mesh_shape):
  cfg, dec, real, (params, state, _) = micro
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  mesh = serving_memory.make_mesh(*mesh_shape)
  reported = serving_memory.per_device_bytes(params, state, mesh, rules)

  w_leaves = jax.tree.leaves(dec.params)
  assert _device0_bytes(w_leaves, serving_memory.param_shardings(dec.params, mesh, rules)) \
      == reported["weights"]

  flat = jax.tree_util.tree_flatten_with_path(real)[0]
  shards = serving_memory.state_shardings(state, mesh, rules)
  assert len(flat) == len(shards)
  kv = [(x, s) for (p, x), s in zip(flat, shards) if serving_memory.is_kv_leaf(p)]
  rest = [(x, s) for (p, x), s in zip(flat, shards) if not serving_memory.is_kv_leaf(p)]
  assert len(kv) == 2 * cfg.llm.num_layers           # k and v, one buffer per layer
  assert _device0_bytes(*zip(*kv)) == reported["kv_cache"]
  assert _device0_bytes(*zip(*rest)) == reported["other_state"]
  # The KV cache is L x B x K x W x Dh x 2 (k and v) in the compute dtype, split over
  # the data axis (batch) and the tensor axis (kv heads) where they divide.
  llm = cfg.llm
  data, tensor = mesh_shape
  k = llm.num_kv_heads // tensor if llm.num_kv_heads % tensor == 0 else llm.num_kv_heads
  assert reported["kv_cache"] == (llm.num_layers * (BATCH // data) * llm.window * k
                                  * llm.head_dim * 2 * real.model.cache.k[0].dtype.itemsize)


def test_rows_sum_and_sharding_shrinks_weights_and_cache(micro):
  cfg = micro[0]
  one, tp, dp = serving_memory.memory_rows("micro", [(1, 1), (1, 2), (2, 1)], [2], cfg=cfg)
  for r in (one, tp, dp):
    assert r["total_GiB"] == pytest.approx(
        r["weights_GiB"] + r["kv_cache_GiB"] + r["other_state_GiB"])
  assert tp["weights_GiB"] < one["weights_GiB"] and dp["weights_GiB"] == one["weights_GiB"]
  assert dp["kv_cache_GiB"] == one["kv_cache_GiB"] / 2
  # micro's weights are float32 (a few integer codebook counters stay as they are)
  assert one["weights_bf16_GiB"] == pytest.approx(one["weights_GiB"] / 2, rel=0.02)


def test_batches_the_data_axis_does_not_divide_are_skipped_and_bad_meshes_named(micro):
  assert serving_memory.memory_rows("micro", [(2, 1)], [1], cfg=micro[0]) == []
  with pytest.raises(ValueError, match="mesh '2y4'"):
    serving_memory.parse_mesh("2y4")
  with pytest.raises(ValueError, match="needs 16 devices"):
    serving_memory.make_mesh(4, 4)


def test_readme_renders_one_row_per_size_and_mesh_with_a_total_per_batch():
  from benchmarks import render_readme
  row = dict(size="1b", weights_dtype="float32", weights_GiB=4.5, weights_bf16_GiB=2.25,
             kv_cache_GiB=0.125, other_state_GiB=0.0, total_GiB=4.625)
  data = {"command": "python -m benchmarks.serving_memory", "compiled": [],
          "rows": [{**row, "mesh": "1x1", "batch": 1}, {**row, "mesh": "1x1", "batch": 16},
                   {**row, "mesh": "2x4", "batch": 16}]}
  lines = render_readme.render_serving_memory(data).splitlines()
  assert "| size | mesh (data x tensor) | weights (float32) | weights if bf16 | KV B=1 | " \
      "KV B=16 | total B=1 | total B=16 |" in lines
  assert "| 1b | 1x1 | 4.5 | 2.25 | 0.125 | 0.125 | 4.625 | 4.625 |" in lines
  assert "| 1b | 2x4 | 4.5 | 2.25 |  | 0.125 |  | 4.625 |" in lines  # B=1: no row there


def test_sharded_decoder_steps_equal_the_single_device_decoder(micro):
  """Issue #14: the decoder step with the weights over `tensor` and the streams over
  `data` (the serving shardings this benchmark reports, (2, 4) mesh of the 8 fake
  devices) writes the same tokens as the single-device decoder, chunk after chunk."""
  import jax.numpy as jnp
  import numpy as np
  from liveinterp.inference import decode_step
  cfg, dec, _, _ = micro
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  mesh = serving_memory.make_mesh(2, 4)
  rng = np.random.default_rng(0)
  audio = [jnp.asarray(0.3 * rng.standard_normal((BATCH, dec.chunk_samples)), jnp.float32)
           for _ in range(3)]
  m = dec.max_turn_tokens
  args = (jnp.ones((BATCH,), bool), jnp.zeros((BATCH, m), jnp.int32),
          jnp.full((BATCH,), -1, jnp.int32))

  def run(params, state):
    outs = []
    for a in audio:
      state, out = decode_step._step_keep(dec.spec, params, state, a, *args)  # pylint: disable=protected-access
      outs.append(jax.device_get(out))
    return outs

  ref = run(dec.params, dec.init_stream(BATCH))
  p_leaves, p_tree = jax.tree.flatten(dec.params)
  params = jax.tree.unflatten(p_tree, [jax.device_put(x, s) for x, s in zip(
      p_leaves, serving_memory.param_shardings(dec.params, mesh, rules))])
  state = dec.init_stream(BATCH)
  probe = state._replace(rng=jax.random.key_data(state.rng))
  s_leaves, s_tree = jax.tree.flatten(probe)
  placed = jax.tree.unflatten(s_tree, [jax.device_put(x, s) for x, s in zip(
      s_leaves, serving_memory.state_shardings(probe, mesh, rules))])
  # the stream keys (an extended dtype) replicated: their trailing key dims cannot split
  placed = placed._replace(rng=jax.device_put(state.rng, jax.sharding.NamedSharding(
      mesh, jax.sharding.PartitionSpec())))
  assert len({d for x in jax.tree.leaves(params) for d in x.devices()}) == 8
  with sharding.use_mesh(mesh, rules):
    got = run(params, placed)
  written = 0
  for r, g in zip(ref, got):
    np.testing.assert_array_equal(np.asarray(r.tokens), np.asarray(g.tokens))
    np.testing.assert_array_equal(np.asarray(r.n_tokens), np.asarray(g.n_tokens))
    np.testing.assert_allclose(np.asarray(r.audio), np.asarray(g.audio), atol=1e-4)
    written += int(np.asarray(r.n_tokens).sum())
  assert written > 0  # the random micro model writes: tokens were compared, not only waits
