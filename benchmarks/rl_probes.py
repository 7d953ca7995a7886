"""RL variants judged by their own dev scores: did the stage improve on the policy it started
from, and did its sampled reward rise?

    python -m benchmarks.rl_probes --run_dir=runs/tiny --stages=rl1,rl1_group4,...

For each RL stage directory (any `python -m liveinterp.train` RL workdir under RUN_DIR):
the settings that differ from the first stage listed (rl.*, learning rate, episodes per
iteration, iterations), the greedy dev BLEU/chrF/LAAL of its starting policy and of its
final policy on the same dev episodes (`start/eval/*` and `eval/*` of its result.json:
`rl.trainer.starting_policy_eval`), the mean KL per action and per text/control token
over its last iterations, and the trend of its *sampled* rewards (mean of the last third
of the iterations minus the first third: `reward/total`, and `reward/seq`, the chrF of
the sampled hypotheses). No evaluation is run: the numbers are the stages' own records.
Prints the table and writes `benchmarks/results/rl_probes.json`.
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from benchmarks import common
from benchmarks.rl_table import read_metrics, training_stats

COLUMNS = ("stage", "changes", "iterations", "dev_bleu_start", "dev_bleu", "dev_chrf_start",
           "dev_chrf", "dev_laal_start", "dev_laal", "kl_last", "kl_text_last",
           "reward_trend", "seq_trend")


def _define_flags() -> dict:
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny", "recipe run directory"),
      stages=flags.DEFINE_list("stages", ["rl1"], "RL stage directories under run_dir; "
                               "the first is the baseline the changes are named against"),
      out=flags.DEFINE_string("out", os.path.join(common.RESULTS_DIR, "rl_probes.json"),
                              "JSON output"))


_FLAGS: dict = {}


def _flat(config: dict) -> dict:
  """The settings an RL variant is told apart by: every rl.* field, the learning rate,
  episodes per iteration and iterations."""
  out = {f"rl.{k}": v for k, v in config.get("rl", {}).items()}
  t = config.get("train", {})
  out.update({"lr": t.get("learning_rate"), "batch": t.get("batch_size")})
  return out


def changes(config: dict, base: dict) -> str:
  """`config`'s settings that differ from `base`'s, as `name=value` (`_flat`)."""
  a, b = _flat(config), _flat(base)
  return ", ".join(f"{k.removeprefix('rl.')}={a[k]}" for k in sorted(a)
                   if a[k] != b.get(k)) or "—"


def trend(metrics: list[dict], key: str) -> float | None:
  """Mean of `key` over the last third of the iterations minus the first third."""
  xs = [m[key] for m in metrics if key in m]
  k = len(xs) // 3
  if k == 0:
    return None
  return sum(xs[-k:]) / k - sum(xs[:k]) / k


def probe_row(run_dir: str, stage: str, base_config: dict) -> dict | None:
  """One stage's row; None when the stage has no result.json yet."""
  d = os.path.join(run_dir, stage)
  if not os.path.exists(os.path.join(d, "result.json")):
    return None
  with open(os.path.join(d, "config.json")) as f:
    config = json.load(f)
  metrics = read_metrics(d)
  stats = training_stats(d)
  return {"stage": stage, "changes": changes(config, base_config),
          "iterations": metrics[-1]["step"] if metrics else None,
          **{c: stats.get(c) for c in COLUMNS[3:11]},
          "reward_trend": trend(metrics, "reward/total"),
          "seq_trend": trend(metrics, "reward/seq")}


def main(argv):
  del argv
  F = {k: v.value for k, v in _FLAGS.items()}
  run_dir = os.path.abspath(F["run_dir"])
  with open(os.path.join(run_dir, F["stages"][0], "config.json")) as f:
    base = json.load(f)
  rows = []
  for stage in F["stages"]:
    r = probe_row(run_dir, stage, base)
    if r is None:
      print(f"[rl_probes] {stage}: no result.json under {run_dir}, skipped")
      continue
    rows.append(r)
  common.print_table(rows, COLUMNS)
  common.write_json(F["out"], {
      "run_dir": run_dir, "baseline": F["stages"][0], "rows": rows,
      "command": (f"python -m benchmarks.rl_probes --run_dir={F['run_dir']} "
                  f"--stages={','.join(F['stages'])}")})
  print(f"[rl_probes] wrote {F['out']}")


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
