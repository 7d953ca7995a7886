"""The evaluation report: markdown (`markdown`) and the published results JSON the
README table is rendered from (`publish_payload`, `publish`), both from the report dict
`liveinterp.evaluate.run` builds. Pure formatting: no model, no decoding."""

from __future__ import annotations

import json
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _fmt(v):
  return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def model_name(report) -> str:
  """What the model's rows are called: the evaluated stage ("SFT" for sft)."""
  stage = report.get("stage", "sft")
  return "SFT" if stage == "sft" else stage


def markdown(r) -> str:
  s, o = r["simul"], r.get("offline")
  name = model_name(r)
  lines = [f"# Evaluation: {r['pair']} {r['split']} ({r['examples']} utterances, "
           f"{r['chunk_ms']} ms chunks)", "",
           "| system | BLEU | chrF | ASR-BLEU | LAAL | AL | FLAL | StartOffset | EndOffset |",
           "|---|---|---|---|---|---|---|---|---|"]
  tl = s["text_latency"]
  lines.append(f"| {name}, streaming (text) | {_fmt(s['bleu'])} | {_fmt(s['chrf'])} | | "
               f"{_fmt(tl.get('LAAL'))} | {_fmt(tl.get('AL'))} | "
               f"{_fmt(tl.get('FLAL'))} | {_fmt(tl.get('StartOffset'))} | "
               f"{_fmt(tl.get('EndOffset'))} |")
  sl = s["speech_latency"]
  if r.get("speech", True):
    lines.append(f"| {name}, streaming (speech played) | | | {_fmt(s.get('asr_bleu'))} | "
                 f"{_fmt(sl.get('LAAL'))} | "
                 f"{_fmt(sl.get('AL'))} | {_fmt(sl.get('FLAL'))} | "
                 f"{_fmt(sl.get('StartOffset'))} | {_fmt(sl.get('EndOffset'))} |")
  ca = s["text_latency_ca"]
  lines.append(f"| {name}, computation-aware (text) | | | | {_fmt(ca.get('LAAL'))} | "
               f"{_fmt(ca.get('AL'))} | {_fmt(ca.get('FLAL'))} | | |")
  if r.get("asr_ceiling"):
    lines.append(f"| reference speech (recogniser ceiling) | | | "
                 f"{_fmt(r['asr_ceiling']['asr_bleu'])} | | | | | |")
  if o is not None:
    ol = o["text_latency"]
    lines.append(f"| same model, whole source first (offline) | {_fmt(o['bleu'])} | {_fmt(o['chrf'])} "
                 f"| | {_fmt(ol.get('LAAL'))} | {_fmt(ol.get('AL'))} | | | |")
  if r.get("constant"):
    k = r["constant"]
    lines.append(f"| constant output (floor: best of {k['candidates']} training targets) | "
                 f"{_fmt(k['bleu'])} | {_fmt(k['chrf'])} | | | | | | |")
  for n, v in r.get("controls", {}).items():
    lines.append(f"| control: {n.replace('_', ' ')} | {_fmt(v['bleu'])} | {_fmt(v['chrf'])} "
                 f"| | | | | | |")
  for n, v in r["policies"].items():
    pl = v["text_latency"]
    lines.append(f"| reference targets, {n} policy | 100 | | | {_fmt(pl.get('LAAL'))} | "
                 f"{_fmt(pl.get('AL'))} | {_fmt(pl.get('FLAL'))} | | |")
  lines += ["", f"Real-time factor of the streaming decoder: {_fmt(s['rtf'])}; "
            f"utterances with no text output: {s['empty_outputs']}.", ""]
  c = r.get("codec", {})
  if c.get("mel_l1") is not None:
    lines.append(f"Codec resynthesis ({c['items']} target utterances, voice from the source "
                 f"utterance): log-mel L1 {_fmt(c['mel_l1'])}; "
                 f"{c.get('recognizer') or 'pocketsphinx-en'} chrF original "
                 f"{_fmt(c.get('asr_chrf_original'))} vs resynthesized "
                 f"{_fmt(c.get('asr_chrf_resynthesized'))} (BLEU "
                 f"{_fmt(c.get('asr_bleu_original'))} vs "
                 f"{_fmt(c.get('asr_bleu_resynthesized'))}).")
  v = r.get("voice", {})
  if "margin" in v:
    lines.append(f"Voice (independent MFCC embedding): same-speaker cosine "
                 f"{_fmt(v['same_speaker_cos'])}, other speakers {_fmt(v['other_speaker_cos'])}, "
                 f"margin {_fmt(v['margin'])}, top-1 speaker {_fmt(v['top1_rate'])} "
                 f"(n={v.get('n')}, skipped {v.get('skipped')}).")
  vc = v.get("control") or {}
  if "margin" in vc:
    q = vc.get("margin_quantiles", {})
    lines.append(f"Voice-lost control (same speech, another speaker's embedding): own "
                 f"speaker cosine {_fmt(vc['own_speaker_cos'])} vs control "
                 f"{_fmt(vc['control_cos'])}, margin {_fmt(vc['margin'])} (median "
                 f"{_fmt(q.get('median'))}, p25–p75 {_fmt(q.get('p25'))}–"
                 f"{_fmt(q.get('p75'))}, positive {_fmt(vc.get('positive_rate'))}; "
                 f"n={vc.get('n')}, skipped {vc.get('skipped')}; codes: "
                 f"{v.get('control_codes')}; resynthesised own voice margin "
                 f"{_fmt((v.get('control_resynth') or {}).get('margin'))}).")
  vm = r.get("voice_multi") or {}
  if "accuracy" in vm:
    lines.append(f"Voice in two-speaker talks ({vm['talks']} talks): segment closer to the "
                 f"speaker it translates {_fmt(vm['accuracy'])} of the time, margin "
                 f"{_fmt(vm['margin'])} (n={vm['n']} scored, {vm['skipped']} too short, "
                 f"{vm.get('ambiguous')} of {vm.get('raw_segments')} segments within "
                 f"{_fmt(vm.get('guard_ms'))} ms of a speaker change).")
  if s.get("asr_note"):
    lines.append(f"ASR-BLEU: {s['asr_note']}")
  lines += ["", "Examples:", ""]
  for e in r["examples_text"]:
    lines.append(f"- ref: {e['ref']}\n  - simul: {e['simul']}\n  - offline: {e['offline']}")
  return "\n".join(lines) + "\n"


