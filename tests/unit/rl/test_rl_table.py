"""benchmarks/rl_table.py: a stage's evaluation report becomes its table row, the change
against SFT is computed, and the README renders the JSON (never typed)."""

import json

import numpy as np

from benchmarks import render_readme, rl_table


def _report(bleu, laal, speech=False):
  return {"examples": 64, "speech": speech,
          "simul": {"bleu": bleu, "chrf": 50.0, "asr_bleu": None, "length_ratio": 0.9,
                    "text_latency": {"LAAL": laal, "FLAL": 800.0},
                    "speech_latency": {"LAAL": 2000.0, "FLAL": 900.0},
                    "turns": {"speech_backlog_ms": 1500.0, "text_tokens_per_turn": 1.3,
                              "speech_s_per_turn": 1.0}}}


def test_main_report_is_the_latest_stage_evaluated(tmp_path):
  assert rl_table.main_report_path(str(tmp_path)) is None
  for sub in ("eval", "eval_rl1"):
    (tmp_path / sub).mkdir()
    (tmp_path / sub / "report_test.json").write_text("{}")
  assert rl_table.main_report_path(str(tmp_path)) == str(tmp_path / "eval_rl1" /
                                                          "report_test.json")
  # The recipe selected sft (recipe.select_stage): its report is the main one.
  (tmp_path / "selected_stage.json").write_text(json.dumps({"stage": "sft"}))
  assert rl_table.main_report_path(str(tmp_path)) == str(tmp_path / "eval" /
                                                          "report_test.json")


def test_a_stage_evaluated_by_the_recipe_is_not_evaluated_again(tmp_path):
  table = tmp_path / "eval_table_rl2" / "report_test.json"
  assert rl_table.report_path(str(tmp_path), "rl2") == str(table)
  (tmp_path / "eval_rl2").mkdir()
  (tmp_path / "eval_rl2" / "report_test.json").write_text("{}")
  assert rl_table.report_path(str(tmp_path), "rl2") == str(tmp_path / "eval_rl2" /
                                                          "report_test.json")
  table.parent.mkdir()
  table.write_text("{}")
  assert rl_table.report_path(str(tmp_path), "rl2") == str(table)
  assert rl_table.report_path(str(tmp_path), "sft").endswith("eval_table_sft/report_test.json")


def test_rows_versus_sft_and_rendering(tmp_path, monkeypatch):
  rows = [rl_table.row("sft", _report(30.0, 1000.0)),
          rl_table.row("rl2", _report(29.5, 750.0), {"kl_last": 0.02, "beta_last": 0.1})]
  assert rows[0]["kl_last"] is None and rows[1]["beta_last"] == 0.1
  assert rows[0]["laal_speech"] is None          # text-only report: no speech latency
  assert rl_table.row("x", _report(1.0, 1.0, speech=True))["laal_speech"] == 2000.0
  vs = rl_table.versus_sft(rows)
  assert vs == {"rl2": {"laal_change_pct": -25.0, "bleu_change": -0.5}}
  main = dict(_report(31.0, 1100.0), constant={"bleu": 1.0, "chrf": 18.0},
              offline={"bleu": 16.5, "chrf": 35.5, "text_latency": {"LAAL": 3272.0,
                                                                   "FLAL": 2992.0}},
              policies={"wait-3": {"bleu": 100.0, "text_latency": {"LAAL": 1550.0,
                                                                   "FLAL": 1749.0}}})
  refs = rl_table.reference_rows(main)
  assert [r["stage"] for r in refs] == ["constant output", "offline (sft, whole source)",
                                       "reference text, wait-3 policy"]
  assert refs[0]["laal_text"] is None and refs[1]["laal_text"] == 3272.0
  # a speech report adds the recogniser's ceiling: the reference speech it transcribes
  judged = dict(main, asr_ceiling={"asr_bleu": 61.5, "asr_chrf": 80.0},
                simul=dict(main["simul"], asr_recognizer="ctc-judge (tiny/asr_judge, step 9)"))
  ceil = rl_table.reference_rows(judged)[-1]
  assert ceil["stage"] == "reference speech, ctc-judge" and ceil["asr_bleu"] == 61.5
  assert ceil["bleu"] is None
  with open(tmp_path / "rl_table.json", "w") as f:
    json.dump({"rows": rows, "references": refs, "versus_sft": vs,
               "command": "python -m benchmarks.rl_table", "notes": "rl2: 20 iterations",
               "asr_recognizer": "ctc-judge (tiny/asr_judge, step 9)",
               "codec_resynthesis": {"items": 16, "mel_l1": 4.5, "asr_bleu_original": 91.6,
                                     "asr_bleu_resynthesized": 0.4, "asr_chrf_original": 97.0,
                                     "asr_chrf_resynthesized": 15.5,
                                     "recognizer": "ctc-judge"}}, f)
  monkeypatch.setattr(render_readme, "RESULTS", str(tmp_path))
  text = render_readme.render()
  assert "### rl_table (`python -m benchmarks.rl_table`)" in text
  assert "| rl2 | 29.5 | 50 | 0.9 | — | 750 |" in text
  assert "- rl2: LAAL -25.0% vs SFT, BLEU -0.50" in text
  assert "| *constant output* | 1 | 18 | — | — | — |" in text
  assert "\nrl2: 20 iterations" in text
  assert "ASR-BLEU: the played speech transcribed by ctc-judge (tiny/asr_judge, step 9)" in text
  assert "recognised at ASR-BLEU 0.4 / chrF 15.5, the same utterances unprocessed at 91.6" in text
  assert "| *offline (sft, whole source)* | 16.5 | 35.5 | — | — | 3272 |" in text


