r"""Batched streaming decoder: per-stream cost of waiting and speaking steps for B streams.

    python -m benchmarks.streaming_batch [--size=tiny] [--cores=1] [--batches=1,4,16,64]
        [--repeats=5] [--codec_tail=masked|frames] [--out=benchmarks/results/...json]

B independent streams in one `StreamingDecoder.step`, pinned to `--cores` CPU cores as in
`benchmarks.streaming` (random weights: speed depends on the weights only through the
tokens written, and every turn here is forced, so the workload is deterministic):

- `wait`: a bare `<eot>` turn (encoder + one prefill);
- `text`: `<text>` + 8 words + `<eot>` (LLM turn decode, no speech);
- `talk_nocodec`: `<text>` + 8 words + `<speech>` + one chunk of speech frames + `<eot>`,
  decoded with `decode_speech=False` (LLM only: the turn's speech ids, no voice);
- `talk`: the same turn with speech decoded (speaker embedding + codec);
- `ragged`: like `talk` but row b speaks `frames - (b % 4)` frames (rows of different
  lengths, as in a real batch: the codec's per-row tail);
and, timed alone on the same shapes, the speaker embedding (`SpeakerEncoder.embed_audio`
of the window) and the codec decode (`speech_decode.decode_speech`, equal and ragged rows).

Per-stream ms = best-of-`--repeats` wall time of the batch step / B; RTF = that / chunk
duration. `x_vs_b1` = (time of the B-stream step) / (time of the 1-stream step): the
issue's goal is <= 4 for B = 16. After warm-up the jitted step must not recompile: the
JSON's `recompiles_after_warmup` counts new entries in the jit caches (`_cache_size()`)
during the timed steps (must be 0).

`--codec_tail=frames` selects the previous codec path (the ragged tail decoded one frame
per `while_loop` iteration) for a before/after comparison in one run; the default
`masked` decodes the ragged tail in blocks with per-row frame counts.
"""

from __future__ import annotations

import os
import sys
import time

from absl import app, flags

from benchmarks import cpu_pinning

_SIZE = flags.DEFINE_string("size", "tiny", "config recipe (configs/<size>.py)")
_CORES = flags.DEFINE_integer("cores", 1, "CPU cores to pin to (0 = no pinning)")
_BATCHES = flags.DEFINE_list("batches", ["1", "4", "16", "64"],
                             "batch sizes B (issue #14 asks for 1, 4, 16, 64)")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed steps per workload (best is kept)")
_TAILS = flags.DEFINE_list("codec_tail", ["masked"],
                           "codec ragged-tail paths to time: masked and/or frames")
_OUT = flags.DEFINE_string("out", None, "JSON output (default benchmarks/results/"
                           "streaming_batch.json)")


