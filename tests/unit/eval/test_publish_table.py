"""The published results table puts each quality metric on the row of the output it
measures (issue #10, Quality (b)): text BLEU/chrF on the text row, ASR-BLEU on the
speech-played row. Rendered from a known evaluation report through the JSON to markdown."""

import json

import pytest

from benchmarks import render_readme
from liveinterp.eval import report as report_lib

REPORT = {
    "pair": "zh-en", "split": "test", "examples": 4, "speech": True,
    "simul": {"bleu": 12.5, "chrf": 40.25, "asr_bleu": 7.5, "asr_chrf": 30.0,
              "asr_recognizer": "pocketsphinx-en", "rtf": 0.5,
              "text_latency": {"LAAL": 1500.0, "AL": 1200.0, "FLAL": 900.0},
              "speech_latency": {"LAAL": 2500.0, "AL": 2200.0, "FLAL": 1900.0}},
    "offline": {"bleu": 20.0, "chrf": 50.0,
                "text_latency": {"LAAL": 3000.0, "AL": 3000.0, "FLAL": 2800.0}},
    "constant": {"bleu": 1.0, "chrf": 18.0, "candidates": 400},
    "controls": {"zero_audio": {"bleu": 0.5, "chrf": 10.0}},
    "voice": {"margin": 0.1, "top1_rate": 0.5},
    "codec": {"mel_l1": 4.0, "asr_chrf_original": 60.0, "asr_chrf_resynthesized": 40.0},
}

EXPECTED_TABLE = """\
| system | BLEU | chrF | ASR-BLEU | LAAL_ms | AL_ms | FLAL_ms |
|---|---|---|---|---|---|---|
| SFT streaming, text | 12.5 | 40.25 | — | 1500 | 1200 | 900 |
| SFT streaming, speech played | — | — | 7.5 | 2500 | 2200 | 1900 |
| same model offline | 20 | 50 | — | 3000 | 3000 | 2800 |
| constant output (floor) | 1 | 18 | — | — | — | — |
| control: zero audio | 0.5 | 10 | — | — | — | — |"""


def _render(tmp_path, monkeypatch, payload) -> str:
  monkeypatch.setattr(render_readme, "RESULTS", str(tmp_path))
  with open(tmp_path / "evaluation.json", "w") as f:
    json.dump(payload, f, indent=1, default=float)
  return render_readme.render()


def test_known_report_renders_expected_table(tmp_path, monkeypatch):
  payload = report_lib.publish_payload(REPORT)
  text = _render(tmp_path, monkeypatch, payload)
  assert EXPECTED_TABLE in text, text
  assert "normalised" in text and "pocketsphinx-en" in text
  assert "same-speaker minus other-speaker cosine 0.1 (top-1 speaker 0.5)" in text
  assert "voice-lost control" not in text  # no control in this report: no claim
  payload.update(speaker_control_margin=-0.05, voice_multi_accuracy=0.75)
  text = _render(tmp_path, monkeypatch, payload)
  assert "(voice-lost control) -0.05" in text and "translates 0.75 of the time" in text
  speech = next(r for r in payload["rows"] if r["system"].endswith("speech played"))
  assert speech["BLEU"] is None and speech["ASR-BLEU"] == pytest.approx(7.5)


def test_publish_writes_the_payload_and_copies_the_report_it_came_from(tmp_path,
                                                                        monkeypatch):
  results = tmp_path / "benchmarks" / "results"
  results.mkdir(parents=True)
  out = tmp_path / "runs" / "r" / "eval"
  out.mkdir(parents=True)
  (out / "report_test.md").write_text("# the report of run r")
  (out / "latency_quality_test.png").write_bytes(b"png")
  monkeypatch.setattr(report_lib, "ROOT", str(tmp_path))
  report = dict(REPORT, run_dir=str(tmp_path / "runs" / "r"), controls={})
  report_lib.publish(report, str(out), "test")
  with open(results / "evaluation.json") as f:
    payload = json.load(f)
  assert payload == json.loads(json.dumps(report_lib.publish_payload(report)))
  assert payload["command"] == "python -m liveinterp.evaluate --run_dir=runs/r --publish"
  assert (results / "evaluation_report.md").read_text() == "# the report of run r"
  assert (results / "evaluation_latency_quality.png").read_bytes() == b"png"
  assert not (results / "evaluation_timeline_0.png").exists()   # none written: none copied


