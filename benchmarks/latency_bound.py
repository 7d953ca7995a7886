"""How low can text LAAL go on the test split without guessing? (issue #13)

Issue #13's goal asks stage-2 RL for a LAAL >= 20 % below SFT at <= 1 BLEU loss. This
benchmark puts that target next to what the test references allow, with no model:

- **alignment policy** — the training targets as the SFT data interleaves them: each
  target word at the end of the chunk where every source word it is aligned to (and all
  earlier target words) has been heard (`stream_format.ready_times`). The evaluation's
  "reference targets, alignment policy" row; checked equal here.
- **source order** — the same words, each at the end of the chunk where *its own* aligned
  source words end, the delays sorted: a translation reordered to follow the source
  (what an interpreter's "salami" technique does), still never ahead of the audio.
  Reaching it needs a different word order than the single reference, which BLEU against
  that reference penalises.
- **anticipate a share p of the words by one chunk** — the alignment schedule with a random
  share p of the words (seeded, averaged over seeds) written one chunk earlier than
  heard (kept monotone): what guessing would buy.

It reads SFT's and the RL stages' measured LAAL from the RL table JSON
(`benchmarks.rl_table`, on as many test utterances as its rows) and reports the goal, 0.8 x SFT, in
these units. Prints a table and writes benchmarks/results/latency_bound.json.

  python -m benchmarks.latency_bound --run_dir=runs/tiny2
"""

from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from benchmarks import common
from data_pipelines import alignment
from liveinterp.eval import streaming_metrics as sm

_FLAGS = {}
SHARES = (0.25, 0.5, 0.75, 1.0)
SEEDS = 8


def _define_flags() -> dict:
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny2", "trained run (its config.json "
                                  "names the corpus)"),
      split=flags.DEFINE_string("split", "test", "corpus split"),
      n=flags.DEFINE_integer("max_examples", 0, "utterances (the evaluation's first n; 0: "
                             "as many as the RL table's rows were measured on)"),
      rl_table=flags.DEFINE_string("rl_table", "rl_table_recipe.json", "RL table JSON "
                                   "(benchmarks/results) with the stages' measured LAAL"),
      out=flags.DEFINE_string("out", "benchmarks/results/latency_bound.json", "JSON out"),
  )


def own_ready_ms(rec) -> np.ndarray:
  """Per target word, when its own aligned source words have all ended (ms), without
  waiting for earlier target words (`alignment.ready_times(monotone=False)`)."""
  return alignment.ready_times(rec["alignment"], len(rec["tgt_words"]),
                               rec["src_word_end_ms"], float(rec["tgt_ready_ms"][-1]),
                               monotone=False).astype(np.float64)


def policies(records, chunk_ms: float, sample_rate: int) -> dict[str, list[np.ndarray]]:
  """Per policy name, one delay list per record (module docstring)."""
  out = {"alignment": [], "source order": []}
  out.update({f"anticipate {p:.0%} by one chunk": [] for p in SHARES})
  for i, rec in enumerate(records):
    align = np.asarray(sm.oracle_delays(rec, "alignment", int(chunk_ms),
                                        sample_rate=sample_rate))
    out["alignment"].append(align)
    out["source order"].append(np.sort(sm.chunk_end_delays(rec, own_ready_ms(rec),
                                                           int(chunk_ms), sample_rate)))
    for p in SHARES:
      runs = []
      for seed in range(SEEDS):
        rng = np.random.default_rng([seed, i])
        early = rng.random(align.size) < p
        d = np.maximum(align - np.where(early, chunk_ms, 0.0), chunk_ms)
        runs.append(np.maximum.accumulate(d))
      out[f"anticipate {p:.0%} by one chunk"].append(runs)
  return out


def laal(delays_per_utt, timing) -> float:
  """SimulEval-exact corpus LAAL (`streaming_metrics.latency_scores`) of reference-length
  outputs with these delays, exactly as the evaluation scores its reference policies;
  `timing` = `streaming_metrics.record_timing(records, sample_rate)`."""
  return float(sm.latency_scores(delays_per_utt, *timing)["LAAL"])


def measure(records, chunk_ms: float, sample_rate: int) -> dict[str, float]:
  timing = sm.record_timing(records, sample_rate)
  out = {}
  for name, per_utt in policies(records, chunk_ms, sample_rate).items():
    if name.startswith("anticipate"):
      out[name] = float(np.mean([laal([runs[s] for runs in per_utt], timing)
                                 for s in range(SEEDS)]))
    else:
      out[name] = laal(per_utt, timing)
  return out


def main(argv):
  del argv
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  F = {k: v.value for k, v in _FLAGS.items()}
  cfg = config_lib.load(os.path.join(F["run_dir"], "config.json"), check=False)
  with open(os.path.join(common.RESULTS_DIR, F["rl_table"])) as f:
    table = json.load(f)
  n = F["n"] or int(table["rows"][0]["n"])
  if any(int(r["n"]) != n for r in table["rows"]):
    raise SystemExit(f"{F['rl_table']}: stages measured on {[r['n'] for r in table['rows']]}"
                     f" utterances, not all {n}: their LAAL would not compare")
  source = pipelines.open_corpus(cfg, F["split"])
  records = [source[i] for i in range(min(len(source), n))]
  chunk_ms, sr = float(cfg.stream.chunk_ms), int(cfg.audio.sample_rate)
  bounds = measure(records, chunk_ms, sr)
  measured = {r["stage"]: r["laal_text"] for r in table["rows"]}
  ref_row = [r["laal_text"] for r in table.get("references", [])
             if r["stage"] == "reference text, alignment policy" and int(r["n"]) == n]
  if ref_row and abs(ref_row[0] - bounds["alignment"]) > 0.5:
    raise SystemExit(f"alignment policy LAAL {bounds['alignment']:.1f} here but "
                     f"{ref_row[0]:.1f} in {F['rl_table']}: not the same utterances")
  sft = measured["sft"]
  rows = [{"system": f"measured: {k}", "LAAL_ms": v, "vs_sft_pct": 100 * (v / sft - 1)}
          for k, v in measured.items()]
  rows.append({"system": "goal (issue #13): 0.8 x SFT", "LAAL_ms": 0.8 * sft,
               "vs_sft_pct": -20.0})
  rows += [{"system": f"references: {k}", "LAAL_ms": v, "vs_sft_pct": 100 * (v / sft - 1)}
           for k, v in bounds.items()]
  common.print_table(rows, ["system", "LAAL_ms", "vs_sft_pct"])
  common.write_json(F["out"], {
      "benchmark": "latency_bound", "run_dir": F["run_dir"], "split": F["split"],
      "examples": len(records), "chunk_ms": chunk_ms, "rl_table": F["rl_table"],
      "rows": rows,
      "command": f"python -m benchmarks.latency_bound --run_dir={F['run_dir']}",
      "env": common.environment()})


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
