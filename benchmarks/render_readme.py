"""Regenerates the README's results section from benchmarks/results/*.json.

    python benchmarks/render_readme.py [--check]

Every number in the section comes from a JSON file written by a benchmark or an
evaluation; `--check` exits 1 when the README is out of date.
"""

from __future__ import annotations

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
START, END = "<!-- results:start -->", "<!-- results:end -->"
LAUNCH_START, LAUNCH_END = "<!-- launch-memory:start -->", "<!-- launch-memory:end -->"


def _fmt(v):
  if v is None:  # not measured / not applicable
    return "—"
  if isinstance(v, bool):
    return str(v)
  if isinstance(v, float):
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-2):
      return f"{v:.3g}"
    return f"{v:.3f}".rstrip("0").rstrip(".")
  if isinstance(v, int) and abs(v) >= 100_000:
    return f"{v / 1e6:.2f}M"
  return str(v)


def table(rows, columns, headers=None):
  headers = headers or columns
  out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
  for r in rows:
    out.append("| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |")
  return "\n".join(out)


def render_model_summary(data):
  rows = data if isinstance(data, list) else data["rows"]
  sizes = [r["size"] for r in rows]
  keys = [k for k in rows[0] if k != "size"]
  for r in rows[1:]:
    keys += [k for k in r if k not in keys and k != "size"]
  body = [{"metric": k, **{r["size"]: r.get(k, "") for r in rows}} for k in keys]
  return ("### Model sizes (`python -m benchmarks.model_summary --compile "
          "--out=benchmarks/results/model_summary.json`)\n\n" + table(body, ["metric"] + sizes))


def render_generic(name, data):
  rows = data.get("rows") if isinstance(data, dict) else data
  if not rows:
    return f"### {name}\n\n```\n{json.dumps(data, indent=1)[:2000]}\n```"
  cols = [c for c in rows[0]]
  env = data.get("env") if isinstance(data, dict) else None
  head = f"### {name} (`{data.get('command', 'benchmarks/' + name + '.py')}`)" \
      if isinstance(data, dict) else f"### {name}"
  foot = f"\n\nMeasured on: {_fmt_env(env)}" if env else ""
  return head + "\n\n" + table(rows, cols) + foot


def _fmt_env(env):
  return ", ".join(f"{k}={v}" for k, v in env.items())


EVAL_COLUMNS = ["system", "BLEU", "chrF", "ASR-BLEU", "LAAL_ms", "AL_ms", "FLAL_ms"]


def evaluation_rows(data) -> list[dict]:
  """The rows of evaluation.json with each quality metric on the row of the output it
  measures. Files written before `layout` 2 (`liveinterp.evaluate.PUBLISH_LAYOUT`) had
  the speech ASR-BLEU on the text row and the text BLEU/chrF copied onto the speech row:
  those are moved/blanked here, so an old file renders correctly too."""
  rows = [dict(r) for r in data["rows"]]
  if data.get("layout", 1) < 2:
    text = next((r for r in rows if r["system"] == "SFT streaming, text"), None)
    speech = next((r for r in rows if r["system"] == "SFT streaming, speech played"), None)
    if text is not None:
      asr = text.get("ASR-BLEU")
      text["ASR-BLEU"] = None
      if speech is not None:
        speech.update({"BLEU": None, "chrF": None, "ASR-BLEU": asr})
  return rows


def render_evaluation(data):
  """The evaluation table (`liveinterp.evaluate --publish`): "—" where a metric does not
  apply to a row (text rows have no ASR-BLEU, the speech row no text BLEU)."""
  rows = evaluation_rows(data)
  cols = EVAL_COLUMNS + [c for r in rows for c in r if c not in EVAL_COLUMNS]
  cols = list(dict.fromkeys(cols))
  body = [{c: ("—" if r.get(c) is None else r[c]) for c in cols} for r in rows]
  head = (f"### evaluation (`{data.get('command', 'python -m liveinterp.evaluate --publish')}`"
          f")")
  if data.get("layout", 1) >= 2:
    rec = data.get("asr_recognizer") or "no recogniser"
    note = (f"ASR-BLEU: the played speech transcribed by {rec}, scored against the "
            f"reference with both sides normalised (lower case, no punctuation, numbers "
            f"in words).")
    if data.get("asr_note"):
      note += f" {data['asr_note']}"
  else:
    note = ("ASR-BLEU of this run was scored before transcripts and references were "
            "normalised alike (issue #10): it understates the speech quality.")
  voice = _voice_note(data)
  return head + "\n\n" + table(body, cols) + "\n\n" + note + (f"\n\n{voice}" if voice else "")


