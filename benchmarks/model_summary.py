"""Model sizes: parameters per module, FLOPs, and per-device memory on pod meshes.

    python -m benchmarks.model_summary [--sizes=micro,tiny,small,1b,7b] [--compile]
        [--out=benchmarks/results/model_summary.json]

Nothing real is allocated: parameter counts come from `nnx.eval_shape`; per-device
memory of the train state on a size's pod mesh (`mesh.pod_devices`) is computed from
each parameter's shard shape on an `AbstractMesh`; `--compile` additionally compiles
the S2ST train step (the pretrain/SFT loss `stream_lm.loss_fn` + clipping + AdamW) for
8 fake CPU devices at a reduced batch and prints XLA's memory analysis.

A benchmark, not part of `liveinterp.models`: the compiled report needs the training
step, and models import no training code (tests/architecture_rules.txt).
"""

from __future__ import annotations

import json
import math
import os
import time

from absl import app, flags


def _define_flags():  # at __main__ only, so importing this module defines no flags
  return dict(
      sizes=flags.DEFINE_list("sizes", ["micro", "tiny", "small", "1b", "7b"], "sizes"),
      compile=flags.DEFINE_bool("compile", False, "also compile the train step (8 CPUs)"),
      compile_sizes=flags.DEFINE_list("compile_sizes", ["1b", "7b"], "sizes to compile"),
      out=flags.DEFINE_string("out", "", "write the table as JSON here"))


def module_builders():
  from liveinterp.models import adapter, codec, conformer, llm, voice
  return {
      "encoder": lambda cfg, rngs: conformer.ConformerEncoder(cfg, rngs=rngs),
      "adapter": lambda cfg, rngs: adapter.Adapter.from_config(cfg, rngs=rngs),
      "llm": lambda cfg, rngs: llm.LLM(cfg, rngs=rngs),
      "codec": lambda cfg, rngs: codec.Codec(cfg, rngs=rngs),
      "voice": lambda cfg, rngs: voice.SpeakerEncoder(cfg, rngs=rngs),
  }


def abstract_params(cfg, build):
  import jax
  from flax import nnx
  with nnx.use_eager_sharding(False):
    model = nnx.eval_shape(lambda: build(cfg, nnx.Rngs(0)))
  return nnx.state(model, nnx.Param)


def count(tree) -> int:
  import jax
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(tree)))


def pod_mesh(cfg, devices: int):
  """AbstractMesh of the recipe's ici sizes filled for `devices` (single slice)."""
  from jax.sharding import AbstractMesh, AxisType
  from liveinterp.common import axes, mesh as mesh_lib
  sizes = mesh_lib.fill_axis_sizes([cfg.mesh[f"ici_{a}"] for a in axes.MESH_AXES],
                                   devices, "ici")
  return AbstractMesh(tuple(sizes), axes.MESH_AXES,
                      axis_types=(AxisType.Auto,) * len(axes.MESH_AXES))


def per_device_state_bytes(cfg, params, mesh) -> dict[str, float]:
  """Largest per-device shard bytes of params + AdamW (mu, nu) in param dtype."""
  import jax
  import numpy as np
  from flax import nnx
  from jax.sharding import NamedSharding
  from liveinterp.common import sharding
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  sizes = dict(mesh.shape)
  itemsize = np.dtype(cfg.param_dtype).itemsize
  total = 0
  leaves = jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
  for v in leaves:
    names = v.get_metadata().get("out_sharding") or (None,) * len(v.shape)
    spec = sharding.logical_to_spec(names, rules, sizes)
    total += math.prod(NamedSharding(mesh, spec).shard_shape(v.shape)) * itemsize
  return {"params_GiB": total / 2**30, "train_state_GiB": 3 * total / 2**30}


