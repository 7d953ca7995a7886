r"""Data throughput: corpus build time/size and loader speed of every stage pipeline.

  python -m benchmarks.data_throughput --size=micro --out=/tmp/data_throughput.json
  python -m benchmarks.data_throughput --size=tiny --data_dir=DIR --steps_per_s=2.0

Builds (or reuses) the corpus with `data_pipelines.build`, then times the grain pipelines
of the codec, pretraining and SFT stages with the `--model` config (tiny by default:
batch 8, seq_len 128) and compares rows/s with what training consumes
(`batch_size x steps_per_s`; the tiny model runs ~2 steps/s on CPU, so 16 rows/s). The
goal is a loader at least 10x faster than the trainer. Prints a table, writes JSON
(`rows`/`env`/`command`, the shape `benchmarks/render_readme.py` renders). On a shared
machine wall-clock rates follow the load (`env.load_avg_1m`); CPU ms per row does not.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time

from absl import app
from absl import flags

_SIZE = flags.DEFINE_enum("size", "micro", ["micro", "tiny", "full"], "Corpus size.")
_PAIR = flags.DEFINE_string("pair", "zh-en", "Language pair.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Build folder (default: a temp dir, "
                                "deleted afterwards).")
_OUT = flags.DEFINE_string("out", None, "JSON output path.")
_MODEL = flags.DEFINE_string("model", "tiny", "Model config (configs/<model>.py).")
_STEPS = flags.DEFINE_float("steps_per_s", 2.0, "Measured training step rate to compare "
                            "with (tiny on CPU: ~2).")
_BATCHES = flags.DEFINE_integer("num_batches", 20, "Batches timed per stage.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Batches before timing starts.")
_WORKERS = flags.DEFINE_integer("worker_count", 0, "grain worker processes.")
_GOAL = 10.0


def measure_stage(stage: str, cfg, source, tok, num_batches: int, warmup: int,
                  worker_count: int) -> dict:
  """Rows/s and source examples/s of one stage pipeline."""
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  kw = {} if stage == "codec" else dict(speech_placeholder="zeros")
  ds = pipelines.make_dataset(stage, cfg, source, tok, worker_count=worker_count,
                              shard=pipelines.shard_options(0, 1), **kw)
  it = iter(ds)
  t0 = time.perf_counter()
  for _ in range(warmup):
    next(it)
  t_first = time.perf_counter() - t0
  rows = examples = tokens = 0
  t0, c0 = time.perf_counter(), time.process_time()
  for _ in range(num_batches):
    b = next(it)
    first = next(iter(b.values()))
    rows += first.shape[0]
    if "segment_ids" in b:
      seg = b["segment_ids"]
      examples += int(seg.max(axis=1).sum())
      tokens += int((seg > 0).sum())
    else:
      examples += first.shape[0]
  dt, cpu = time.perf_counter() - t0, time.process_time() - c0
  if hasattr(it, "close"):
    it.close()
  # CPU time of this process (all its threads): on a shared machine wall-clock rates
  # depend on the load, CPU ms per row does not (worker processes are not counted).
  cpu_ms = 1000 * cpu / rows if worker_count == 0 else None
  return dict(stage=stage, rows_per_s=rows / dt, examples_per_s=examples / dt,
              cpu_ms_per_row=cpu_ms,
              rows_per_cpu_s=(1000 / cpu_ms) if cpu_ms else None,
              tokens_per_s=(tokens / dt) if tokens else None,
              fill=(tokens / (rows * cfg.data.seq_len)) if tokens else None,
              warmup_s=t_first, seconds=dt, batches=num_batches)


def run(size: str, pair: str, data_dir: str | None, model: str, steps_per_s: float,
        num_batches: int, warmup: int, worker_count: int) -> dict:
  from data_pipelines import build as build_lib  # pylint: disable=g-import-not-at-top
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  from data_pipelines.tokenizer import Tokenizer  # pylint: disable=g-import-not-at-top
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top

  tmp = None
  if not data_dir:
    tmp = data_dir = tempfile.mkdtemp(prefix="liveinterp_bench_")
  try:
    t0 = time.perf_counter()
    summary = build_lib.run(pair, size, data_dir, model=model)
    build_s = time.perf_counter() - t0
    cfg = config_lib.load(model)
    cfg.data.pair, cfg.data.build, cfg.data.data_dir = pair, size, data_dir
    tok = Tokenizer.load(summary["tokenizer"])
    source = pipelines.open_corpus(cfg, "train")
    stages = [measure_stage(s, cfg, source, tok, num_batches, warmup, worker_count)
              for s in pipelines.STAGES]
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)
  need = cfg.train.batch_size * steps_per_s
  for s in stages:
    s["consumption_rows_per_s"] = need
    s["ratio"] = s["rows_per_s"] / need
    s["meets_goal"] = s["ratio"] >= _GOAL
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  env = common.environment()
  env["load_avg_1m"] = round(os.getloadavg()[0], 2)
  rows = [dict(stage=s["stage"], rows_per_s=round(s["rows_per_s"], 1),
               examples_per_s=round(s["examples_per_s"], 1),
               cpu_ms_per_row=(round(s["cpu_ms_per_row"], 2) if s["cpu_ms_per_row"]
                               else "-"),
               x_training_need=round(s["ratio"], 1), meets_10x=s["meets_goal"])
          for s in stages]
  command = (f"python -m benchmarks.data_throughput --size={size} --pair={pair} "
             f"--model={model} --steps_per_s={steps_per_s} --worker_count={worker_count}")
  return dict(command=command, rows=rows, env=env,
              size=size, pair=pair, model=model, batch_size=cfg.train.batch_size,
              seq_len=cfg.data.seq_len, steps_per_s=steps_per_s, worker_count=worker_count,
              build=dict(seconds_this_run=round(build_s, 2), reused=summary["reused"],
                         times=summary["times"], splits=summary["splits"],
                         sizes_bytes=summary["sizes"]),
              stages=stages, goal_ratio=_GOAL)


def print_table(res: dict):
  b = res["build"]
  mib = sum(b["sizes_bytes"].values()) / 2**20
  print(f"\ncorpus {res['pair']} {res['size']}: {sum(b['splits'].values())} records "
        f"{b['splits']}, build {b['times']} (this run {b['seconds_this_run']} s, reused "
        f"{b['reused']}), {mib:.1f} MiB on disk")
  print(f"loader vs training consumption: model {res['model']}, batch {res['batch_size']} x "
        f"{res['steps_per_s']} steps/s = {res['batch_size'] * res['steps_per_s']:.0f} rows/s, "
        f"workers {res['worker_count']}")
  hdr = f"{'stage':9s} {'rows/s':>9s} {'examples/s':>11s} {'tokens/s':>10s} {'fill':>5s} " \
        f"{'cpu ms/row':>10s} {'x need':>7s}  goal>={res['goal_ratio']:.0f}x"
  print(hdr)
  print("-" * len(hdr))
  for s in res["stages"]:
    tps = f"{s['tokens_per_s']:.0f}" if s["tokens_per_s"] else "-"
    fill = f"{s['fill']:.2f}" if s["fill"] else "-"
    cpu = f"{s['cpu_ms_per_row']:.2f}" if s["cpu_ms_per_row"] else "-"
    print(f"{s['stage']:9s} {s['rows_per_s']:9.1f} {s['examples_per_s']:11.1f} {tps:>10s} "
          f"{fill:>5s} {cpu:>10s} {s['ratio']:7.1f}  "
          f"{'ok' if s['meets_goal'] else 'BELOW GOAL'}")


def main(argv):
  del argv
  res = run(_SIZE.value, _PAIR.value, _DATA_DIR.value, _MODEL.value, _STEPS.value,
            _BATCHES.value, _WARMUP.value, _WORKERS.value)
  print_table(res)
  if _OUT.value:
    from benchmarks import common  # pylint: disable=g-import-not-at-top
    common.write_json(_OUT.value, res)


if __name__ == "__main__":
  app.run(main)