def test_training_stats_of_a_stage(tmp_path):
  """kl_last: the mean KL of the last iterations; beta_last: the final beta; none for a
  stage without RL metrics (SFT)."""
  assert rl_table.training_stats(str(tmp_path)) == {}
  with open(tmp_path / "metrics.jsonl", "w") as f:
    for i in range(8):
      f.write(json.dumps({"step": i + 1, "rl/kl": float(i), "rl/beta": 0.05 * (i + 1)}) + "\n")
  stats = rl_table.training_stats(str(tmp_path))
  assert stats["kl_last"] == sum(range(3, 8)) / 5 and abs(stats["beta_last"] - 0.4) < 1e-12
  assert stats["kl_text_last"] is None and "dev_bleu" not in stats  # older metrics
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 9, "rl/kl": 1.0, "rl/kl_text": 3.0, "rl/beta": 0.5}) + "\n")
  with open(tmp_path / "result.json", "w") as f:
    json.dump({"start/eval/simul_bleu": 40.0, "eval/simul_bleu": 32.0,
               "start/eval/simul_laal": 1216.0, "eval/simul_laal": 1104.0}, f)
  stats = rl_table.training_stats(str(tmp_path))
  assert stats["kl_text_last"] == 3.0
  assert (stats["dev_bleu_start"], stats["dev_bleu"]) == (40.0, 32.0)
  assert (stats["dev_laal_start"], stats["dev_laal"]) == (1216.0, 1104.0)
  row = rl_table.row("rl1", _report(30.0, 800.0), stats)
  assert row["dev_bleu"] == 32.0 and row["kl_text_last"] == 3.0


def test_rl_credit_renders_one_row_per_credit_and_value_head():
  classes = {c: {"mean_adv": v} for c, v in (("continue", -0.1), ("stop", -0.8),
                                               ("wait_eot", -0.2), ("text", 0.9))}
  res = {"classes": classes, "stop_push": {"total": 7.5}}
  data = {"command": "python -m benchmarks.rl_credit", "turns": 48, "warmup": 0,
          "speech_s_per_turn": 0.39,
          "results": {"backlog": {"untrained": res, "zero": res},
                      "speech": {"untrained": res}}}
  text = render_readme.render_rl_credit(data)
  rows = [l for l in text.splitlines() if l.startswith("| ")][1:]
  assert [r.split(" | ")[:2] for r in rows] == [
      ["| backlog", "SFT head"], ["| backlog", "V=0"], ["| speech", "SFT head"]]
  assert "| -0.8 |" in rows[0] and rows[0].endswith("| 7.5 |")


def test_rl_probes_rows_from_the_stages_own_records(tmp_path):
  """benchmarks/rl_probes: the settings a variant changes against the baseline, its own
  start/final dev scores, and the first-to-last-third trend of its sampled rewards."""
  from benchmarks import rl_probes
  base = {"rl": {"advantage": "gae", "temperature": 1.0}, "train": {"learning_rate": 5e-5,
                                                                     "batch_size": 8}}
  var = {"rl": {"advantage": "group", "temperature": 1.0, "group_size": 4},
         "train": {"learning_rate": 5e-5, "batch_size": 16}}
  assert rl_probes.changes(base, base) == "—"
  assert rl_probes.changes(var, base) == "batch=16, advantage=group, group_size=4"
  assert rl_probes.trend([{"r": x} for x in (1.0, 2.0, 3.0, 4.0, 5.0, 9.0)], "r") == 5.5
  assert rl_probes.trend([{"r": 1.0}], "r") is None
  d = tmp_path / "rl1_x"
  d.mkdir()
  assert rl_probes.probe_row(str(tmp_path), "rl1_x", base) is None  # not finished
  (d / "config.json").write_text(json.dumps(var))
  (d / "result.json").write_text(json.dumps({
      "step": 3, "start/eval/simul_bleu": 40.0, "eval/simul_bleu": 35.0,
      "start/eval/simul_chrf": 62.0, "eval/simul_chrf": 58.0}))
  (d / "metrics.jsonl").write_text("".join(
      json.dumps({"step": i, "reward/total": float(i), "reward/seq": 0.5 - 0.1 * i,
                  "rl/kl": 0.01, "rl/beta": 0.05}) + "\n" for i in range(1, 4)))
  row = rl_probes.probe_row(str(tmp_path), "rl1_x", base)
  assert row["changes"].startswith("batch=16") and row["iterations"] == 3
  assert (row["dev_bleu_start"], row["dev_bleu"], row["dev_chrf"]) == (40.0, 35.0, 58.0)
  assert row["reward_trend"] == 2.0 and abs(row["seq_trend"] + 0.2) < 1e-12
  from benchmarks import render_readme
  text = render_readme.render_rl_probes({"rows": [row], "command": "python -m x"})
  assert text.startswith("### rl_probes (`python -m x`)") and "| rl1_x |" in text
  assert "| 40 | 35 | 58 |" in text.replace(".0 ", " ")


