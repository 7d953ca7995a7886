"""SFT -> RL stage 1 -> RL stage 2 -> ablations on the test split: one table, one plot.

    python -m benchmarks.rl_table --run_dir=runs/tiny [--evaluate] [--stages=sft,rl1,rl2]

Every stage is evaluated the same way (`liveinterp.evaluate.run` with `stage=`, text
only unless `--speech`, no controls) into `RUN_DIR/eval_table_<stage>/`, SFT with its
offline ceiling; with `--evaluate` the missing reports are made first (and remade when
they are on other than the first `--max_examples` utterances or lack per-utterance
outputs, or SFT's its offline row). The scale rows (constant output, offline ceiling,
reference-text policies) come from SFT's report, so they are on the stages' utterances
(`scale_rows`). Against SFT each
stage gets its BLEU, chrF and LAAL change with 95% paired-bootstrap intervals over the
test utterances (`quality.paired_bootstrap`). Prints the table (BLEU, chrF,
ASR-BLEU, LAAL and FLAL of text and speech, speech backlog, text tokens and speech
seconds per turn), writes `benchmarks/results/rl_table.json` and the latency–quality plot
`benchmarks/results/rl_table_latency_quality.png` (each stage a point: LAAL vs BLEU; named
after `--out`).
"""

from __future__ import annotations

import json
import os

from absl import app, flags

from benchmarks import common
from liveinterp.eval.report import stage_report_subdir


def _define_flags() -> dict:
  """The CLI's flags, defined only when run as a script (importing this module, e.g. from
  a test, must not claim flag names such as --run_dir in absl's global registry)."""
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny", "recipe run directory"),
      stages=flags.DEFINE_list("stages", ["sft", "rl1", "rl2", "rl_time_only",
                                          "rl_time_only_increment", "rl_lag_only",
                                          "rl_one_stage", "rl_fixed_beta"],
                               "stages to tabulate (those without checkpoints are skipped)"),
      evaluate=flags.DEFINE_bool("evaluate", False,
                                 "evaluate stages that have no report yet"),
      speech=flags.DEFINE_bool("speech", False, "with --evaluate: decode speech too (codec, "
                               "ASR-BLEU, speech latency)"),
      n=flags.DEFINE_integer("max_examples", 64, "test utterances per stage"),
      notes=flags.DEFINE_string("notes", "", "how the stages were run, when not the "
                                "recipe's defaults (rendered under the table)"),
      out=flags.DEFINE_string("out", os.path.join(common.RESULTS_DIR, "rl_table.json"),
                              "JSON output"))


_FLAGS: dict = {}

COLUMNS = ("stage", "bleu", "chrf", "len_ratio", "asr_bleu", "laal_text", "flal_text",
           "laal_speech", "flal_speech", "backlog_ms", "text_tok_per_turn",
           "speech_s_per_turn", "kl_last", "kl_text_last", "beta_last", "dev_bleu_start",
           "dev_bleu", "dev_laal_start", "dev_laal", "n")
LAST_ITERATIONS = 5  # kl_last: the mean per-token KL of the stage's last iterations


def report_path(run_dir: str, stage: str, split: str = "test") -> str:
  """Where the table reads `stage`'s report: its `eval_table_<stage>/` report, else the
  stage's own evaluation when the run has one (`eval/` for sft, `eval_<stage>/`: the
  recipe's `evaluate` step, greedy text identical with or without speech decoding), so
  a stage is never evaluated twice; else the `eval_table_<stage>/` path to write."""
  table = os.path.join(run_dir, f"eval_table_{stage}", f"report_{split}.json")
  own = os.path.join(run_dir, stage_report_subdir(stage),
                     f"report_{split}.json")
  return own if not os.path.exists(table) and os.path.exists(own) else table


