r"""Replayed streams: B streams of speech through the streaming decoder in-process, the
server's batching settings side by side in one run (no websockets, no clients).

    python -m benchmarks.stream_replay --workdir=runs/tiny3 [--batch=16] [--seconds=20]
        [--cores=1] [--settings=plain,turn_rows,turn_codec,lanes2] [--single]
        [--out=benchmarks/results/stream_replay.json]

With `--workdir` the trained model decodes the run's test-split speech (each stream one
`serve_load --source=test` client's: utterances back to back), otherwise random weights
decode chirps (`--size`). Greedy, like the server. Settings (issue #15; all decode the same
tokens, which the run checks: `same_tokens`):

- `plain`: one batch of B, the turn's token loop over every row until the last turn ends,
  the codec on every row;
- `turn_rows`: the token loop compacted to the rows still writing (`turn_rows="auto"`);
- `turn_codec`: that and the codec on the speaking rows only, one at a time
  (`codec_rows=1`; the server's defaults);
- `lanesL`: `turn_codec` in L batches of B / L streams stepped concurrently from L
  threads (the server's `--lanes=L`); a step's time is the wall time until every lane has
  finished its chunk.

Per setting: the step time (one chunk of every stream) mean / p50 / p99 after the first
two chunks, RTF = mean step / chunk duration, tokens written per step and the longest
row's tokens per step. `--single` adds a row for one stream (the server's options at
B = 1, where turn_rows and codec_rows have nothing to compact: the plain computation; the
first stream's audio) with issue #14's streaming goals: the speaking chunks' mean RTF (goal
<= 0.05) and the p99 chunk time over the chunk duration (goal <= 0.25).
"""

from __future__ import annotations

import os
import sys
import threading
import time

from absl import app, flags

from benchmarks import cpu_pinning

_WORKDIR = flags.DEFINE_string("workdir", None, "trained run (default: random weights)")
_SIZE = flags.DEFINE_string("size", "tiny", "config recipe without --workdir")
_BATCH = flags.DEFINE_integer("batch", 16, "streams B")
_SECONDS = flags.DEFINE_float("seconds", 20.0, "audio per stream")
_CORES = flags.DEFINE_integer("cores", 1, "CPU cores to pin to (0 = no pinning)")
_SETTINGS = flags.DEFINE_list("settings", ["plain", "turn_rows", "turn_codec", "lanes2"],
                              "plain | turn_rows | turn_codec | lanesL")
_SINGLE = flags.DEFINE_bool("single", False, "also one stream alone (issue #14's goals)")
_MAX_TURN = flags.DEFINE_integer("max_turn_tokens", None, "decode budget per chunk "
                                 "(default: the config's)")
_OUT = flags.DEFINE_string("out", None, "JSON output (default benchmarks/results/"
                           "stream_replay.json)")

_DECODER = {"plain": dict(turn_rows=(), codec_rows=0),
            "turn_rows": dict(turn_rows="auto", codec_rows=0),
            "turn_codec": dict(turn_rows="auto", codec_rows=1)}


def _setting(name: str) -> tuple[dict, int]:
  """(decoder options, lanes) of a setting name."""
  if name in _DECODER:
    return _DECODER[name], 1
  if name.startswith("lanes") and name[5:].isdigit() and int(name[5:]) >= 1:
    return _DECODER["turn_codec"], int(name[5:])
  raise ValueError(f"--settings: {name!r} is not plain, turn_rows, turn_codec or lanesL")