def _voice_note(data) -> str:
  """The voice-cloning numbers of an evaluation: does the translated speech sound like
  its own speaker more than like others, and more than the same speech rendered with
  another speaker's embedding (the voice-lost control), and in two-speaker talks."""
  parts = []
  if data.get("speaker_margin") is not None:
    parts.append(f"same-speaker minus other-speaker cosine {_fmt(data['speaker_margin'])}"
                 f" (top-1 speaker {_fmt(data.get('speaker_top1'))})")
  if data.get("speaker_control_margin") is not None:
    parts.append(f"own embedding minus another speaker's embedding (voice-lost control) "
                 f"{_fmt(data['speaker_control_margin'])}")
  if data.get("voice_multi_accuracy") is not None:
    parts.append(f"two-speaker talks: a segment is closer to the speaker it translates "
                 f"{_fmt(data['voice_multi_accuracy'])} of the time (chance 0.5)")
  return ("Voice (independent MFCC speaker embedding): " + "; ".join(parts) + "."
          if parts else "")


def _versus_sft_line(stage: str, v: dict) -> str:
  """'- rl2: LAAL -4.1% [-6.0, -2.2] vs SFT, BLEU -0.61 [-2.9, +1.6], chrF ...'."""
  ci = lambda k, f: (f" [{v[k][0]:{f}}, {v[k][1]:{f}}]"  # noqa: E731
                     if v.get(k) else "")
  line = (f"- {stage}: LAAL {v['laal_change_pct']:+.1f}%{ci('laal_change_pct_ci95', '+.1f')}"
          f" vs SFT, BLEU {v['bleu_change']:+.2f}{ci('bleu_change_ci95', '+.2f')}")
  if v.get("chrf_change") is not None:
    line += f", chrF {v['chrf_change']:+.2f}{ci('chrf_change_ci95', '+.2f')}"
  return line


def render_rl_table(data):
  """SFT -> RL stages -> ablations (`python -m benchmarks.rl_table`), with each stage's
  LAAL and BLEU change against SFT (issue #13's goal: rl2 LAAL >= 20% lower at <= 1 BLEU
  loss)."""
  rows = data["rows"]
  refs = data.get("references") or []
  cols = [c for c in rows[0]]
  body = [{c: ("—" if r.get(c) is None else r[c]) for c in cols} for r in rows]
  if refs:  # the scale: constant output, offline ceiling, reference-text policies
    body += [{c: ("—" if r.get(c) is None else r[c]) for c in cols}
             for r in ({**r, "stage": f"*{r['stage']}*"} for r in refs)]
  lines = [_versus_sft_line(stage, v) for stage, v in data.get("versus_sft", {}).items()]
  if any("bleu_change_ci95" in v for v in data.get("versus_sft", {}).values()):
    lines.append("\n[lo, hi]: 95% paired-bootstrap interval over the test utterances "
                 "(1,000 resamples; an interval holding 0 is a change the test set cannot "
                 "tell from none).")
  if data.get("asr_recognizer"):
    lines.append(f"\nASR-BLEU: the played speech transcribed by {data['asr_recognizer']}, "
                 f"scored against the reference with both sides normalised; the *reference "
                 f"speech* row is the same recogniser on the corpus's own target speech "
                 f"(its ceiling).")
  c = data.get("codec_resynthesis")
  if c:
    lines.append(f"\nThe codec alone (SFT's report): {c['items']} reference utterances encoded "
                 f"and decoded in their speaker's voice are recognised at ASR-BLEU "
                 f"{_fmt(c['asr_bleu_resynthesized'])} / chrF "
                 f"{_fmt(c['asr_chrf_resynthesized'])}, the same utterances unprocessed at "
                 f"{_fmt(c['asr_bleu_original'])} / {_fmt(c['asr_chrf_original'])} "
                 f"(log-mel L1 {_fmt(c['mel_l1'])}).")
  if data.get("notes"):  # how the stages were run, when not the recipe's defaults
    lines.append(f"\n{data['notes']}")
  return (f"### rl_table (`{data.get('command', 'python -m benchmarks.rl_table')}`)\n\n"
          + table(body, cols) + ("\n\n" + "\n".join(lines) if lines else ""))