def read_metrics(stage_dir: str) -> list[dict]:
  """A stage's `metrics.jsonl` rows ([] when it has none)."""
  path = os.path.join(stage_dir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def training_stats(stage_dir: str) -> dict:
  """From an RL stage's own `metrics.jsonl`: the mean KL to the reference policy over
  its last LAST_ITERATIONS iterations and the final beta (the failure signature of a
  fixed beta: KL run away, or no KL because the policy cannot move); {} for SFT."""
  ms = read_metrics(stage_dir)
  if not ms:
    return {}
  kls = [m["rl/kl"] for m in ms if "rl/kl" in m][-LAST_ITERATIONS:]
  text = [m["rl/kl_text"] for m in ms if "rl/kl_text" in m][-LAST_ITERATIONS:]
  betas = [m["rl/beta"] for m in ms if "rl/beta" in m]
  out = {"kl_last": sum(kls) / len(kls) if kls else None,
         "kl_text_last": sum(text) / len(text) if text else None,
         "beta_last": betas[-1] if betas else None}
  # The stage's own dev scores of its starting policy and of itself (same episodes):
  # the RL stage's verdict on its own start, as the recipe's select_stage reads it.
  result = os.path.join(stage_dir, "result.json")
  if kls and os.path.exists(result):  # an RL stage (SFT's own eval is another set)
    with open(result) as f:
      r = json.load(f)
    for key, name in (("eval/simul_bleu", "dev_bleu"), ("eval/simul_chrf", "dev_chrf"),
                      ("eval/simul_laal", "dev_laal")):
      out[f"{name}_start"], out[name] = r.get(f"start/{key}"), r.get(key)
  return out


def row(stage: str, report: dict, stats: dict | None = None) -> dict:
  """One table row from an evaluation report (and the stage's `training_stats`)."""
  s = report["simul"]
  turns = s.get("turns", {})
  text, speech = s.get("text_latency", {}), s.get("speech_latency", {})
  stats = stats or {}
  return {"stage": stage, "bleu": s["bleu"], "chrf": s["chrf"],
          "len_ratio": s.get("length_ratio"), "asr_bleu": s.get("asr_bleu"),
          "laal_text": text.get("LAAL"), "flal_text": text.get("FLAL"),
          "laal_speech": speech.get("LAAL") if report.get("speech") else None,
          "flal_speech": speech.get("FLAL") if report.get("speech") else None,
          "backlog_ms": turns.get("speech_backlog_ms"),
          "text_tok_per_turn": turns.get("text_tokens_per_turn"),
          "speech_s_per_turn": turns.get("speech_s_per_turn"),
          "kl_last": stats.get("kl_last"), "kl_text_last": stats.get("kl_text_last"),
          "beta_last": stats.get("beta_last"),
          "dev_bleu_start": stats.get("dev_bleu_start"), "dev_bleu": stats.get("dev_bleu"),
          "dev_laal_start": stats.get("dev_laal_start"), "dev_laal": stats.get("dev_laal"),
          "n": report["examples"]}


def main_report_path(run_dir: str, split: str = "test") -> str | None:
  """The run's main evaluation report (the recipe's `evaluate` step evaluates the
  selected stage, RUN_DIR/selected_stage.json: `eval_<stage>/`, `eval/` for sft): that
  stage's when the run records one, else the first of `eval_rl2/`, `eval_rl1/`, `eval/`
  that exists."""
  subs = ["eval_rl2", "eval_rl1", "eval"]
  selected = os.path.join(run_dir, "selected_stage.json")
  if os.path.exists(selected):
    with open(selected) as f:
      stage = json.load(f).get("stage")
    subs.insert(0, stage_report_subdir(stage))
  for sub in subs:
    path = os.path.join(run_dir, sub, f"report_{split}.json")
    if os.path.exists(path):
      return path
  return None


def reference_rows(report: dict) -> list[dict]:
  """Rows that give the stages' numbers their scale, from the run's main evaluation
  report (`RUN_DIR/eval/report_test.json`, `liveinterp.evaluate --controls`): the
  constant-output baseline (the one training-target sentence that scores best on the
  test split, written at once: no latency), the offline ceiling (the SFT model given the
  whole source first through the streaming decoder) and the reference-text policies
  (the corpus's alignment policy and wait-3 written with the reference translation:
  their latency, at BLEU 100 by construction)."""
  rows = []
  blank = {c: None for c in COLUMNS}
  const = report.get("constant")
  if const:
    rows.append(dict(blank, stage="constant output", bleu=const["bleu"], chrf=const["chrf"],
                     n=report["examples"]))
  off = report.get("offline")
  if off:
    lat = off.get("text_latency", {})
    rows.append(dict(blank, stage="offline (sft, whole source)", bleu=off["bleu"],
                     chrf=off["chrf"], laal_text=lat.get("LAAL"), flal_text=lat.get("FLAL"),
                     n=report["examples"]))
  for name, pol in (report.get("policies") or {}).items():
    lat = pol.get("text_latency", {})
    rows.append(dict(blank, stage=f"reference text, {name} policy", bleu=pol.get("bleu"),
                     laal_text=lat.get("LAAL"), flal_text=lat.get("FLAL"),
                     n=report["examples"]))
  ceiling = report.get("asr_ceiling")
  if ceiling:  # the recogniser on the corpus's reference speech: ASR-BLEU's ceiling
    rec = report.get("simul", {}).get("asr_recognizer") or "the recogniser"
    rows.append(dict(blank, stage=f"reference speech, {rec.split(' (')[0]}",
                     asr_bleu=ceiling.get("asr_bleu"), n=report["examples"]))
  return rows


def policy_rows(run_dir: str, n: int, split: str = "test") -> list[dict]:
  """The reference-text policy rows (`reference_rows`) computed on the first `n`
  utterances of the run's split (`streaming_metrics.reference_policies`), for stage rows
  measured on other utterances than the main evaluation's; [] without the run's
  config.json."""
  path = os.path.join(run_dir, "config.json")
  if not os.path.exists(path):
    return []
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  from liveinterp.eval import streaming_metrics as sm  # pylint: disable=g-import-not-at-top
  cfg = config_lib.load(path, check=False)
  source = pipelines.open_corpus(cfg, split)
  records = [source[i] for i in range(min(len(source), n))]
  pol = sm.reference_policies(records, int(cfg.stream.chunk_ms), int(cfg.audio.sample_rate))
  return reference_rows({"policies": pol, "examples": len(records)})


def versus_sft(rows: list[dict], reports: dict | None = None) -> dict:
  """Each stage's LAAL change (%) and BLEU change against SFT (issue #13's goal: stage 2
  LAAL >= 20% lower at <= 1 BLEU loss). With the stages' `reports` holding per-utterance
  outputs of the same utterances (`simul.utterances`), also the chrF change and 95%
  paired-bootstrap intervals of the three changes (`paired_intervals`)."""
  base = next((r for r in rows if r["stage"] == "sft"), None)
  if base is None or not base["laal_text"]:
    return {}
  out = {}
  for r in rows:
    if r["stage"] == "sft" or not r["laal_text"]:
      continue
    out[r["stage"]] = {"laal_change_pct": 100.0 * (r["laal_text"] / base["laal_text"] - 1.0),
                       "bleu_change": r["bleu"] - base["bleu"]}
    if reports:
      out[r["stage"]].update(paired_intervals(reports.get(r["stage"]), reports.get("sft")))
  return out


def paired_intervals(report: dict | None, sft: dict | None) -> dict:
  """95% paired-bootstrap intervals (utterances resampled, `quality.paired_bootstrap`)
  of a stage's BLEU, chrF and LAAL (%) change against SFT on the same test utterances;
  {} when either report lacks per-utterance outputs or they are other utterances."""
  from liveinterp.eval import quality  # pylint: disable=g-import-not-at-top
  a = (report or {}).get("simul", {}).get("utterances")
  b = (sft or {}).get("simul", {}).get("utterances")
  if not a or not b or a["ids"] != b["ids"]:
    return {}
  lang = report.get("pair", "zh-en").split("-")[-1]
  q = quality.paired_bootstrap(a["hyps"], b["hyps"], b["refs"], lang)
  lat = quality.paired_bootstrap_ratio(a["laal"], b["laal"])
  return {"chrf_change": q["chrf"]["delta"],
          "bleu_change_ci95": [q["bleu"]["lo"], q["bleu"]["hi"]],
          "chrf_change_ci95": [q["chrf"]["lo"], q["chrf"]["hi"]],
          "laal_change_pct_ci95": [lat["lo"], lat["hi"]]}


def needs_evaluation(report: dict | None, n: int, stage: str = "",
                     speech: bool = False, judge: str = "") -> bool:
  """Whether `--evaluate` (re-)evaluates a stage: no report, one on other than the first
  `n` utterances, one without per-utterance outputs (made before they were kept), SFT's
  without its offline ceiling (the table's scale row on the same utterances), or, with
  `speech` (`--speech`), a text-only one (the main job's table leaves text-only reports;
  reusing them left the speech columns empty) or, when the run has an ASR judge
  (`judge`: its name, RUN_DIR/asr_judge, `models/asr_judge.py`), one scored by another
  recogniser (pocketsphinx ASR-BLEU is ~0 for every system here) or another judge."""
  if report is None:
    return True
  rec = str(report.get("simul", {}).get("asr_recognizer") or "")
  return (report.get("examples") != n or "utterances" not in report.get("simul", {})
          or (stage == "sft" and "offline" not in report)
          or (speech and not report.get("speech"))
          or bool(speech and judge and rec != judge))


def scale_rows(rows: list[dict], reports: dict, main_report: dict | None,
               run_dir: str) -> list[dict]:
  """The rows that give the stages their scale (`reference_rows`: constant output,
  offline ceiling, reference-text policies), on the stages' own utterances where they can
  be: from SFT's stage report when every stage row has its utterance count (the
  evaluation computes the constant output and policies on the records it streams, the
  offline ceiling when asked); otherwise the policies recomputed on that count
  (`policy_rows`) and the rest from the run's main evaluation (its count in column n)."""
  counts = {r["n"] for r in rows}
  n = counts.pop() if len(counts) == 1 else None
  main = reference_rows(main_report) if main_report else []
  sft = reports.get("sft")
  if n is not None and sft is not None and "constant" in sft:  # sft's row is among them
    own = reference_rows(sft)
    kinds = {r["stage"] for r in own}
    return own + [r for r in main if r["stage"] not in kinds]  # e.g. no offline in sft's
  remade = policy_rows(run_dir, n) if n is not None else []
  if remade:
    main = [r for r in main if not r["stage"].startswith("reference text,")] + remade
  return main


def plot_path(out_json: str) -> str:
  """The plot beside a table's JSON, named after it (`rl_table.json` ->
  `rl_table_latency_quality.png`): two tables never overwrite each other's plot."""
  return os.path.splitext(out_json)[0] + "_latency_quality.png"


def plot(rows: list[dict], path: str, references: list[dict] = (),
         versus: dict | None = None):
  """Left: every stage with the scale (constant output, offline ceiling, reference-text
  policies). Right: the stages close up, with SFT's LAAL, issue #13's goal (0.8 x SFT,
  at most 1 BLEU below SFT), the SFT data's own alignment-policy LAAL and, where `versus`
  (`versus_sft`) has them, each stage's 95% paired-bootstrap intervals of its BLEU and
  LAAL change as error bars around SFT's values."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2))
  timed = [r for r in rows if r["laal_text"] is not None and r["bleu"] is not None]
  base = next((r for r in timed if r["stage"] == "sft"), None)
  spans = []  # the error bars' ends, so the close-up shows them whole
  for i, r in enumerate(timed):
    v = (versus or {}).get(r["stage"], {})
    if base is not None and v.get("bleu_change_ci95") and v.get("laal_change_pct_ci95"):
      x = [base["laal_text"] * (1 + c / 100.0) for c in v["laal_change_pct_ci95"]]
      y = [base["bleu"] + c for c in v["bleu_change_ci95"]]
      spans.append((x, y))
      zoom.errorbar(r["laal_text"], r["bleu"], color=f"C{i % 10}", alpha=0.45, lw=1,
                    xerr=[[max(r["laal_text"] - x[0], 0)], [max(x[1] - r["laal_text"], 0)]],
                    yerr=[[max(r["bleu"] - y[0], 0)], [max(y[1] - r["bleu"], 0)]],
                    capsize=2, zorder=2)
  for a in (ax, zoom):
    for i, r in enumerate(timed):
      a.scatter(r["laal_text"], r["bleu"], color=f"C{i % 10}", zorder=3)
      a.annotate(r["stage"], (r["laal_text"], r["bleu"]), textcoords="offset points",
                 xytext=(4, 4 + 7 * (i % 2)), fontsize=7 if a is ax else 8)
  for r in references:  # grey: the scale (constant output has no latency: a line)
    if r["bleu"] is None:  # no text score (the recogniser's reference-speech ceiling)
      continue
    if r["laal_text"] is None:
      ax.axhline(r["bleu"], color="0.6", ls=":", lw=1)
      ax.annotate(r["stage"], (ax.get_xlim()[0], r["bleu"]), fontsize=7, color="0.4",
                  xytext=(2, 2), textcoords="offset points")
    else:
      ax.scatter(r["laal_text"], r["bleu"], color="0.6", marker="x")
      ax.annotate(r["stage"], (r["laal_text"], r["bleu"]), textcoords="offset points",
                  xytext=(4, -10 if "wait" in r["stage"] else -20), fontsize=7,
                  color="0.4")
  if base is not None:
    goal = 0.8 * base["laal_text"]
    zoom.axvline(base["laal_text"], color="0.5", lw=1, ls="--")
    zoom.axvline(goal, color="C3", lw=1, ls="--")
    zoom.axhline(base["bleu"] - 1.0, color="C3", lw=1, ls="--")
    zoom.fill_between([goal - 1e4, goal], base["bleu"] - 1.0, base["bleu"] + 1e3,
                      color="C3", alpha=0.08, label="goal: LAAL <= 0.8 x SFT, BLEU >= SFT - 1")
    for r in references:
      if r["stage"].endswith("alignment policy") and r["laal_text"] is not None:
        zoom.axvline(r["laal_text"], color="0.3", lw=1, ls=":",
                     label=f"SFT data's alignment policy ({r['laal_text']:.0f} ms, "
                     f"{r['n']} utt.)")
    lo = min([goal] + [r["laal_text"] for r in timed] + [x[0] for x, _ in spans]) - 40
    hi = max([r["laal_text"] for r in timed] + [x[1] for x, _ in spans]) + 60
    blo = min([r["bleu"] for r in timed] + [base["bleu"] - 1] + [y[0] for _, y in spans]) - 2
    bhi = max([r["bleu"] for r in timed] + [y[1] for _, y in spans]) + 3
    zoom.set_xlim(lo, hi)
    zoom.set_ylim(blo, bhi)
    zoom.legend(fontsize=7, loc="lower left")
  for a, title in ((ax, "latency-quality: stages and references"),
                   (zoom, "the RL stages close up")):
    a.set_xlabel("LAAL, text (ms of source)")
    a.set_ylabel("BLEU (test)")
    a.set_title(title, fontsize=10)
    a.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  F = {k: v.value for k, v in _FLAGS.items()}
  run_dir = os.path.abspath(F["run_dir"])
  rows, reports = [], {}
  judge = _judge_name(run_dir)
  for stage in F["stages"]:
    path = report_path(run_dir, stage)
    report = None
    if os.path.exists(path):
      with open(path) as f:
        report = json.load(f)
    # only a stage that finished training: result.json is written at its end (a stage
    # still training has checkpoints already; liveinterp.recipe defines flags of its own)
    if F["evaluate"] and needs_evaluation(report, F["n"], stage, F["speech"], judge) and \
        os.path.exists(os.path.join(run_dir, stage, "result.json")):
      _evaluate(run_dir, stage, F["n"], F["speech"])
      path = report_path(run_dir, stage)  # eval_table_<stage>/ now exists
      with open(path) as f:
        report = json.load(f)
    if report is None:
      print(f"[rl_table] {stage}: no report at {path}, skipped")
      continue
    reports[stage] = report
    rows.append(row(stage, report, training_stats(os.path.join(run_dir, stage))))
  if not rows:
    raise SystemExit(f"no evaluation reports under {run_dir}")
  main_path = main_report_path(run_dir)
  main_report = None
  if main_path:
    with open(main_path) as f:
      main_report = json.load(f)
  references = scale_rows(rows, reports, main_report, run_dir)
  if not references:
    print(f"[rl_table] no SFT stage report and no main evaluation report under {run_dir}:"
          " no constant-output, offline or reference-policy rows")
  common.print_table(rows + references, COLUMNS)
  max_flag = f" --max_examples={F['n']}" if F["n"] != 64 else ""
  payload = {"run_dir": run_dir, "rows": rows, "references": references,
             "versus_sft": versus_sft(rows, reports),
             "command": (f"python -m benchmarks.rl_table --run_dir={F['run_dir']} "
                         f"--stages={','.join(F['stages'])}"
                         f"{' --evaluate' if F['evaluate'] else ''}"
                         f"{' --speech' if F['speech'] else ''}"
                         f"{max_flag}")}
  recs = sorted({str(r["simul"]["asr_recognizer"]) for r in reports.values()
                 if r.get("simul", {}).get("asr_recognizer")})
  if recs:
    payload["asr_recognizer"] = ", ".join(recs)
  codec = (reports.get("sft") or {}).get("codec") or {}
  if codec.get("asr_bleu_resynthesized") is not None:  # the codec's share of ASR-BLEU
    payload["codec_resynthesis"] = {k: codec.get(k) for k in (
        "items", "mel_l1", "asr_bleu_original", "asr_bleu_resynthesized",
        "asr_chrf_original", "asr_chrf_resynthesized", "recognizer")}
  if F["notes"]:
    payload["notes"] = F["notes"]
  common.write_json(F["out"], payload)
  plot(rows, plot_path(F["out"]), references, payload["versus_sft"])
  print(f"[rl_table] wrote {F['out']}")


def _judge_name(run_dir: str) -> str:
  """The name of the run's trained ASR judge for its target language (English here: the
  corpus builds are zh->en), "" when it has none."""
  from liveinterp.models import asr_judge  # pylint: disable=g-import-not-at-top
  judge_dir = os.path.join(run_dir, asr_judge.STAGE)
  return asr_judge.describe(judge_dir) if asr_judge.trained_for(judge_dir, "en") else ""


def run_recipe(run_dir: str) -> str:
  """The recipe (config name: tiny, small, ...) a run was trained with, read from its SFT
  stage's saved config (every stage writes config.json); "tiny" when there is none."""
  path = os.path.join(run_dir, "sft", "config.json")
  if not os.path.exists(path):
    return "tiny"
  with open(path) as f:
    return json.load(f).get("name", "tiny")


def _evaluate(run_dir: str, stage: str, n: int, speech: bool):
  from data_pipelines import build  # pylint: disable=g-import-not-at-top
  from liveinterp import evaluate  # pylint: disable=g-import-not-at-top
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  from liveinterp.train.stage_configs import stage_config  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(os.path.dirname(run_dir), "data")
  recipe = run_recipe(run_dir)
  base = config_lib.load(f"{recipe}:pretrain")
  tok = build.tokenizer_prefix_for(data_dir, base)
  cfg = stage_config(recipe, "sft", run_dir, data_dir, tok)
  # No two-speaker talks: the table has no voice columns (they are the main evaluation's).
  evaluate.run(cfg, run_dir, "test", n, speech=speech, offline=stage == "sft",
               stage=stage, out_subdir=f"eval_table_{stage}", multi_speaker_talks=0)


if __name__ == "__main__":
  _FLAGS.update(_define_flags())
  app.run(main)