def _replay(decoders, audio, chunk_samples):
  """Steps every lane's streams chunk by chunk -> (step seconds [n], tokens [n, B],
  speech tokens [n, B]); lanes step concurrently from threads."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  lanes = len(decoders)
  per = audio.shape[0] // lanes
  parts = [audio[l * per:(l + 1) * per] for l in range(lanes)]
  states = [d.init_stream(per, 0) for d in decoders]
  outs = [None] * lanes
  n = audio.shape[1] // chunk_samples

  def run(l, c):
    states[l], out = decoders[l].step(states[l],
                                      parts[l][:, c * chunk_samples:(c + 1) * chunk_samples])
    outs[l] = jax.device_get((out.n_tokens, out.tokens, out.n_speech))

  times, tokens, n_tok, n_speech = [], [], [], []
  for c in range(n):
    t0 = time.perf_counter()
    if lanes == 1:
      run(0, c)
    else:
      threads = [threading.Thread(target=run, args=(l, c)) for l in range(lanes)]
      for t in threads:
        t.start()
      for t in threads:
        t.join()
    times.append(time.perf_counter() - t0)
    n_tok.append(np.concatenate([o[0] for o in outs]))
    tokens.append(np.concatenate([o[1] for o in outs]))
    n_speech.append(np.concatenate([o[2] for o in outs]))
  return np.asarray(times), np.stack(n_tok), np.stack(tokens), np.stack(n_speech)


def main(argv):
  del argv
  cores = cpu_pinning.pin_cores(_CORES.value)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import numpy as np  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from liveinterp import serve  # pylint: disable=g-import-not-at-top

  settings = [(s, *_setting(s)) for s in _SETTINGS.value]
  b = _BATCH.value
  for name, _, lanes in settings:
    if b % lanes:
      sys.exit(f"stream_replay: --batch={b} is not a multiple of the {lanes} lanes of {name}")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def build(opts):
    if _WORKDIR.value:
      return serve.build_decoder(workdir=_WORKDIR.value, max_turn_tokens=_MAX_TURN.value,
                                 **opts)[0]
    return serve.build_decoder(config=os.path.join(root, "configs", f"{_SIZE.value}.py"),
                               init="random", max_turn_tokens=_MAX_TURN.value, **opts)[0]

  built = {}

  def decoder_for(opts):  # one decoder (and compiled step) per set of options
    key = tuple(sorted(opts.items()))
    if key not in built:
      built[key] = build(opts)
    return built[key]

  first = decoder_for(_DECODER["plain"])
  rate, chunk, chunk_ms = first.sample_rate, first.chunk_samples, first.chunk_ms
  if _WORKDIR.value:
    audio = np.stack(common.corpus_speech(_WORKDIR.value, _SECONDS.value, b, rate))
  else:
    audio = np.stack([common.chirp(_SECONDS.value, i, rate) for i in range(b)])
  runs = [(name, opts, lanes, audio) for name, opts, lanes in settings]
  if _SINGLE.value:
    # the server's options (at B = 1 the plain computation): lanesL rows of one stream per
    # lane have compiled this program already
    runs.append(("single", _DECODER["turn_codec"], 1, audio[:1]))
  rows, reference = [], {}
  for name, opts, lanes, a in runs:
    dec = decoder_for(opts)
    decs = [dec] * lanes  # lanes share one decoder (and its compiled step)
    per = a.shape[0] // lanes
    t0 = time.perf_counter()
    dec.step(dec.init_stream(per, 0), a[:per, :chunk])  # compile (lanes: equal shapes)
    compile_s = time.perf_counter() - t0
    print(f"[stream_replay] {name}: B={a.shape[0]} in {lanes} lane(s), compiled in "
          f"{compile_s:.1f} s; replaying {a.shape[1] // chunk} chunks...", flush=True)
    secs, n_tok, toks, n_speech = _replay(decs, a, chunk)
    ms = secs[2:] * 1000.0
    key = a.shape[0]
    same = None
    if key in reference:  # every setting writes the same tokens for the same streams
      same = bool(np.array_equal(reference[key][0], n_tok)
                  and np.array_equal(reference[key][1], toks))
    else:
      reference[key] = (n_tok, toks)
    row = {"setting": name, "B": int(a.shape[0]), "lanes": lanes,
           "turn_rows": str(opts["turn_rows"] or "none"), "codec_rows": opts["codec_rows"],
           "chunks": int(secs.size), "step_mean_ms": float(ms.mean()),
           "step_p50_ms": float(np.percentile(ms, 50)),
           "step_p99_ms": float(np.percentile(ms, 99)),
           "rtf": float(ms.mean() / chunk_ms),
           "tokens_per_step": float(n_tok.sum(axis=1).mean()),
           "longest_row_tokens": float(n_tok.max(axis=1).mean()),
           "same_tokens": same, "compile_s": compile_s}
    if name == "single":
      speaking = (n_speech[2:, 0] > 0)
      row["speaking_chunks"] = int(speaking.sum())
      row["speaking_rtf"] = (float(ms[speaking].mean() / chunk_ms) if speaking.any()
                             else None)
      row["p99_over_chunk"] = float(np.percentile(ms, 99) / chunk_ms)
      row["goals_met"] = bool(row["speaking_rtf"] is not None
                              and row["speaking_rtf"] <= 0.05
                              and row["p99_over_chunk"] <= 0.25)
    rows.append(row)
  cols = ["setting", "B", "lanes", "turn_rows", "codec_rows", "step_mean_ms", "step_p50_ms",
          "step_p99_ms", "rtf", "tokens_per_step", "longest_row_tokens", "same_tokens"]
  common.print_table(rows, cols)
  if _SINGLE.value:
    common.print_table([rows[-1]], ["setting", "speaking_chunks", "speaking_rtf",
                                    "p99_over_chunk", "goals_met"])
  env = common.environment()
  env["cores"] = cores
  env["load_avg_1m"] = round(os.getloadavg()[0], 2)
  payload = {"benchmark": "stream_replay",
             "command": "python -m benchmarks.stream_replay " + " ".join(sys.argv[1:]),
             "workdir": _WORKDIR.value, "weights": "trained" if _WORKDIR.value else "random",
             "chunk_ms": chunk_ms, "seconds": _SECONDS.value, "rows": rows, "env": env}
  out = _OUT.value or os.path.join(common.RESULTS_DIR, "stream_replay.json")
  common.write_json(out, payload)


if __name__ == "__main__":
  app.run(main)
