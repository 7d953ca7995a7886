"""Per-device memory of the streaming decoder (weights + state) on serving meshes.

    python -m benchmarks.serving_memory [--sizes=tiny,1b,7b] [--meshes=1x1,1x4,2x4,8x1]
        [--batches=1,16,64] [--compile] [--out=benchmarks/results/serving_memory.json]

Nothing real is allocated. The decoder's weights and its `DecoderState` come from
`jax.eval_shape` of building the three networks and a `StreamingDecoder` and calling its
`init_stream(batch)` (the real state, not hand formulas). Each leaf's per-device bytes
are its `NamedSharding(mesh, spec).shard_shape` on a mesh of 8 fake CPU devices, with
`spec` from the config's logical-axis rules (`liveinterp.common.sharding`):

  weights          every variable of the decoder's networks (S2ST + codec + speaker
                   encoder), by its logical `out_sharding`, in the dtype the decoder
                   holds them in (`param_dtype`; the decoder never casts them)
  kv_cache         the LLM ring cache k and v, L x [B, K, W, Dh] in the compute dtype, by
                   `kv_cache.logical_axes()`
  other_state      the rest of the state: encoder caches and tails, codec tails, speaker
                   buffer and embedding, counters (encoder attention k/v by the cache
                   axes, every other batch-major leaf over `cache_batch`)

A mesh `DxT` is (data=D, fsdp=1, tensor=T). A dimension that its mesh axes do not divide
stays replicated (as a jitted step could not shard it either); batches that the data
axis does not divide are skipped. `--compile` also lowers and compiles the decoder step
(`decode_step._step_pure`) on the 8-device mesh for the sizes of `--compile_sizes` and
reports XLA's memory analysis.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import time

from absl import app, flags

DEFAULT_MESHES = ("1x1", "1x4", "2x4", "8x1")
_ENC_CACHE_KEYS = ("k", "v")  # encoder attention caches: [B, frames, heads, head_dim]


def _define_flags():  # at __main__ only, so importing this module defines no flags
  return dict(
      sizes=flags.DEFINE_list("sizes", ["tiny", "1b", "7b"], "model sizes"),
      stage=flags.DEFINE_string("stage", "sft", "config stage the decoder serves"),
      meshes=flags.DEFINE_list("meshes", list(DEFAULT_MESHES),
                               "serving meshes DATAxTENSOR (<= 8 devices)"),
      batches=flags.DEFINE_list("batches", ["1", "16", "64"], "streams per batch"),
      compile=flags.DEFINE_bool("compile", False, "also compile the decoder step"),
      compile_sizes=flags.DEFINE_list("compile_sizes", ["1b"], "sizes to compile"),
      compile_mesh=flags.DEFINE_string("compile_mesh", "2x4", "mesh of the compile"),
      compile_batch=flags.DEFINE_integer("compile_batch", 16, "batch of the compile"),
      out=flags.DEFINE_string("out", "", "write the table as JSON here"))


def parse_mesh(text: str) -> tuple[int, int]:
  """"DxT" -> (data, tensor); ValueError naming the item when it is not two sizes."""
  parts = text.lower().split("x")
  if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
    raise ValueError(f"mesh {text!r}: expected DATAxTENSOR such as 2x4")
  return int(parts[0]), int(parts[1])


def make_mesh(data: int, tensor: int, devices=None):
  """Mesh (data, fsdp=1, tensor) of the first data*tensor devices (fake CPUs here)."""
  import jax
  from jax.sharding import AxisType
  from liveinterp.common import axes
  devices = jax.devices() if devices is None else devices
  n = data * tensor
  if n > len(devices):
    raise ValueError(f"mesh {data}x{tensor} needs {n} devices, there are {len(devices)} "
                     "(set XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  return jax.make_mesh((data, 1, tensor), axes.MESH_AXES, devices=devices[:n],
                       axis_types=(AxisType.Auto,) * 3)


def abstract_decoder(cfg, batch: int):
  """(params, state, spec) of a `StreamingDecoder` for `cfg` with `batch` streams, all
  abstract (`jax.eval_shape`): params an `nnx.State` of Variables carrying their logical
  `out_sharding`, state a `DecoderState` of ShapeDtypeStructs."""
  import jax
  from flax import nnx
  from liveinterp.common import token_layout
  from liveinterp.inference import decoder as decoder_lib
  from liveinterp.models import codec, s2st, voice
  found = {}

  def build():
    dec = decoder_lib.StreamingDecoder(
        s2st.S2ST(cfg, rngs=nnx.Rngs(0)), codec.Codec(cfg, rngs=nnx.Rngs(1)),
        voice.SpeakerEncoder(cfg, rngs=nnx.Rngs(2)),
        token_layout.TokenLayout.from_config(cfg), cfg)
    found["spec"] = dec.spec
    return dec.params, dec.init_stream(batch)

  with nnx.use_eager_sharding(False):
    params, state = jax.eval_shape(build)
  return params, state, found["spec"]


def _divisible_spec(spec, shape, mesh):
  """`spec` with the entries whose mesh axes do not divide their dimension replicated."""
  from jax.sharding import PartitionSpec
  sizes = dict(mesh.shape)
  out = []
  for entry, dim in zip(tuple(spec) + (None,) * (len(shape) - len(spec)), shape):
    names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
    out.append(entry if dim % math.prod(sizes[a] for a in names) == 0 else None)
  return PartitionSpec(*out)


def _sharding(names, shape, mesh, rules):
  from jax.sharding import NamedSharding
  from liveinterp.common import sharding
  spec = sharding.logical_to_spec(names, rules, dict(mesh.shape))
  return NamedSharding(mesh, _divisible_spec(spec, shape, mesh))


def param_shardings(params, mesh, rules) -> list:
  """NamedSharding of every variable of `params`, in `jax.tree.leaves` order."""
  import jax
  from flax import nnx
  out = []
  for v in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable)):
    names = v.get_metadata().get("out_sharding") or (None,) * len(v.shape)
    out.append(_sharding(names, v.shape, mesh, rules))
  return out


def _keys(path) -> list:
  return [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]


def state_logical_axes(state) -> list[tuple]:
  """Logical axis names of every `DecoderState` leaf (`jax.tree.leaves` order; the rng
  key replicated): the LLM cache by `kv_cache.logical_axes()`, encoder attention k/v by
  the cache axes, every other leaf batch-major (`cache_batch`), scalars replicated."""
  import jax
  from liveinterp.common import axes
  from liveinterp.layers import kv_cache
  cache_names = kv_cache.logical_axes()._asdict()
  enc_kv = (axes.CACHE_BATCH, axes.CACHE_LENGTH, axes.CACHE_KV_HEADS, axes.CACHE_HEAD_DIM)
  out = []
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    keys = _keys(path)
    if keys[:2] == ["model", "cache"]:  # k and v: one buffer per layer, same names
      out.append(cache_names[keys[2]])
    elif keys[:2] == ["model", "encoder"] and keys[-2:-1] == ["attn"] \
        and keys[-1] in _ENC_CACHE_KEYS and x.ndim == 4:
      out.append(enc_kv)
    else:
      out.append(((axes.CACHE_BATCH,) + (None,) * (x.ndim - 1)) if x.ndim else ())
  return out


def is_kv_leaf(path) -> bool:
  """A layer's buffer of the LLM ring cache's keys or values (`DecoderState.model.cache
  .k[l]` / `.v[l]`)."""
  return _keys(path)[:3] in (["model", "cache", "k"], ["model", "cache", "v"])


def _leaf_bytes(x, sharding) -> int:
  import jax
  import numpy as np
  shape, dtype = tuple(x.shape), x.dtype
  if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):  # counted as its key data
    one = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    return math.prod(sharding.shard_shape(shape)) * math.prod(one.shape) * \
        np.dtype(one.dtype).itemsize
  return math.prod(sharding.shard_shape(shape)) * np.dtype(dtype).itemsize


def state_shardings(state, mesh, rules) -> list:
  import jax
  return [_sharding(n, x.shape, mesh, rules)
          for n, x in zip(state_logical_axes(state), jax.tree.leaves(state))]


def _bf16_itemsize(dtype) -> int:
  """Bytes per element were the float weights cast to bfloat16 (others unchanged)."""
  import numpy as np
  dtype = np.dtype(dtype)
  return min(2, dtype.itemsize) if np.issubdtype(dtype, np.floating) else dtype.itemsize


def per_device_bytes(params, state, mesh, rules) -> dict[str, int]:
  """Bytes one device holds of the decoder's weights, KV cache and other state, on
  `mesh` (every device holds the same: shardings are even or replicated)."""
  import jax
  import numpy as np
  from flax import nnx
  weights = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  w_sh = param_shardings(params, mesh, rules)
  w = sum(_leaf_bytes(v, s) for v, s in zip(weights, w_sh))
  w16 = sum(math.prod(s.shard_shape(v.shape)) * _bf16_itemsize(v.dtype)
            for v, s in zip(weights, w_sh))
  kv = other = 0
  for (path, x), s in zip(jax.tree_util.tree_flatten_with_path(state)[0],
                          state_shardings(state, mesh, rules)):
    if is_kv_leaf(path):
      kv += _leaf_bytes(x, s)
    else:
      other += _leaf_bytes(x, s)
  return {"weights": w, "weights_bf16": w16, "kv_cache": kv, "other_state": other}


def memory_rows(size: str, meshes, batches, stage: str = "sft", cfg=None) -> list[dict]:
  """One row per (mesh, batch) of `size`: per-device GiB of weights, KV cache, other
  state and their total. `meshes`: [(data, tensor)], built from `jax.devices()`."""
  import numpy as np
  from liveinterp.common import config as config_lib, sharding
  cfg = cfg or config_lib.load(f"{size}:{stage}")
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  rows = []
  for batch in batches:
    params, state, _ = abstract_decoder(cfg, int(batch))
    for data, tensor in meshes:
      if batch % data:
        continue  # the data axis cannot split these streams
      b = per_device_bytes(params, state, make_mesh(data, tensor), rules)
      gib = {k: v / 2**30 for k, v in b.items()}
      rows.append({
          "size": size, "mesh": f"{data}x{tensor}", "devices": data * tensor,
          "batch": int(batch), "weights_dtype": str(np.dtype(cfg.param_dtype)),
          "kv_dtype": str(np.dtype(state.model.cache.k[0].dtype)),
          "weights_GiB": gib["weights"], "weights_bf16_GiB": gib["weights_bf16"],
          "kv_cache_GiB": gib["kv_cache"], "other_state_GiB": gib["other_state"],
          "total_GiB": gib["weights"] + gib["kv_cache"] + gib["other_state"]})
  return rows


def compiled_step_memory(size: str, data: int, tensor: int, batch: int,
                         stage: str = "sft") -> dict:
  """Lower + compile (no run) the decoder step with sharded abstract inputs on a
  (data, 1, tensor) mesh of fake devices; XLA's memory analysis per device."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec
  from liveinterp.common import config as config_lib, sharding
  from liveinterp.inference import decode_step
  cfg = config_lib.load(f"{size}:{stage}")
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  mesh = make_mesh(data, tensor)
  params, state, spec = abstract_decoder(cfg, batch)
  as_arg = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)  # noqa: E731
  p_leaves, p_tree = jax.tree.flatten(params)
  p_args = jax.tree.unflatten(p_tree, [as_arg(x, s) for x, s in zip(
      p_leaves, param_shardings(params, mesh, rules))])
  s_leaves, s_tree = jax.tree.flatten(state)
  s_args = jax.tree.unflatten(s_tree, [as_arg(x, s) for x, s in zip(
      s_leaves, state_shardings(state, mesh, rules))])
  rows = sharding.data_sharding(mesh, 1, rules, batch_axes=("cache_batch",))
  rows2 = NamedSharding(mesh, PartitionSpec(*rows.spec, None))
  m = spec.max_turn_tokens
  args = (jax.ShapeDtypeStruct((batch, spec.chunk_samples), jnp.float32, sharding=rows2),
          jax.ShapeDtypeStruct((batch,), jnp.bool_, sharding=rows),
          jax.ShapeDtypeStruct((batch, m), jnp.int32, sharding=rows2),
          jax.ShapeDtypeStruct((batch,), jnp.int32, sharding=rows))
  t0 = time.perf_counter()
  step = functools.partial(decode_step._step_pure, spec)  # pylint: disable=protected-access
  with sharding.use_mesh(mesh, rules):
    compiled = jax.jit(step).lower(p_args, s_args, *args).compile()
  mem = compiled.memory_analysis()
  return {"size": size, "mesh": f"{data}x{tensor}", "batch": batch,
          "compile_s": time.perf_counter() - t0,
          "argument_GiB": mem.argument_size_in_bytes / 2**30,
          "output_GiB": mem.output_size_in_bytes / 2**30,
          "temp_GiB": mem.temp_size_in_bytes / 2**30}