def render_profile(data):
  """Top ops by self time of one profiled training step (`benchmarks/profile_step.py`),
  then the time per op kind (e.g. `fusion[dot]`, `convolution`)."""
  head = (f"### profile: {data['model']} {data['size']} (`{data['command']}`)\n\n"
          f"Step {_fmt(data['step_s'] * 1e3)} ms, op self time "
          f"{_fmt(data['op_ms_per_step'])} ms/step, {_fmt(data['model_GFLOP'])} model GFLOP.")
  kinds = data.get("kinds") or []
  parts = data.get("parts") or []  # profile_decode: which part of the step each op is in
  return (head + "\n\n" + table(data["rows"], ["op", "kind", "ms_per_step", "share",
                                                 "calls_per_step"])
          + ("\n\nBy kind:\n\n" + table(kinds[:8], ["kind", "ms_per_step", "share"])
             if kinds else "")
          + ("\n\nBy part of the step:\n\n" + table(parts[:10], ["part", "ms_per_step",
                                                                  "share"])
             if parts else ""))


def render_rl_credit(data):
  """Whitened GAE advantage per action class of one rollout batch under each time credit
  (`benchmarks/rl_credit.py`, issue #13), with the SFT value head and with V = 0; "push on
  stop" > 0 means the update makes the policy stop speaking sooner."""
  rows = []
  for credit, by_value in data["results"].items():
    for value, name in (("untrained", "SFT head"), ("zero", "V=0")):
      r = by_value.get(value)
      if r is None:
        continue
      cls = r["classes"]
      rows.append({"credit": credit, "value head": name,
                   **{f"A {c}": cls[c]["mean_adv"] for c in ("continue", "stop", "wait_eot",
                                                             "text") if c in cls},
                   "push on stop": r["stop_push"]["total"]})
  cols = list(rows[0]) if rows else []
  return (f"### rl_credit (`{data['command']}`)\n\n{data['turns']} turns, "
          f"{_fmt(data['speech_s_per_turn'])} s speech per turn, warm-up {data['warmup']} "
          f"value updates.\n\n" + table(rows, cols))


def render_rl_probes(data):
  """RL variants judged by their own records (`python -m benchmarks.rl_probes`): each
  stage's dev scores at its start and end, KL, sampled-reward trends."""
  cols = ["stage", "changes", "iterations", "dev_bleu_start", "dev_bleu", "dev_chrf",
          "dev_laal_start", "dev_laal", "kl_last", "kl_text_last", "reward_trend",
          "seq_trend"]
  body = [{c: ("—" if r.get(c) is None else r[c]) for c in cols} for r in data["rows"]]
  note = ("\n\nchanges: against the first row; dev_*: the stage's own greedy scores of "
          "its starting policy and its final policy on the same dev episodes; "
          "reward_trend / seq_trend: last third minus first third of the iterations' "
          "sampled total reward / sampled chrF (every variant draws the same utterances "
          "in the same order, so a stage that barely moves shows the data's own trend).")
  return (f"### rl_probes (`{data.get('command', 'python -m benchmarks.rl_probes')}`)\n\n"
          + table(body, cols) + note + (f"\n\n{data['notes']}" if data.get("notes") else ""))


def render_latency_bound(data):
  """Issue #13's LAAL goal beside the test references' schedules
  (`python -m benchmarks.latency_bound`)."""
  note = ("\n\nmeasured: the RL table's test LAAL of each stage; references: the test "
          "targets' own words on chunk-end schedules — *alignment* is how the SFT data "
          "interleaves them (the evaluation's reference row), *source order* emits each "
          "word once its own aligned source words are heard (a reordered translation), "
          "*anticipate p* writes a random share p of the words one chunk before they are "
          "heard (mean of 8 seeds). Without reordering, guessing or dropping words, LAAL "
          "cannot go below the alignment row.")
  return (f"### latency_bound (`{data['command']}`, {data['examples']} {data['split']} "
          f"utterances, {_fmt(data['chunk_ms'])} ms chunks)\n\n"
          + table(data["rows"], ["system", "LAAL_ms", "vs_sft_pct"]) + note)


