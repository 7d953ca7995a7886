"""Where a training step spends its time: a `jax.profiler` trace of a few jitted fwd+bwd
steps, parsed offline into the top XLA ops by self time.

    python benchmarks/profile_step.py --model=encoder|codec|s2st_step|llm --size=tiny|small
        [--steps=3] [--top=15] [--profile_out=benchmarks/results/profile_<model>_<size>.json]
        [--batch=4 --seq=256 --audio_seconds=2.56]   (model_flops' flags, same defaults)

The step is model_flops' own (`benchmarks.model_flops._case`, same shapes, same compiled
executable). The installed jax writes `<log_dir>/plugins/profile/<run>/*.trace.json.gz`
(Chrome trace format); every XLA thunk is an event whose `args.hlo_op` names the HLO
instruction. Self time = event time minus the time of events nested in it on the same
thread. Each op is labelled with its HLO kind from the compiled module text (for a fusion:
the heavy ops inside it, e.g. `fusion[convolution]`), so the table says whether time goes
to matmuls/convolutions or to elementwise/reduction/copy work.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common, model_flops  # noqa: E402  (model_flops: --batch/--seq/--audio_seconds)

MODELS = ("encoder", "codec", "s2st_step", "llm")
SIZES = ("micro", "tiny", "small")

_F: dict = {}


def _define_flags():
  """The CLI's flags, defined only when run as a script: importing this module (the trace
  parser's test) must not claim names such as --steps in absl's global registry."""
  _F.update(
      model=flags.DEFINE_enum("model", "encoder", list(MODELS), "model whose step is profiled"),
      size=flags.DEFINE_enum("size", "tiny", list(SIZES), "model size"),
      steps=flags.DEFINE_integer("steps", 3, "traced steps (after one warm-up)"),
      top=flags.DEFINE_integer("top", 15, "ops in the table"),
      out=flags.DEFINE_string("profile_out", None, "JSON output (default "
                              "benchmarks/results/profile_<model>_<size>.json)"))


_BATCH, _SEQ, _AUDIO_S = model_flops._BATCH, model_flops._SEQ, model_flops._AUDIO_S

# Ops inside a fusion that decide what kind of work it is, heaviest first.
_HEAVY = ("convolution", "dot", "custom-call", "fft", "reduce-window", "reduce", "scatter",
          "gather", "sort", "transpose", "concatenate", "pad", "slice", "dynamic-slice",
          "dynamic-update-slice", "exponential", "log", "tanh", "power", "sqrt", "rsqrt",
          "divide", "multiply", "add", "select", "compare", "broadcast", "copy")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*.*?\s([a-z][a-z0-9\-]*)\((.*)$")
_COMP = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


def parse_hlo_kinds(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> kind (`dot`, `fusion[convolution]`, ...) for every instruction
  of the module (fusion kinds list up to two heavy ops found in the fused computation,
  following nested calls)."""
  comps: dict[str, list[tuple[str, str, str]]] = collections.defaultdict(list)
  current = None
  for line in hlo_text.splitlines():
    m = _COMP.match(line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTR.match(line)
    if m and current is not None:
      comps[current].append((m.group(1), m.group(2), m.group(3)))

  def inner_ops(comp, seen):
    ops = set()
    if comp in seen:
      return ops
    seen.add(comp)
    for _, op, rest in comps.get(comp, ()):
      ops.add(op)
      for callee in re.findall(r"(?:calls|to_apply|body|condition)=%?([\w.\-]+)", rest):
        ops |= inner_ops(callee, seen)
    return ops

  kinds = {}
  for comp, instrs in comps.items():
    for name, op, rest in instrs:
      callees = re.findall(r"calls=%?([\w.\-]+)", rest)
      if op == "fusion" or callees:
        inner = set()
        for c in callees:
          inner |= inner_ops(c, set())
        heavy = [h for h in _HEAVY if h in inner][:2]
        kinds[name] = f"{op}[{','.join(heavy)}]" if heavy else op
      else:
        kinds[name] = op
  return kinds


def trace_files(log_dir: str) -> list[str]:
  """The Chrome-format traces jax.profiler wrote under `log_dir`."""
  return sorted(glob.glob(os.path.join(log_dir, "plugins", "profile", "*", "*.trace.json.gz")))


def op_self_times(trace_path: str) -> dict[str, dict]:
  """{hlo_op: {'self_us', 'count'}} from one trace (events carrying `args.hlo_op`)."""
  with gzip.open(trace_path) as f:
    data = json.load(f)
  events = data["traceEvents"] if isinstance(data, dict) else data
  by_thread = collections.defaultdict(list)
  for e in events:
    if e.get("ph") == "X" and "dur" in e and not e.get("name", "").startswith("end: "):
      by_thread[(e.get("pid"), e.get("tid"))].append(e)
  out: dict[str, dict] = collections.defaultdict(lambda: {"self_us": 0.0, "count": 0})
  for evs in by_thread.values():
    evs.sort(key=lambda e: (e["ts"], -e["dur"]))
    stack: list[list] = []   # [end_ts, event, child_time]

    def close(entry):
      ev, child = entry[1], entry[2]
      op = ev.get("args", {}).get("hlo_op")
      if op is not None:
        out[op]["self_us"] += max(0.0, ev["dur"] - child)
        out[op]["count"] += 1

    for e in evs:
      while stack and stack[-1][0] <= e["ts"]:
        close(stack.pop())
      if stack:
        stack[-1][2] += e["dur"]
      stack.append([e["ts"] + e["dur"], e, 0.0])
    while stack:
      close(stack.pop())
  return dict(out)


def profile(run, steps: int, log_dir: str) -> dict[str, dict]:
  """Traces `steps` calls of `run()` (one untraced warm-up first) -> per-op self times."""
  import jax
  run()
  with jax.profiler.trace(log_dir):
    for _ in range(steps):
      run()
  files = trace_files(log_dir)
  if not files:
    raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {log_dir}")
  total: dict[str, dict] = collections.defaultdict(lambda: {"self_us": 0.0, "count": 0})
  for path in files:
    for op, v in op_self_times(path).items():
      total[op]["self_us"] += v["self_us"]
      total[op]["count"] += v["count"]
  return dict(total)


def summarise(times: dict[str, dict], kinds: dict[str, str], steps: int,
              top: int) -> tuple[list[dict], list[dict]]:
  """(top ops rows, per-kind rows), times per step in ms, shares of the total op time."""
  total = sum(v["self_us"] for v in times.values()) or 1.0
  ops = sorted(times.items(), key=lambda kv: -kv[1]["self_us"])
  rows = [{"op": op, "kind": kinds.get(op, "?"), "ms_per_step": v["self_us"] / steps / 1e3,
           "share": v["self_us"] / total, "calls_per_step": v["count"] / steps}
          for op, v in ops[:top]]
  by_kind: dict[str, float] = collections.defaultdict(float)
  for op, v in times.items():
    by_kind[kinds.get(op, "?")] += v["self_us"]
  kind_rows = [{"kind": k, "ms_per_step": t / steps / 1e3, "share": t / total}
               for k, t in sorted(by_kind.items(), key=lambda kv: -kv[1])][:top]
  return rows, kind_rows


def main(argv):
  del argv
  from liveinterp.common import config as config_lib
  model, size = _F["model"].value, _F["size"].value
  steps, top = _F["steps"].value, _F["top"].value
  cfg = config_lib.load(f"{size}:pretrain")
  cfg.dtype = "float32"  # as model_flops
  run, flops = model_flops._case(model, cfg, _BATCH.value, _SEQ.value, _AUDIO_S.value)
  kinds = parse_hlo_kinds(run.hlo_text())
  with tempfile.TemporaryDirectory() as log_dir:
    times = profile(run, steps, log_dir)
  step_s = common.time_fn(run, repeats=steps)
  rows, kind_rows = summarise(times, kinds, steps, top)
  op_ms = sum(v["self_us"] for v in times.values()) / steps / 1e3
  print(f"{model} {size}: step {step_s * 1e3:.1f} ms, op self time {op_ms:.1f} ms/step "
        f"(2 threads may overlap), model {flops / 1e9:.2f} GFLOP")
  common.print_table(rows, ["op", "kind", "ms_per_step", "share", "calls_per_step"])
  print()
  common.print_table(kind_rows, ["kind", "ms_per_step", "share"])
  out = _F["out"].value or os.path.join(common.RESULTS_DIR, f"profile_{model}_{size}.json")
  common.write_json(out, {
      "benchmark": "profile_step",
      "command": f"python benchmarks/profile_step.py --model={model} --size={size}",
      "model": model, "size": size, "env": common.environment(), "batch": _BATCH.value,
      "seq": _SEQ.value, "audio_seconds": _AUDIO_S.value, "steps": steps,
      "step_s": step_s, "op_ms_per_step": op_ms, "model_GFLOP": flops / 1e9,
      "rows": rows, "kinds": kind_rows})


if __name__ == "__main__":
  _define_flags()
  app.run(main)
