r"""Server load: N concurrent websocket clients streaming in real time on localhost.

    python -m benchmarks.serve_load [--clients=16] [--seconds=30] [--speed=1]
        [--size=tiny | --workdir=RUN [--source=test]]
        [--out=benchmarks/results/serve_load.json]

Starts `liveinterp.serving.server.StreamServer` in-process (port 0, 127.0.0.1, one slot
per client, an in-process decoder: random weights of `configs/<size>.py`, or the trained
run of `--workdir`) and N clients (`liveinterp.client.stream`, pcm16 frames of
`--frame_ms`) in this process's event loop, each streaming `--seconds` of its own test
signal (a chirp with noise) or, with `--source=test`, the trained run's test-split speech
(utterances back to back, each client from its own), at `--speed` times real time; starts
are staggered over one chunk, as independent users are. Greedy decoding; with random
weights the policy writes whatever it writes (the table says how many turns and how much
speech); a trained model on test speech translates, so its speaking turns are the
realistic load.

Reported:
- per-chunk latency (server side: from the moment a session's chunk is complete in the
  server's buffer to the moment its last event was sent) p50 / p95 / p99 / max, in ms,
  against the goal p99 < chunk length;
- RTF: decoder busy time / wall time of the load (one batched step serves every active
  session; < 1 keeps up) and the mean sessions per step;
- client lag: each session's wall time minus its audio time / speed (how far behind live
  the last output came);
- peak RSS of the process (server + clients), refused (`busy`) and failed sessions
  (any other error, or no `done`).
Clients share the process (and the Python interpreter) with the server, so their cost
lands in the numbers too; on a shared machine everything follows the load
(`env.load_avg_1m`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time

from absl import app, flags

_CLIENTS = flags.DEFINE_integer("clients", 16, "concurrent sessions")
_SECONDS = flags.DEFINE_float("seconds", 30.0, "audio each client streams (s)")
_SPEED = flags.DEFINE_float("speed", 1.0, "times real time (0 = as fast as it reads)")
_SIZE = flags.DEFINE_string("size", "tiny", "config recipe (configs/<size>.py)")
_WORKDIR = flags.DEFINE_string("workdir", None, "trained run (default: random weights)")
_MAX_TURN = flags.DEFINE_integer("max_turn_tokens", None, "decode budget per chunk "
                                 "(default: the config's)")
_FRAME_MS = flags.DEFINE_float("frame_ms", 100.0, "audio per client frame")
_SLOTS = flags.DEFINE_integer("max_sessions", None, "server slots (default: --clients)")
_LANES = flags.DEFINE_string("lanes", "auto", "server's decoder lanes (batches stepped "
                             "concurrently; must divide the slots); auto: serve's default "
                             "(serve.auto_lanes)")
_WAIT = flags.DEFINE_float("batch_wait_ms", None, "server's dynamic batching wait "
                           "(default: ServerConfig's)")
_CODEC_ROWS = flags.DEFINE_integer("codec_rows", 1, "codec on the speaking slots only, "
                                   "this many at a time (serve's default 1; 0: every slot)")
_TURN_ROWS = flags.DEFINE_list("turn_rows", ["auto"], "the turn's token loop on at most "
                                "this many slots once no more are writing, e.g. 8,4; "
                                "auto (serve's default): halvings of the slots down to 1; "
                                "none: every slot")
_SOURCE = flags.DEFINE_enum("source", "signal", ["signal", "test"], "what clients stream: "
                            "'signal' (a chirp with noise per client) or 'test' (the "
                            "--workdir run's test-split speech, utterances back to back "
                            "with 300 ms pauses, each client from its own utterance)")
_OUT = flags.DEFINE_string("out", None, "JSON output (default benchmarks/results/"
                           "serve_load.json)")


def _rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


async def _loop_lag(period_s: float, out: dict, key: str):
  """Records the largest delay of this event loop's timers (a starved loop delays the
  websockets keepalive and every send)."""
  while True:
    t = time.perf_counter()
    await asyncio.sleep(period_s)
    out[key] = max(out.get(key, 0.0), time.perf_counter() - t - period_s)


async def _load(url, n, seconds, speed, frame_ms, chunk_ms, rate, lag, audio_for):
  from liveinterp import client  # pylint: disable=g-import-not-at-top
  monitor = asyncio.create_task(_loop_lag(0.05, lag, "client_loop_lag_max_s"))

  async def one(i):
    await asyncio.sleep(i * chunk_ms / 1000 / n)  # staggered over one chunk
    audio = audio_for(i)
    t0 = time.perf_counter()
    try:
      res = await client.stream(url, audio, rate, speed=speed, frame_ms=frame_ms)
      return {"client": i, "outcome": "done", "turns": len(res.turns),
              "audio_out_s": res.audio.size / res.output_sample_rate,
              "chunks": res.done["chunks"], "wall_s": time.perf_counter() - t0,
              "lag_s": res.wall_s - (seconds / speed if speed > 0 else 0.0)}
    except client.ServerError as e:
      return {"client": i, "outcome": "refused" if e.code == "busy" else f"error:{e.code}",
              "message": e.message}
    except Exception as e:  # pylint: disable=broad-except
      return {"client": i, "outcome": f"failed:{type(e).__name__}", "message": str(e)}

  try:
    return await asyncio.gather(*(one(i) for i in range(n)))
  finally:
    monitor.cancel()


STEADY_AFTER_S = 5.0


def _steady_p99(ordered_ms, clients: int, chunk_ms: float):
  """p99 of the per-chunk latencies after the first `STEADY_AFTER_S` of audio of every
  client (that many chunks per client dropped from the front of the ordered list)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  skip = int(clients * STEADY_AFTER_S * 1000 // chunk_ms)
  rest = np.asarray(ordered_ms[skip:], np.float64)
  return float(np.percentile(rest, 99)) if rest.size else None


def main(argv):
  del argv
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import numpy as np  # pylint: disable=g-import-not-at-top
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from liveinterp import serve  # pylint: disable=g-import-not-at-top
  from liveinterp.serving import server as server_lib  # pylint: disable=g-import-not-at-top

  logging.getLogger("liveinterp.serve").setLevel(logging.WARNING)  # no line per connection
  n = _CLIENTS.value
  if n < 1 or _SECONDS.value <= 0 or _SPEED.value < 0:
    sys.exit("serve_load: --clients >= 1, --seconds > 0 and --speed >= 0 are required")
  if _SOURCE.value == "test" and not _WORKDIR.value:
    sys.exit("serve_load: --source=test streams a trained run's test split: give --workdir")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  t0 = time.perf_counter()
  turn_rows = serve.parse_turn_rows(",".join(_TURN_ROWS.value))
  batching = dict(max_turn_tokens=_MAX_TURN.value, codec_rows=_CODEC_ROWS.value,
                  turn_rows=turn_rows)
  if _WORKDIR.value:
    decoder, tokenizer, _ = serve.build_decoder(workdir=_WORKDIR.value, **batching)
  else:
    decoder, tokenizer, _ = serve.build_decoder(
        config=os.path.join(root, "configs", f"{_SIZE.value}.py"), init="random",
        **batching)
  build_s = time.perf_counter() - t0
  slots = _SLOTS.value or n
  lanes = serve.parse_lanes(_LANES.value, slots)
  srv = server_lib.StreamServer(decoder, tokenizer=tokenizer, config=server_lib.ServerConfig(
      port=0, max_sessions=slots, idle_timeout_s=60.0,
      lanes=lanes,
      **({} if _WAIT.value is None else {"batch_wait_ms": _WAIT.value})))
  print(f"[serve_load] {_SIZE.value if not _WORKDIR.value else _WORKDIR.value}: built in "
        f"{build_s:.1f} s; compiling the step for {slots} slots...", flush=True)
  with srv.start_in_thread() as running:
    print(f"[serve_load] warm-up {srv.warmup_s:.1f} s; {n} clients x {_SECONDS.value:g} s "
          f"at speed {_SPEED.value:g} -> {running.url}", flush=True)
    lag = {}
    server_monitor = asyncio.run_coroutine_threadsafe(
        _loop_lag(0.05, lag, "server_loop_lag_max_s"), running.loop)
    rate = decoder.sample_rate
    audio = (common.corpus_speech(_WORKDIR.value, _SECONDS.value, n, rate) if _SOURCE.value == "test"
             else [common.chirp(_SECONDS.value, i, rate) for i in range(n)])
    t_load = time.perf_counter()
    clients = asyncio.run(_load(running.url, n, _SECONDS.value, _SPEED.value,
                                _FRAME_MS.value, decoder.chunk_ms, rate, lag,
                                audio.__getitem__))
    wall_s = time.perf_counter() - t_load
    server_monitor.cancel()
    stats = srv.stats()
    step_ms = [round(float(x), 1) for x in srv._step_ms]  # pylint: disable=protected-access
    ordered = srv.latencies_ms()  # in the order their events went out
  lat = stats["latency_ms"]
  done = [c for c in clients if c["outcome"] == "done"]
  refused = sum(c["outcome"] == "refused" for c in clients)
  failed = len(clients) - len(done) - refused
  steps = stats["step_ms"]["n"]
  chunks = stats["counts"].get("chunks", 0)
  row = {
      "clients": n, "speed": _SPEED.value, "seconds": _SECONDS.value,
      "lanes": lanes, "lanes_flag": _LANES.value, "codec_rows": _CODEC_ROWS.value,
      "turn_rows": ",".join(_TURN_ROWS.value),
      "chunk_ms": decoder.chunk_ms, "p50_ms": lat["p50"],
      "p95_ms": lat["p95"],
      "p99_ms": lat["p99"], "max_ms": lat["max"],
      # steady state: the chunks sent after the first STEADY_AFTER_S of every stream
      # (warm-up transients: the first steps after start-up run slower)
      "p99_steady_ms": _steady_p99(ordered, n, decoder.chunk_ms),
      "rtf": stats["step_ms"]["total"] / 1000 / wall_s,
      "step_p50_ms": stats["step_ms"]["p50"],
      "sessions_per_step": chunks / max(steps, 1),
      "lag_p99_s": float(np.percentile([c["lag_s"] for c in done], 99)) if done else None,
      "turns": sum(c["turns"] for c in done),
      "speech_out_s": sum(c["audio_out_s"] for c in done),
      "peak_rss_mb": _rss_mb(), "refused": refused, "failed": failed,
      "server_loop_lag_max_s": lag.get("server_loop_lag_max_s"),
      "client_loop_lag_max_s": lag.get("client_loop_lag_max_s"),
      "goal_met": bool(lat["p99"] is not None and lat["p99"] < decoder.chunk_ms
                       and failed == 0 and refused == 0),
  }
  common.print_table([row], ["clients", "speed", "lanes", "codec_rows", "turn_rows",
                             "chunk_ms",
                             "p50_ms",
                             "p95_ms", "p99_ms", "p99_steady_ms",
                             "max_ms", "rtf", "sessions_per_step", "lag_p99_s", "turns",
                             "peak_rss_mb", "refused", "failed", "goal_met"])
  env = common.environment()
  env["load_avg_1m"] = round(os.getloadavg()[0], 2)
  payload = {"benchmark": "serve_load", "size": _SIZE.value, "workdir": _WORKDIR.value,
             "weights": "trained" if _WORKDIR.value else "random", "source": _SOURCE.value,
             "rows": [row],
             "clients": clients, "server": {k: v for k, v in stats.items()
                                            if k != "sessions"},
             "step_ms_each": step_ms, "build_s": build_s, "warmup_s": srv.warmup_s, "wall_s": wall_s,
             "max_turn_tokens": decoder.max_turn_tokens,
             "command": "python -m benchmarks.serve_load " + " ".join(sys.argv[1:]),
             "goal": "p99 per-chunk latency < chunk_ms with zero failed/refused sessions",
             "env": env}
  common.write_json(_OUT.value or os.path.join(common.RESULTS_DIR, "serve_load.json"),
                    payload)


if __name__ == "__main__":
  app.run(main)