def test_recogniser_ceiling_row_sits_under_the_speech_row(tmp_path, monkeypatch):
  report = dict(REPORT, asr_ceiling={"asr_bleu": 42.5, "asr_chrf": 60.0})
  text = _render(tmp_path, monkeypatch, report_lib.publish_payload(report))
  assert ("| SFT streaming, speech played | — | — | 7.5 | 2500 | 2200 | 1900 |\n"
          "| reference speech (recogniser ceiling) | — | — | 42.5 | — | — | — |") in text
  assert "recogniser ceiling" not in _render(tmp_path, monkeypatch,
                                             report_lib.publish_payload(REPORT))


def test_text_only_report_has_no_speech_row(tmp_path, monkeypatch):
  report = dict(REPORT, speech=False, simul=dict(REPORT["simul"], asr_bleu=None,
                                                 asr_note="text-only evaluation"))
  text = _render(tmp_path, monkeypatch, report_lib.publish_payload(report))
  assert "speech played" not in text
  assert "| SFT streaming, text | 12.5 | 40.25 | — |" in text


def test_legacy_layout_is_corrected_when_rendered(tmp_path, monkeypatch):
  """A file published before the fix (ASR-BLEU on the text row, text BLEU repeated on
  the speech row, no "layout") renders to the same, correct table."""
  payload = report_lib.publish_payload(REPORT)
  legacy = dict(payload)
  del legacy["layout"]
  rows = [dict(r) for r in payload["rows"]]
  rows[0]["ASR-BLEU"] = 7.5
  rows[1].update(BLEU=12.5, chrF=40.25, **{"ASR-BLEU": None})
  legacy["rows"] = rows
  text = _render(tmp_path, monkeypatch, legacy)
  assert EXPECTED_TABLE in text, text
  assert "before transcripts and references were normalised" in text


def test_rows_and_command_name_the_evaluated_stage(tmp_path, monkeypatch):
  """The recipe evaluates the selected stage: an rl2 report's rows say rl2, and its
  command reproduces it (--stage=rl2)."""
  monkeypatch.setattr(report_lib, "ROOT", str(tmp_path))
  controls = {"x": {"bleu": 1.0, "chrf": 2.0}}
  payload = report_lib.publish_payload(dict(REPORT, stage="rl2", controls=controls,
                                            run_dir="runs/r"))
  systems = [r["system"] for r in payload["rows"]]
  assert systems[:2] == ["rl2 streaming, text", "rl2 streaming, speech played"], systems
  assert payload["command"] == ("python -m liveinterp.evaluate --run_dir=runs/r "
                                "--stage=rl2 --controls --publish")


def test_markdown_report_names_the_evaluated_stage():
  """The run's report_<split>.md names the evaluated model like the published rows (it
  said "SFT" for an rl2 evaluation)."""
  simul = dict(REPORT["simul"], text_latency_ca={"LAAL": 2000.0}, empty_outputs=0)
  full = dict(REPORT, simul=simul, chunk_ms=640, policies={}, codec={}, voice={},
              examples_text=[])
  for stage, name in (("sft", "SFT"), ("rl2", "rl2")):
    md = report_lib.markdown(dict(full, stage=stage))
    for row in ("streaming (text)", "streaming (speech played)", "computation-aware (text)"):
      assert f"| {name}, {row} |" in md, md
  assert "SFT" not in report_lib.markdown(dict(full, stage="rl2"))