def test_each_table_writes_its_own_plot(tmp_path):
  """Two tables (e.g. rl_table.json and rl_table_recipe.json) each get the plot named
  after their JSON; they wrote the same rl_latency_quality.png before."""
  import os
  import subprocess
  import sys
  assert rl_table.plot_path("/r/rl_table_recipe.json") == \
      "/r/rl_table_recipe_latency_quality.png"
  run = tmp_path / "run"
  for stage, (bleu, laal) in {"sft": (30.0, 1200.0), "rl2": (29.5, 1100.0)}.items():
    (run / f"eval_table_{stage}").mkdir(parents=True)
    (run / f"eval_table_{stage}" / "report_test.json").write_text(
        json.dumps(_report(bleu, laal)))
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__)))))
  for name in ("a.json", "b.json"):
    subprocess.run([sys.executable, "-m", "benchmarks.rl_table", f"--run_dir={run}",
                    "--stages=sft,rl2", f"--out={tmp_path / name}"], cwd=root, check=True,
                   capture_output=True, env=dict(os.environ, PYTHONPATH=root))
  assert (tmp_path / "a_latency_quality.png").stat().st_size > 1000
  assert (tmp_path / "b_latency_quality.png").stat().st_size > 1000
  got = json.loads((tmp_path / "b.json").read_text())["versus_sft"]["rl2"]
  assert abs(got["laal_change_pct"] + 100 / 12) < 1e-9 and got["bleu_change"] == -0.5


def test_changes_against_sft_get_paired_intervals(tmp_path):
  """With per-utterance outputs of the same utterances, each stage's change against SFT
  gets 95% paired-bootstrap intervals; other utterances (or none kept): no intervals."""
  refs = [f"we meet at {w} today ." for w in "one two three four five six seven eight".split()]

  def rep(hyps, laal, ids=None):
    r = _report(30.0, float(np.mean(laal)))
    r["pair"] = "zh-en"
    r["simul"]["utterances"] = {"ids": ids or [str(i) for i in range(8)], "hyps": hyps,
                                "refs": refs, "laal": list(laal)}
    return r
  sft = rep(refs, [1000.0] * 8)
  worse = rep(["we meet today ."] * 8, [900.0, 800.0] * 4)
  rows = [rl_table.row("sft", sft), rl_table.row("rl2", worse), rl_table.row("x", worse)]
  reports = {"sft": sft, "rl2": worse, "x": rep(refs, [900.0] * 8, ids=list("abcdefgh"))}
  v = rl_table.versus_sft(rows, reports)
  lo, hi = v["rl2"]["laal_change_pct_ci95"]
  assert lo <= -15.0 <= hi and -20.0 <= lo and hi <= -10.0
  assert v["rl2"]["bleu_change_ci95"][1] < 0 and v["rl2"]["chrf_change"] < 0
  assert "bleu_change_ci95" not in v["x"]  # other utterances: not paired
  text = render_readme.render_rl_table({"rows": rows, "versus_sft": v})
  assert "- rl2: LAAL -15.0% [" in text and "paired-bootstrap" in text
  rl_table.plot(rows, str(tmp_path / "p.png"), [], v)  # with the intervals' error bars
  # scale rows without a text score (the recogniser's reference-speech ceiling) are skipped
  ceiling = dict({c: None for c in rl_table.COLUMNS}, stage="reference speech, ctc-judge",
                 asr_bleu=94.6, n=8)
  rl_table.plot(rows, str(tmp_path / "q.png"), [ceiling], v)
  assert (tmp_path / "p.png").stat().st_size > 1000
  # --evaluate remakes reports on other utterance counts or without per-utterance outputs
  assert rl_table.needs_evaluation(None, 64)
  assert not rl_table.needs_evaluation(sft, 64 if sft["examples"] == 64 else 0)
  assert rl_table.needs_evaluation(sft, 150)
  assert rl_table.needs_evaluation(_report(30.0, 1000.0), 64)
  # --speech remakes a text-only report (as the main job's table leaves them), not a
  # report that decoded speech
  n = sft["examples"]
  assert rl_table.needs_evaluation(dict(sft, speech=False), n, "rl2", speech=True)
  assert not rl_table.needs_evaluation(dict(sft, speech=False), n, "rl2")
  assert not rl_table.needs_evaluation(dict(sft, speech=True), n, "rl2", speech=True)
  # a run with an ASR judge remakes speech reports another recogniser scored
  sphinx = dict(sft, speech=True, simul=dict(sft["simul"], asr_recognizer="pocketsphinx-en"))
  judged = dict(sft, speech=True,
                simul=dict(sft["simul"], asr_recognizer="ctc-judge (tiny/asr_judge, step 400)"))
  name = "ctc-judge (tiny/asr_judge, step 400)"
  assert rl_table.needs_evaluation(sphinx, n, "rl2", speech=True, judge=name)
  assert not rl_table.needs_evaluation(sphinx, n, "rl2", speech=True)
  assert not rl_table.needs_evaluation(judged, n, "rl2", speech=True, judge=name)
  assert rl_table.needs_evaluation(judged, n, "rl2", speech=True,
                                   judge="ctc-judge (tiny/asr_judge, step 400, 9 codec twins)")