def main(argv):
  del argv
  import jax
  jax.config.update("jax_num_cpu_devices", 8)
  from benchmarks import common
  f = {k: v.value for k, v in _FLAGS.items()}
  try:
    meshes = [parse_mesh(m) for m in f["meshes"]]
    batches = [int(b) for b in f["batches"]]
  except ValueError as e:
    sys.exit(f"serving_memory: {e}")
  rows = []
  for size in f["sizes"]:
    t0 = time.perf_counter()
    rows += memory_rows(size, meshes, batches, f["stage"])
    print(f"[serving_memory] {size}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
  cols = ["size", "mesh", "batch", "weights_GiB", "weights_bf16_GiB", "kv_cache_GiB",
          "other_state_GiB", "total_GiB"]
  common.print_table(rows, cols)
  compiled = []
  if f["compile"]:
    data, tensor = parse_mesh(f["compile_mesh"])
    for size in f["compile_sizes"]:
      compiled.append(compiled_step_memory(size, data, tensor, f["compile_batch"],
                                           f["stage"]))
    common.print_table(compiled, list(compiled[0]))
  if f["out"]:
    command = "python -m benchmarks.serving_memory " + " ".join(sys.argv[1:])
    common.write_json(f["out"], {"command": command.strip(), "stage": f["stage"],
                                 "rows": rows, "compiled": compiled})


if __name__ == "__main__":
  _FLAGS = _define_flags()
  app.run(main)