def compiled_memory(cfg, batch: int = 8, seq: int = 256) -> dict[str, float]:
  """Compile (no run) the S2ST train step on 8 fake CPU devices; XLA memory analysis.

  The step is the pretrain/SFT one: `stream_lm.loss_fn` with the recipe's loss weights,
  on a batch laid out as the stream pipeline's (`seq` tokens per row, two chunks of
  source audio). The batch has no `src_ids`/`src_frames`, so the auxiliary CTC/frame
  losses (small heads on the encoder frames) are left out.
  """
  import jax
  import jax.numpy as jnp
  from data_pipelines import tokenizer as tokmod
  from liveinterp.common import mesh as mesh_lib, sharding
  from liveinterp.models import s2st
  from liveinterp.train import optimizer, step as step_lib, train_state
  from liveinterp.train.stages import stream_lm
  devices = jax.devices()[:8]
  c = cfg.copy_and_resolve_references()
  c.mesh.ici_data, c.mesh.ici_tensor = 1, min(int(cfg.mesh.ici_tensor), 2)
  c.mesh.ici_fsdp = -1
  mesh = mesh_lib.create_mesh(c.mesh, devices)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  model_fn = lambda rngs: s2st.S2ST(c, rngs=rngs)
  speech_offset = tokmod.NUM_SPECIAL_TOKENS + int(c.tokenizer.text_vocab_size)
  weights = stream_lm.aux_loss_weights(c)

  def loss_fn(model, batch, rng):
    return stream_lm.loss_fn(model, batch, rng, speech_offset, **weights)

  graphdef, abstract, shardings = train_state.abstract_state(model_fn, tx, mesh, rules)
  chunk = int(c.stream.chunk_ms * c.audio.sample_rate // 1000)
  spc = s2st.slots_per_chunk(c)
  slots = 2 * spc  # two chunks of audio per row
  i32 = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.int32)  # noqa: E731
  abstract_batch = {
      "tokens": i32(batch, seq), "loss_mask": i32(batch, seq),
      "audio_slot_mask": i32(batch, seq), "segment_ids": i32(batch, seq),
      "positions": i32(batch, seq),
      "audio": jax.ShapeDtypeStruct((batch, slots, chunk // spc), jnp.int16),
      "audio_segment_ids": i32(batch, slots),
  }
  step = step_lib.make_train_step(graphdef, loss_fn, tx)
  t0 = time.perf_counter()
  compiled, _ = step_lib.compile_step(step, abstract, shardings, abstract_batch, mesh, rules,
                                      log_memory=False)
  mem = compiled.memory_analysis()
  return {"compile_s": time.perf_counter() - t0,
          "mesh": "x".join(str(v) for v in mesh.shape.values()),
          "batch": batch, "seq": seq,
          "argument_GiB": mem.argument_size_in_bytes / 2**30,
          "output_GiB": mem.output_size_in_bytes / 2**30,
          "temp_GiB": mem.temp_size_in_bytes / 2**30}


def summarize(size: str, with_compile: bool = False) -> dict:
  from liveinterp.common import config as config_lib
  from liveinterp.models import adapter, codec, conformer, llm
  cfg = config_lib.load(f"{size}:pretrain")
  row = {"size": size}
  params = {}
  for name, build in module_builders().items():
    params[name] = abstract_params(cfg, build)
    row[f"params/{name}"] = count(params[name])
  row["params/s2st"] = row["params/encoder"] + row["params/adapter"] + row["params/llm"]
  f = llm.flops_per_token(cfg)
  row["flops/llm_train_per_token"] = f["train"]
  row["flops/llm_decode_per_token"] = f["inference"]
  row["flops/encoder_per_audio_s"] = conformer.flops_per_second(cfg)
  row["flops/adapter_per_audio_s"] = adapter.flops_per_second(cfg)
  row["flops/codec_per_audio_s"] = float(sum(codec.flops_per_second(cfg).values()))
  if cfg.mesh.pod_devices:
    mesh = pod_mesh(cfg, int(cfg.mesh.pod_devices))
    s2st_params = {k: params[k] for k in ("encoder", "adapter", "llm")}
    mem = per_device_state_bytes(cfg, s2st_params, mesh)
    row["pod/devices"] = int(cfg.mesh.pod_devices)
    row["pod/mesh"] = "x".join(str(v) for v in mesh.shape.values())
    row["pod/params_GiB_per_device"] = mem["params_GiB"]
    row["pod/train_state_GiB_per_device"] = mem["train_state_GiB"]
  if with_compile:
    for k, v in compiled_memory(cfg).items():
      row[f"compiled/{k}"] = v
  return row


def _fmt(v):
  if isinstance(v, float):
    return f"{v:.3g}"
  if isinstance(v, int) and v >= 10_000:
    return f"{v / 1e6:.2f}M"
  return str(v)


def print_table(rows):
  keys = []
  for r in rows:
    keys += [k for k in r if k not in keys]
  w = max(len(k) for k in keys)
  print(f"{'':{w}} " + " ".join(f"{r['size']:>12}" for r in rows))
  for k in keys[1:]:
    print(f"{k:{w}} " + " ".join(f"{_fmt(r.get(k, '')):>12}" for r in rows))


def main(argv):
  del argv
  import jax
  f = {k: v.value for k, v in _FLAGS.items()}
  if f["compile"]:
    jax.config.update("jax_num_cpu_devices", 8)
  rows = [summarize(s, f["compile"] and s in f["compile_sizes"]) for s in f["sizes"]]
  print_table(rows)
  if f["out"]:
    os.makedirs(os.path.dirname(os.path.abspath(f["out"])), exist_ok=True)
    with open(f["out"], "w") as fh:
      json.dump(rows, fh, indent=1)
    print(f"wrote {f['out']}")


if __name__ == "__main__":
  _FLAGS = _define_flags()
  app.run(main)