RENDERERS = {"model_summary": render_model_summary, "evaluation": render_evaluation,
             "rl_table": render_rl_table, "rl_credit": render_rl_credit,
             "rl_probes": render_rl_probes, "latency_bound": render_latency_bound,
             "serving_memory": lambda d: "### serving_memory\n\n" + render_serving_memory(d)}


def _renderer(name):
  if name.startswith("profile_"):
    return render_profile
  if name.startswith("rl_table"):
    return render_rl_table
  return RENDERERS.get(name, lambda d, n=name: render_generic(n, d))


def render() -> str:
  parts = []
  for path in sorted(glob.glob(os.path.join(RESULTS, "*.json"))):
    name = os.path.splitext(os.path.basename(path))[0]
    with open(path) as f:
      data = json.load(f)
    parts.append(_renderer(name)(data))
  return "\n\n".join(parts) if parts else "_No benchmark results yet._"


def render_serving_memory(data):
  """Per-device GiB of the streaming decoder on serving meshes (`benchmarks/
  serving_memory.py`): one row per size and mesh, the weights then the total at each
  batch of streams."""
  rows = data["rows"]
  batches = sorted({r["batch"] for r in rows})
  body = {}
  for r in rows:
    row = body.setdefault((r["size"], r["mesh"]), {
        "size": r["size"], "mesh (data x tensor)": r["mesh"],
        f"weights ({r['weights_dtype']})": r["weights_GiB"],
        "weights if bf16": r["weights_bf16_GiB"]})
    row[f"KV B={r['batch']}"] = r["kv_cache_GiB"]
    row[f"total B={r['batch']}"] = r["total_GiB"]
  cols = list(dict.fromkeys(c for row in body.values() for c in row if "B=" not in c))
  cols += [f"KV B={b}" for b in batches] + [f"total B={b}" for b in batches]
  out = (f"Serving, GiB per device (`{data['command']}`; B = streams; total = weights as "
         f"held + KV cache + other state; blank: B not divisible by the data axis):\n\n"
         + table(list(body.values()), cols))
  if data.get("compiled"):
    out += ("\n\nDecoder step compiled on 8 fake CPU devices (XLA memory analysis, GiB "
            "per device; `argument` can be below weights + state of the table above: jit "
            "drops the arguments the step does not read):\n\n"
            + table(data["compiled"], list(data["compiled"][0])))
  return out


def render_launch_memory() -> str:
  """The "Launch at scale" tables: training (model_summary.json, 1b/7b) and serving
  (serving_memory.json) memory per device."""
  parts = []
  path = os.path.join(RESULTS, "model_summary.json")
  if os.path.exists(path):
    rows = [r for r in json.load(open(path)) if "pod/devices" in r]
    keys = [k for k in rows[0] if k.startswith(("pod/", "compiled/"))]
    body = [{"metric": k, **{r["size"]: r.get(k, "") for r in rows}} for k in keys]
    parts.append("Training, per device (`python -m benchmarks.model_summary --compile`; "
                 "`pod/*`: params + AdamW on the recipe's pod mesh, `compiled/*`: XLA's "
                 "analysis of the train step on 8 fake CPU devices):\n\n"
                 + table(body, ["metric"] + [r["size"] for r in rows]))
  path = os.path.join(RESULTS, "serving_memory.json")
  if os.path.exists(path):
    parts.append(render_serving_memory(json.load(open(path))))
  return "\n\n".join(parts)


def update_readme(check: bool = False) -> bool:
  path = os.path.join(ROOT, "README.md")
  text = open(path).read()
  a, b = text.index(START) + len(START), text.index(END)
  new = text[:a] + "\n" + render() + "\n" + text[b:]
  if LAUNCH_START in new:
    a, b = new.index(LAUNCH_START) + len(LAUNCH_START), new.index(LAUNCH_END)
    new = new[:a] + "\n" + render_launch_memory() + "\n" + new[b:]
  if check:
    return new == text
  with open(path, "w") as f:
    f.write(new)
  return True


if __name__ == "__main__":
  ok = update_readme(check="--check" in sys.argv)
  if not ok:
    print("README results section is out of date: run python benchmarks/render_readme.py")
    sys.exit(1)