def test_scale_rows_are_on_the_stages_utterances(tmp_path):
  """Constant output, offline ceiling and reference policies come from SFT's stage report
  when it is on the stages' utterance count (150 here), not from the main evaluation's
  64; what SFT's report lacks (offline) falls back to the main report's row."""
  def with_scale(rep, n, const_bleu, offline_bleu=None):
    rep = dict(rep, examples=n, constant={"bleu": const_bleu, "chrf": 20.0},
               policies={"alignment": {"bleu": 100.0, "text_latency": {"LAAL": 1100.0}}})
    if offline_bleu is not None:
      rep["offline"] = {"bleu": offline_bleu, "chrf": 60.0, "text_latency": {"LAAL": 3000.0}}
    return rep
  main = with_scale(_report(31.0, 1200.0), 64, 2.0, offline_bleu=40.0)
  sft = with_scale(_report(30.0, 1200.0), 150, 3.0, offline_bleu=42.0)
  rl2 = dict(_report(29.0, 1100.0), examples=150)
  rows = [rl_table.row("sft", sft), rl_table.row("rl2", rl2)]
  got = {r["stage"]: r for r in rl_table.scale_rows(rows, {"sft": sft, "rl2": rl2}, main,
                                                    str(tmp_path))}
  assert got["constant output"]["bleu"] == 3.0 and got["constant output"]["n"] == 150
  assert got["offline (sft, whole source)"]["bleu"] == 42.0
  assert got["reference text, alignment policy"]["n"] == 150
  # SFT's report without the offline row: that one row from the main report, n = 64
  del sft["offline"]
  got = {r["stage"]: r for r in rl_table.scale_rows(rows, {"sft": sft, "rl2": rl2}, main,
                                                    str(tmp_path))}
  assert got["constant output"]["n"] == 150
  assert got["offline (sft, whole source)"]["bleu"] == 40.0
  assert got["offline (sft, whole source)"]["n"] == 64
  # stage rows on other counts: the main report's rows (no config.json to recompute)
  rows[1]["n"] = 64
  got = {r["stage"]: r for r in rl_table.scale_rows(rows, {"sft": sft, "rl2": rl2}, main,
                                                    str(tmp_path))}
  assert got["constant output"]["bleu"] == 2.0 and got["constant output"]["n"] == 64
  assert rl_table.scale_rows(rows, {}, None, str(tmp_path)) == []
  # --evaluate remakes SFT's report when it lacks the offline ceiling
  sft["simul"]["utterances"] = {"ids": []}
  assert rl_table.needs_evaluation(sft, 150, "sft")
  assert not rl_table.needs_evaluation(sft, 150, "rl2")


def test_evaluation_config_follows_the_runs_recipe(tmp_path):
  """`--evaluate` rebuilds the stage config of the run's own recipe (the name in the SFT
  stage's saved config.json, as the recipe writes it), not always tiny's."""
  from configs import micro
  from liveinterp.common import config as config_lib
  assert rl_table.run_recipe(str(tmp_path)) == "tiny"  # no saved config: the default
  (tmp_path / "sft").mkdir()
  config_lib.save(micro.get_config("sft"), str(tmp_path / "sft" / "config.json"))
  assert rl_table.run_recipe(str(tmp_path)) == "micro"
