"""Where the main job's time goes: one row per recipe step of a run, from its own records.

    python -m benchmarks.main_job_times --run_dir=runs/tiny --label="after #14 (idle)"

Reads `RUN_DIR/recipe_times.json` (each step's wall time, written by `liveinterp.recipe`)
and each trained stage's `result.json` (steps run, steps per second), prints the table
and merges it into `benchmarks/results/main_job_times.json` under `--label`: rows of other
labels stay, so runs before and after a change sit in one table (README results). A step
the run has not timed is left out; `total` sums the timed steps of the main job (the RL
ablations, side branches the main job does not run, are listed but not summed).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from benchmarks import common
from configs.base import RL_ABLATIONS

COLUMNS = ("label", "step", "seconds", "share", "steps", "steps_per_s", "s_per_step")


def rows_for(run_dir: str, label: str) -> list[dict]:
  """The table rows of one run (in the order the recipe first ran its steps; the total
  last)."""
  path = os.path.join(run_dir, "recipe_times.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no recipe_times.json (run liveinterp.recipe first)")
  with open(path) as f:
    times = json.load(f)
  total = sum(t for step, t in times.items() if step not in RL_ABLATIONS)
  rows = []
  for step in times:
    ablation = step in RL_ABLATIONS
    row = dict(label=label, step=f"{step} (ablation)" if ablation else step,
               seconds=times[step],
               share=round(times[step] / total, 3) if total and not ablation else None,
               steps=None, steps_per_s=None, s_per_step=None)
    result = os.path.join(run_dir, step, "result.json")
    if os.path.exists(result):
      with open(result) as f:
        r = json.load(f)
      sps = r.get("steps_per_second")
      row.update(steps=r.get("step"), steps_per_s=round(sps, 3) if sps else None,
                 s_per_step=round(1.0 / sps, 2) if sps else None)
    rows.append(row)
  rows.append(dict(label=label, step="total", seconds=round(total, 1), share=1.0,
                   steps=None, steps_per_s=None, s_per_step=None))
  return rows


def merge(path: str, label: str, rows: list[dict], command: str) -> dict:
  """`rows` replace the rows of `label` in the JSON at `path` (others are kept)."""
  old = []
  if os.path.exists(path):
    with open(path) as f:
      old = [r for r in json.load(f).get("rows", []) if r.get("label") != label]
  return dict(command=command, env=common.environment(), rows=old + rows)


def main(argv):
  del argv
  rows = rows_for(_RUN_DIR.value, _LABEL.value)
  common.print_table(rows, COLUMNS)
  payload = merge(_OUT.value, _LABEL.value, rows,
                  "python -m benchmarks.main_job_times --run_dir=RUN_DIR --label=LABEL")
  common.write_json(_OUT.value, payload)


if __name__ == "__main__":
  _RUN_DIR = flags.DEFINE_string("run_dir", "runs/tiny", "recipe run directory")
  _LABEL = flags.DEFINE_string("label", "run", "row label (e.g. before/after a change)")
  _OUT = flags.DEFINE_string("out", os.path.join(common.RESULTS_DIR, "main_job_times.json"),
                             "JSON output (rows of other labels are kept)")
  app.run(main)
