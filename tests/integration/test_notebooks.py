"""notebooks/streaming_tour.ipynb and notebooks/rl_analysis.ipynb execute headless
(nbclient, the venv's kernel) on micro artifacts and draw every figure.

streaming_tour: a micro run directory with random weights (config.json, sft and codec
checkpoints) and a synthetic wav. rl_analysis (`check_rl_analysis`): a real micro RL run
(`liveinterp.train --config=configs/micro.py:rl1`, 2 iterations) and the repository's
benchmarks/results/rl_table.json; it runs inside tests/integration/test_rl_stage.py, on
that file's rl1 run, so the suite pays for one RL run, not two. The first cell of each
notebook is its parameters cell; the test appends its own values to it.
"""

import json
import os

import nbclient
import nbformat
import numpy as np
import pytest
import soundfile as sf

from tests.unit.inference.test_translate_cli import _save_stage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOTEBOOKS = os.path.join(ROOT, "notebooks")


def _execute(name: str, params: dict) -> tuple[list, str]:
  """Runs notebooks/<name> with `params` appended to its parameters cell; returns (every
  output, the printed text). Fails on any cell error."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  first = nb.cells[0]
  assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
  for key in params:
    assert f"\n{key} = " in "\n" + first.source, f"{name} has no parameter {key}"
  first.source += "\n# test overrides\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
  client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                   resources={"metadata": {"path": NOTEBOOKS}})
  client.execute()
  outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  errors = [o for o in outputs if o.get("output_type") == "error"]
  assert not errors, errors
  text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
  return outputs, text


def _figures(outputs) -> int:
  return sum("image/png" in o.get("data", {}) for o in outputs
             if o.get("output_type") == "display_data")


def test_streaming_tour_runs_on_a_micro_run(tmp_path, monkeypatch):
  from configs import micro
  from liveinterp.common import config as config_lib
  from liveinterp.inference import loading
  from liveinterp.models.voice import VoiceCodec
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  cfg = micro.get_config()
  run_dir = str(tmp_path / "run")
  config_lib.save(cfg, os.path.join(run_dir, "config.json"))
  model, _, _ = loading.build_models(cfg, seed=2)    # seed 2 writes on this input
  _save_stage(run_dir, "sft", model, 3)
  _save_stage(run_dir, "codec", loading.random_model(lambda r: VoiceCodec(cfg, rngs=r),
                                                     seed=3), 1)
  sr = 16000
  t = np.arange(int(1.2 * sr)) / sr
  wav = str(tmp_path / "in.wav")
  sf.write(wav, (0.4 * np.sin(2 * np.pi * (200 + 500 * t) * t)
                 + 0.05 * np.random.default_rng(0).standard_normal(t.size)), sr)
  figs = str(tmp_path / "figs")
  outputs, text = _execute("streaming_tour.ipynb", {
      "RUN_DIR": run_dir, "WAV": wav, "MAX_TURN_TOKENS": 16, "CODEC_BLOCKS": (), "TURNS": "speech",
      "FIG_DIR": figs})
  assert sorted(os.listdir(figs)) == ["alignment.png", "emission_timeline.png",
                                      "spectrograms.png"]
  assert _figures(outputs) == 3
  kinds = {k for o in outputs for k in o.get("data", {})}
  assert "text/html" in kinds          # the two Audio players
  assert "translation: '" in text and "turn(s) wrote something" in text
  # The random model writes on this input ("[id]" words, no tokenizer) and speaks.
  assert "[" in text.split("translation: ")[1].splitlines()[0]
  rows = [line.split() for line in text.split("speech ms  text")[1].splitlines()[1:]
          if line.strip()]
  assert rows and any(float(r[2]) > 0 for r in rows)


def check_rl_analysis(run_dir: str, figs: str):
  """Executes rl_analysis.ipynb on a run directory whose `rl1/` holds a 2-iteration RL
  run and checks its printout and figures. Called by
  tests/integration/test_rl_stage.py::test_rl_analysis_notebook_on_the_rl1_run, which
  shares that file's micro rl1 run (an RL run costs minutes of CPU)."""
  with open(os.path.join(run_dir, "rl1", "metrics.jsonl")) as f:
    assert [json.loads(line)["step"] for line in f] == [1, 2]
  table = os.path.join(ROOT, "benchmarks", "results", "rl_table.json")
  outputs, text = _execute("rl_analysis.ipynb", {
      "RUN_DIR": run_dir, "STAGES": ("rl1", "rl2"), "RL_TABLE": table, "FIG_DIR": figs})
  assert "rl1: 2 iteration(s)" in text and "rl2: no " in text   # a missing stage is skipped
  assert "rl1: last iteration 2: reward/total" in text
  want = ["kl_beta.png", "reward_components.png", "rollout_latency.png"]
  if os.path.exists(table):
    want.append("latency_quality.png")
    assert "sft" in text.split(table)[1]
  assert sorted(os.listdir(figs)) == sorted(want)
  assert _figures(outputs) == len(want)


@pytest.mark.parametrize("name", ["streaming_tour.ipynb", "rl_analysis.ipynb"])
def test_notebooks_are_valid_and_clean(name):
  """nbformat 4, valid, committed without outputs, parameters cell first."""
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  nbformat.validate(nb)
  assert nb.nbformat == 4
  assert "parameters" in nb.cells[0].metadata.get("tags", [])
  assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")
