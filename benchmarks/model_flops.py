"""Forward+backward FLOP/s of each model over the matmul FLOP/s measured in the same run.

    python benchmarks/model_flops.py [--sizes=tiny,small] [--out=benchmarks/results/model_flops.json]

Model FLOPs are analytic (the models' own `flops_*` helpers; backward = 2× forward), so
the ratio is "model FLOPs utilisation" against this machine's measured matmul roofline.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["tiny", "small"], "model sizes")
_MODELS = flags.DEFINE_list("models", ["encoder", "llm", "codec", "s2st_step"],
                            "models to measure (s2st_step = the whole pretrain/SFT step)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed repetitions (best is kept)")
_AUDIO_S = flags.DEFINE_float("audio_seconds", 2.56, "audio per example (encoder, codec)")
_BATCH = flags.DEFINE_integer("batch", 4, "examples per step")
_SEQ = flags.DEFINE_integer("seq", 256, "LLM tokens per example")
_OUT = flags.DEFINE_string("out", os.path.join(common.RESULTS_DIR, "model_flops.json"),
                           "JSON output")


def _case(name, cfg, batch, seq, seconds):
  """(jitted fwd+bwd closure, analytic FLOPs of one call)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from liveinterp.models import adapter, codec, conformer, llm

  rng = jax.random.key(0)
  if name == "encoder":
    enc = conformer.ConformerEncoder(cfg, rngs=nnx.Rngs(0))
    ad = adapter.Adapter.from_config(cfg, rngs=nnx.Rngs(1))
    n = int(round(seconds * cfg.audio.sample_rate / enc.chunk_samples)) * enc.chunk_samples
    audio = jax.random.normal(rng, (batch, n)) * 0.1
    model = nnx.List([enc, ad])

    def loss(m):
      frames, mask = m[0].encode_audio(audio)
      return jnp.mean(m[1](frames, mask)[0] ** 2)
    secs = n / cfg.audio.sample_rate
    flops = 3 * batch * secs * (conformer.flops_per_second(cfg) + adapter.flops_per_second(cfg))
  elif name == "llm":
    model = llm.LLM(cfg, rngs=nnx.Rngs(0))
    tokens = jax.random.randint(rng, (batch, seq), 0, cfg.llm.vocab_size)

    def loss(m):
      logits, values = m(tokens)
      return jnp.mean(jax.nn.logsumexp(logits, -1)) + jnp.mean(values)
    flops = batch * seq * llm.flops_per_token(cfg, seq)["train"]
  elif name == "codec":
    model = codec.Codec(cfg, rngs=nnx.Rngs(0))
    hop = model.hop
    n = int(seconds * cfg.audio.sample_rate) // hop * hop
    audio = jax.random.normal(rng, (batch, n)) * 0.1
    spk = jax.random.normal(rng, (batch, cfg.voice.embed_dim))

    def loss(m):
      out = m(audio, spk)
      return jnp.mean((out["recon"] - audio) ** 2)
    flops = 3 * batch * (n / cfg.audio.sample_rate) * sum(codec.flops_per_second(cfg).values())
  elif name == "s2st_step":
    return _s2st_train_step(cfg, batch, seq, seconds)
  else:
    raise ValueError(f"unknown model {name!r}")

  # Compiled once ahead of timing (jax.jit over the split state) so the same executable
  # is timed here and profiled by benchmarks/profile_step.py (`run.hlo_text`).
  graphdef, state = nnx.split(model)
  compiled = jax.jit(lambda s: nnx.grad(loss)(nnx.merge(graphdef, s))).lower(
      state).compile()

  def run():
    jax.block_until_ready(compiled(state))
  run.hlo_text = compiled.as_text
  return run, flops


