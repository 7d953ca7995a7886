"""Benchmark scripts run (micro sizes) and write JSON the README renderer can read."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
  env.pop("XLA_FLAGS", None)
  return env


def test_model_flops_benchmark_writes_a_table(tmp_path):
  out = tmp_path / "flops.json"
  r = subprocess.run([sys.executable, "benchmarks/model_flops.py", "--sizes=micro",
                      "--models=llm,s2st_step,codec", "--repeats=1", "--batch=2", "--seq=64",
                      "--audio_seconds=0.64", f"--out={out}"],
                     cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  assert {row["model"] for row in data["rows"]} == {"llm", "s2st_step", "codec"}
  for row in data["rows"]:
    assert row["matmul_GFLOP/s"] > 0 and 0 < row["ratio"] < 10
  assert "ratio" in r.stdout  # the printed table


def test_readme_renderer_tables(tmp_path, monkeypatch):
  sys.path.insert(0, ROOT)
  from benchmarks import render_readme
  monkeypatch.setattr(render_readme, "RESULTS", str(tmp_path))
  json.dump({"command": "x", "rows": [{"a": 1.5, "b": "y"}]}, open(tmp_path / "demo.json", "w"))
  text = render_readme.render()
  assert "| a | b |" in text and "| 1.5 | y |" in text