def stage_report_subdir(stage: str) -> str:
  """The run-directory subfolder of a stage's own evaluation (`liveinterp.evaluate`):
  `eval` for sft, `eval_<stage>` otherwise."""
  return "eval" if stage == "sft" else f"eval_{stage}"


# Layout of benchmarks/results/evaluation.json: 2 = each quality metric on the row of the
# output it measures (text BLEU/chrF on the text row, ASR-BLEU on the speech row, ASR
# normalised); files without "layout" had ASR-BLEU on the text row and the text BLEU
# repeated on the speech row (benchmarks/render_readme.py corrects them when rendering).
PUBLISH_LAYOUT = 2


def publish_payload(report) -> dict:
  """The results JSON the README table is rendered from (`publish` writes it)."""
  s = report["simul"]
  row = lambda name, q, lat, asr=None: {  # noqa: E731
      "system": name, "BLEU": q["bleu"] if q else None, "chrF": q["chrf"] if q else None,
      "ASR-BLEU": asr, "LAAL_ms": lat.get("LAAL"), "AL_ms": lat.get("AL"),
      "FLAL_ms": lat.get("FLAL")}
  stage = report.get("stage", "sft")
  name = model_name(report)  # the evaluated stage names the model's rows
  rows = [row(f"{name} streaming, text", s, s["text_latency"])]
  if report.get("speech", True):  # text BLEU does not measure the speech: ASR-BLEU does
    rows.append(row(f"{name} streaming, speech played", None, s["speech_latency"],
                    s.get("asr_bleu")))
  if report.get("asr_ceiling"):
    rows.append({"system": "reference speech (recogniser ceiling)", "BLEU": None,
                 "chrF": None, "ASR-BLEU": report["asr_ceiling"]["asr_bleu"],
                 "LAAL_ms": None, "AL_ms": None, "FLAL_ms": None})
  if "offline" in report:
    rows.append(row("same model offline", report["offline"],
                    report["offline"]["text_latency"]))
  if "constant" in report:
    rows.append({"system": "constant output (floor)", "BLEU": report["constant"]["bleu"],
                 "chrF": report["constant"]["chrf"], "ASR-BLEU": None, "LAAL_ms": None,
                 "AL_ms": None, "FLAL_ms": None})
  for n, v in report.get("controls", {}).items():
    rows.append({"system": f"control: {n.replace('_', ' ')}", "BLEU": v["bleu"],
                 "chrF": v["chrf"], "ASR-BLEU": None, "LAAL_ms": None, "AL_ms": None,
                 "FLAL_ms": None})
  v = report.get("voice", {})
  c = report.get("codec", {})
  run = report.get("run_dir", "runs/tiny")
  run = os.path.relpath(run, ROOT) if os.path.isabs(run) else run
  flags_used = " --controls" if report.get("controls") else ""
  if stage != "sft":
    flags_used = f" --stage={stage}" + flags_used
  payload = {"command": f"python -m liveinterp.evaluate --run_dir={run}{flags_used} --publish",
             "pair": report["pair"], "split": report["split"], "examples": report["examples"],
             "rtf": s["rtf"], "speaker_margin": v.get("margin"),
             "speaker_top1": v.get("top1_rate"),
             "speaker_control_margin": (v.get("control") or {}).get("margin"),
             "voice_multi_accuracy": (report.get("voice_multi") or {}).get("accuracy"),
             "codec_mel_l1": c.get("mel_l1"),
             "codec_asr_chrf_original": c.get("asr_chrf_original"),
             "codec_asr_chrf_resynthesized": c.get("asr_chrf_resynthesized"),
             "layout": PUBLISH_LAYOUT, "asr_recognizer": s.get("asr_recognizer"),
             "asr_note": s.get("asr_note"), "rows": rows}
  return payload


def publish(report, out_dir: str, split: str):
  """Writes benchmarks/results/evaluation.json (the README table) and copies the report
  and plots the README links next to it, so they always come from the same run."""
  results = os.path.join(ROOT, "benchmarks", "results")
  with open(os.path.join(results, "evaluation.json"), "w") as f:
    json.dump(publish_payload(report), f, indent=1, default=float)
  for src, dst in ((f"report_{split}.md", "evaluation_report.md"),
                   (f"latency_quality_{split}.png", "evaluation_latency_quality.png"),
                   (f"timeline_{split}_0.png", "evaluation_timeline_0.png")):
    if os.path.exists(os.path.join(out_dir, src)):
      shutil.copyfile(os.path.join(out_dir, src), os.path.join(results, dst))