def _s2st_train_step(cfg, batch, seq, seconds):
  """The real pretrain/SFT train step (S2ST loss + clipping + AdamW), one device."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  from liveinterp.common import mesh as mesh_lib, sharding
  from liveinterp.models import adapter, conformer, llm, s2st
  from liveinterp.train import optimizer, step as step_lib, train_state
  from liveinterp.train.stages import stream_lm
  c = cfg.copy_and_resolve_references()
  c.mesh.ici_data = c.mesh.ici_fsdp = c.mesh.ici_tensor = 1
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  model_fn = lambda rngs: s2st.S2ST(c, rngs=rngs)
  graphdef, state, shardings = train_state.create_train_state(model_fn, tx, mesh, rules)
  spc = s2st.slots_per_chunk(c)
  slots = int(round(seconds * 1000 / c.stream.chunk_ms)) * spc
  slot_samples = int(c.stream.chunk_ms * c.audio.sample_rate // 1000) // spc
  rng = np.random.default_rng(0)
  tokens = rng.integers(32, c.llm.vocab_size, (batch, seq)).astype(np.int32)
  tokens[:, 4:4 + slots] = 7
  b = {"tokens": tokens, "loss_mask": np.ones((batch, seq), np.int32),
       "audio_slot_mask": (tokens == 7).astype(np.int32),
       "segment_ids": np.ones((batch, seq), np.int32),
       "positions": np.tile(np.arange(seq, dtype=np.int32), (batch, 1)),
       "audio": (rng.standard_normal((batch, slots, slot_samples)) * 3000).astype(np.int16),
       "audio_segment_ids": np.ones((batch, slots), np.int32)}
  b = jax.tree.map(jnp.asarray, b)
  abstract_b = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), b)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                          state)
  step = step_lib.make_train_step(graphdef, lambda m, bb, r: stream_lm.loss_fn(m, bb, r, 10**9),
                                  tx)
  compiled, _ = step_lib.compile_step(step, abstract, shardings, abstract_b, mesh, rules,
                                      log_memory=False)
  holder = [state]

  def run():
    holder[0], m = compiled(holder[0], b, jax.random.key(0))
    jax.block_until_ready(m)
  run.hlo_text = compiled.as_text
  secs = slots * slot_samples / c.audio.sample_rate
  flops = (3 * batch * secs * (conformer.flops_per_second(c) + adapter.flops_per_second(c))
           + batch * seq * llm.flops_per_token(c, seq)["train"])
  return run, flops


def main(argv):
  del argv
  from liveinterp.common import config as config_lib
  # The roofline is measured before and after the models and the higher kept: one
  # measurement taken while something else loads the machine lowers the peak far more
  # than the models' times (a loaded run once gave 24.6 GFLOP/s against 227 idle) and
  # inflates every ratio.
  peaks = [common.matmul_flops_per_second()]
  rows = []
  for size in _SIZES.value:
    cfg = config_lib.load(f"{size}:pretrain")
    cfg.dtype = "float32"  # the roofline is measured in float32 on this machine
    for name in _MODELS.value:
      run, flops = _case(name, cfg, _BATCH.value, _SEQ.value, _AUDIO_S.value)
      t = common.time_fn(run, repeats=_REPEATS.value)
      rows.append({"size": size, "model": name, "step_s": t, "model_GFLOP": flops / 1e9,
                   "model_GFLOP/s": flops / t / 1e9})
  peaks.append(common.matmul_flops_per_second())
  peak = max(peaks)
  for r in rows:
    r.update({"matmul_GFLOP/s": peak / 1e9, "ratio": r["model_GFLOP/s"] * 1e9 / peak})
  common.print_table(rows, ["size", "model", "step_s", "model_GFLOP", "model_GFLOP/s",
                            "matmul_GFLOP/s", "ratio"])
  common.write_json(_OUT.value, {"benchmark": "model_flops", "env": common.environment(),
                                 "batch": _BATCH.value, "seq": _SEQ.value,
                                 "audio_seconds": _AUDIO_S.value,
                                 "matmul_GFLOP/s_before_after": [p / 1e9 for p in peaks],
                                 "rows": rows})


if __name__ == "__main__":
  app.run(main)