def main(argv):
  del argv
  cores = cpu_pinning.pin_cores(_CORES.value)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import common
  from liveinterp.common import config as config_lib
  from liveinterp.common import token_layout
  from liveinterp.inference import decode_step, decoder as decoder_lib, loading, speech_decode

  cfg = config_lib.load(_SIZE.value)
  models = loading.build_models(cfg)
  layout = token_layout.TokenLayout.from_config(cfg)
  prompt = decoder_lib.prompt_for(cfg)
  tails = [t.strip() for t in _TAILS.value]
  bad = [t for t in tails if t not in ("masked", "frames")]
  if bad:
    raise ValueError(f"--codec_tail {bad}: expected 'masked' and/or 'frames'")
  decs = {(t, True): decoder_lib.StreamingDecoder(
      *models, layout, cfg, prompt_ids=prompt, codec_tail=t) for t in tails}
  # Without speech decoding the codec path is irrelevant: one decoder (one compile).
  nocodec = decoder_lib.StreamingDecoder(*models, layout, cfg, prompt_ids=prompt,
                                         decode_speech=False)
  decs.update({(t, False): nocodec for t in tails})
  dec = decs[(tails[0], True)]
  m, c, chunk_ms = dec.max_turn_tokens, dec.chunk_samples, dec.chunk_ms
  q = layout.num_codebooks
  frames = common.talk_frames(dec, layout)
  rng = np.random.default_rng(0)

  def turn_ids(n_words, n_frames, speech=True):
    return common.forced_turn(layout, rng, n_words, n_frames, speech)

  def forced_for(b, rows):
    out = np.zeros((b, m), np.int32)
    n = np.zeros((b,), np.int32)
    for i in range(b):
      ids = rows(i)
      out[i, :len(ids)] = ids
      n[i] = len(ids)
    return out, n

  workloads = {
      "wait": (True, lambda i: []),
      "text": (True, lambda i: turn_ids(8, 0, speech=False)),
      "talk_nocodec": (False, lambda i: turn_ids(8, frames)),
      "talk": (True, lambda i: turn_ids(8, frames)),
      "ragged": (True, lambda i: turn_ids(8, frames - (i % 4))),
  }
  jitted = (decode_step._step_donate, decode_step._step_keep)
  rows, comp_rows, recompiles = [], [], {}
  base = {}
  # The machine's own speed on the same core(s), at both ends of the run: per-stream
  # milliseconds drift with it from day to day, the x_vs_b1 ratios much less.
  peaks = [common.matmul_flops_per_second(512)]
  for tail in tails:
    for b in [int(x) for x in _BATCHES.value]:
      audio = (0.1 * rng.standard_normal((b, c))).astype(np.float32)
      states = {s: decs[(tail, s)].init_stream(b, 0) for s in (True, False)}
      forced = {w: forced_for(b, f) for w, (_, f) in workloads.items()}
      # Warm-up: every workload once (one program per decoder and batch size).
      for w, (speech, _) in workloads.items():
        states[speech], out = decs[(tail, speech)].step(states[speech], audio, None,
                                                        *forced[w])
        jax.block_until_ready(out)
      before = sum(f._cache_size() for f in jitted)
      times = {w: [] for w in workloads}
      for _ in range(_REPEATS.value):
        for w, (speech, _) in workloads.items():
          t0 = time.perf_counter()
          states[speech], out = decs[(tail, speech)].step(states[speech], audio, None,
                                                          *forced[w])
          jax.block_until_ready(out)
          times[w].append((time.perf_counter() - t0) * 1000)
      recompiles[f"{tail}/B={b}"] = sum(f._cache_size() for f in jitted) - before
      print(f"{tail} B={b}: " + ", ".join(f"{w} {min(v):.1f} ms" for w, v in times.items())
            + f"; recompiles {recompiles[f'{tail}/B={b}']}", flush=True)
      for w in workloads:
        ms = min(times[w])
        base.setdefault((tail, w), ms if b == 1 else None)
        b1 = base[(tail, w)]
        rows.append(dict(codec_tail=tail, B=b, workload=w, step_ms=round(ms, 2),
                         per_stream_ms=round(ms / b, 2),
                         rtf_per_stream=round(ms / b / chunk_ms, 4),
                         x_vs_b1=round(ms / b1, 2) if b1 else ""))

      # Components alone on the same shapes: speaker embedding, codec decode.
      mods = nnx.merge(dec.spec.graphdef, dec.params)
      spec = decs[(tail, True)].spec
      win = jnp.asarray(0.1 * rng.standard_normal((b, spec.speaker_samples)), jnp.float32)
      mask = jnp.ones(win.shape, bool)
      spk_fn = jax.jit(lambda p, w, mk: nnx.merge(spec.graphdef, p).speaker.embed_audio(
          w, mk))
      spk = spk_fn(dec.params, win, mask)
      codes = jnp.asarray(forced["talk"][0][:, 10:10 + frames * q])
      speech_bm = jnp.zeros((b, m), jnp.int32).at[:, :frames * q].set(codes)

      def codec_fn(p, s, n, spk=spk, spec=spec):
        mm = nnx.merge(spec.graphdef, p)
        # the codec alone: the speaker embeddings given (`embed` returns them)
        return speech_decode.decode_speech(spec, mm.codec, mm.codec.init_decode_state(
            s.shape[0]), s, n, lambda rows=None: spk if rows is None else spk[rows], spk)
      codec_jit = jax.jit(codec_fn)
      n_eq = jnp.full((b,), frames, jnp.int32)
      n_rag = jnp.asarray([frames - (i % 4) for i in range(b)], jnp.int32)
      comp = dict(
          speaker_embed=lambda: spk_fn(dec.params, win, mask),
          codec_equal=lambda: codec_jit(dec.params, speech_bm, n_eq),
          codec_ragged=lambda: codec_jit(dec.params, speech_bm, n_rag))
      for name, fn in comp.items():
        ms = common.time_fn(lambda fn=fn: jax.block_until_ready(fn()),
                            repeats=_REPEATS.value) * 1000
        comp_rows.append(dict(codec_tail=tail, B=b, component=name, ms=round(ms, 2),
                              per_stream_ms=round(ms / b, 2)))
        print(f"{tail} B={b}: {name} {ms:.1f} ms", flush=True)
      del mods

  peaks.append(common.matmul_flops_per_second(512))
  env = common.environment()
  env.update(load_avg_1m=round(os.getloadavg()[0], 2), cores=cores,
             xla_flags=os.environ.get("XLA_FLAGS", ""),
             matmul_512_GFLOP_s_before_after=[round(p / 1e9, 1) for p in peaks])
  res = dict(
      command=("python -m benchmarks.streaming_batch " + " ".join(sys.argv[1:])).strip(),
      size=_SIZE.value, chunk_ms=chunk_ms, max_turn_tokens=m, speech_frames=frames,
      talk_tokens=len(turn_ids(8, frames)), weights="random", rows=rows,
      components=comp_rows, recompiles_after_warmup=recompiles,
      zero_recompiles=all(v == 0 for v in recompiles.values()), env=env,
      goal=dict(rtf_speaking=0.05, batch16_vs_b1=4.0))
  print(f"batched streaming decoder, {_SIZE.value} (random weights), {chunk_ms} ms chunks, "
        f"{frames} speech frames/turn, {len(cores)} core(s), load {env['load_avg_1m']}, "
        f"512^3 matmul {env['matmul_512_GFLOP_s_before_after']} GFLOP/s before/after")
  common.print_table(rows, ["codec_tail", "B", "workload", "step_ms", "per_stream_ms",
                            "rtf_per_stream", "x_vs_b1"])
  common.print_table(comp_rows, ["codec_tail", "B", "component", "ms", "per_stream_ms"])
  print(f"recompiles after warm-up: {recompiles} (must be 0)")
  common.write_json(_OUT.value or os.path.join(common.RESULTS_DIR, "streaming_batch.json"),
                    res)
  if not res["zero_recompiles"]:
    raise SystemExit(f"recompiled after warm-up: {recompiles}")


if __name__ == "__main__":
  app.run(main)
