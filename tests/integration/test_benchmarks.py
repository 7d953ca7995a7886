"""Benchmark scripts run (micro sizes) and write JSON the README renderer can read."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from tests.subprocess_env import subprocess_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# model_flops and profile_step (which profiles model_flops' own `_case`) run at the same
# micro shapes: the codec fwd+bwd program compiled by the first is a hit in the suite's
# persistent compilation cache (tests/conftest.py) for the second, instead of a second
# XLA compile of the same program.
_SHAPES = ("--batch=1", "--seq=64", "--audio_seconds=0.32")


def test_model_flops_benchmark_writes_a_table(tmp_path):
  out = tmp_path / "flops.json"
  r = subprocess.run([sys.executable, "benchmarks/model_flops.py", "--sizes=micro",
                      "--models=llm,s2st_step,codec", "--repeats=1", *_SHAPES, f"--out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  assert {row["model"] for row in data["rows"]} == {"llm", "s2st_step", "codec"}
  before, after = data["matmul_GFLOP/s_before_after"]
  for row in data["rows"]:  # the higher of the two roofline measurements
    assert row["matmul_GFLOP/s"] == max(before, after) > 0 and 0 < row["ratio"] < 10
    assert abs(row["ratio"] - row["model_GFLOP/s"] / row["matmul_GFLOP/s"]) < 1e-9
  assert "ratio" in r.stdout  # the printed table


def test_readme_renderer_tables(tmp_path, monkeypatch):
  sys.path.insert(0, ROOT)
  from benchmarks import render_readme
  monkeypatch.setattr(render_readme, "RESULTS", str(tmp_path))
  json.dump({"command": "x", "rows": [{"a": 1.5, "b": "y"}, {"a": None, "b": "z"}]},
            open(tmp_path / "demo.json", "w"))
  text = render_readme.render()
  assert "| a | b |" in text and "| 1.5 | y |" in text
  assert "| — | z |" in text  # a cell not measured


def test_profile_step_writes_top_ops_and_renders(tmp_path):
  """profile_step traces a micro codec step, parses the trace and names op kinds."""
  out = tmp_path / "profile_codec_micro.json"
  r = subprocess.run([sys.executable, "benchmarks/profile_step.py", "--model=codec",
                      "--size=micro", "--steps=1", "--top=5", *_SHAPES,
                      f"--profile_out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=900)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  rows = data["rows"]
  assert 0 < len(rows) <= 5 and "ms_per_step" in r.stdout
  shares = [row["share"] for row in rows]
  assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9
  assert all(row["kind"] != "?" for row in rows)  # every traced op found in the HLO text
  sys.path.insert(0, ROOT)
  from benchmarks import render_readme
  text = render_readme.render_profile(data)
  assert "### profile: codec micro" in text and rows[0]["op"] in text


def test_profile_render_shows_the_parts_of_a_decode_step():
  """profile_decode's JSON also has `parts` (which part of the step each op is in)."""
  sys.path.insert(0, ROOT)
  from benchmarks import render_readme
  data = {"model": "decode_step", "size": "tiny", "command": "c", "step_s": 0.1,
          "op_ms_per_step": 90.0, "model_GFLOP": 0.5,
          "rows": [{"op": "dot.1", "kind": "fusion[dot]", "ms_per_step": 50.0, "share": 0.55,
                    "calls_per_step": 43}],
          "parts": [{"part": "turn/attention", "ms_per_step": 30.0, "share": 0.33},
                    {"part": "codec", "ms_per_step": 10.0, "share": 0.11}]}
  text = render_readme.render_profile(data)
  tail = text.split("By part of the step:")[1]
  assert "| turn/attention | 30 | 0.33 |" in tail and "| codec | 10 | 0.11 |" in tail
  del data["parts"]
  assert "By part of the step" not in render_readme.render_profile(data)


def test_profile_trace_parser_self_time():
  """Self time subtracts nested events on the same thread; other threads are separate."""
  import gzip
  import tempfile
  sys.path.insert(0, ROOT)
  from benchmarks import profile_step
  ev = [{"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10, "name": "a",
         "args": {"hlo_op": "a"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 2, "dur": 3, "name": "b", "args": {"hlo_op": "b"}},
        {"ph": "X", "pid": 1, "tid": 2, "ts": 1, "dur": 4, "name": "b", "args": {"hlo_op": "b"}},
        {"ph": "X", "pid": 1, "tid": 1, "ts": 20, "dur": 1, "name": "host"}]
  with tempfile.NamedTemporaryFile(suffix=".json.gz") as f:
    with gzip.open(f.name, "wt") as g:
      json.dump({"traceEvents": ev}, g)
    times = profile_step.op_self_times(f.name)
  assert times == {"a": {"self_us": 7.0, "count": 1}, "b": {"self_us": 7.0, "count": 2}}
  kinds = profile_step.parse_hlo_kinds(
      "HloModule m\n\n%fused_computation (p: f32[2]) -> f32[2] {\n"
      "  %p = f32[2]{0} parameter(0)\n  ROOT %c = f32[2]{0} convolution(%p, %p), window={}\n}\n\n"
      "ENTRY %main (x: f32[2]) -> f32[2] {\n  %x = f32[2]{0} parameter(0)\n"
      "  ROOT %fusion.1 = f32[2]{0} fusion(%x), kind=kOutput, calls=%fused_computation\n}\n")
  assert kinds["fusion.1"] == "fusion[convolution]" and kinds["x"] == "parameter"


def test_serve_load_benchmark_runs_two_clients(tmp_path):
  """benchmarks/serve_load.py: 2 real websocket clients on the micro model, 2 s each."""
  out = tmp_path / "serve_load.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.serve_load", "--size=micro",
                      "--clients=2", "--seconds=2", "--speed=4", "--max_turn_tokens=16",
                      f"--out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  (row,) = data["rows"]
  assert row["refused"] == 0 and row["failed"] == 0
  assert [c["outcome"] for c in data["clients"]] == ["done", "done"]
  assert all(c["chunks"] == -(-2000 // data["rows"][0]["chunk_ms"]) for c in data["clients"])
  assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
  assert row["rtf"] > 0 and row["peak_rss_mb"] > 0
  assert "p99_ms" in r.stdout  # the printed table


def test_stream_replay_compares_the_server_settings_on_the_same_streams(tmp_path):
  """benchmarks/stream_replay.py: the micro model's streams as one plain batch and as two
  lanes with the compacted turn loop and per-row codec; both write the same tokens; the
  one-stream row carries issue #14's goal columns."""
  out = tmp_path / "stream_replay.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.stream_replay", "--size=micro",
                      "--batch=2", "--seconds=3", "--settings=plain,lanes2",
                      "--single", "--max_turn_tokens=16", "--cores=0", f"--out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  rows = data["rows"]
  assert [(x["setting"], x["B"], x["lanes"]) for x in rows] == [
      ("plain", 2, 1), ("lanes2", 2, 2), ("single", 1, 1)]
  assert [x["same_tokens"] for x in rows] == [None, True, None]
  assert (rows[1]["turn_rows"], rows[1]["codec_rows"]) == ("auto", 1)
  assert all(x["chunks"] == 3000 // data["chunk_ms"] and 0 < x["step_p50_ms"] <= x["step_p99_ms"]
             for x in rows)
  assert {"speaking_rtf", "p99_over_chunk", "goals_met"} <= set(rows[-1])
  assert "same_tokens" in r.stdout  # the printed table
  bad = subprocess.run([sys.executable, "-m", "benchmarks.stream_replay", "--size=micro",
                        "--settings=lanes0"], cwd=ROOT, env=subprocess_env(),
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "'lanes0' is not plain" in bad.stderr


def test_serve_load_streams_a_runs_test_speech(tmp_path):
  """serve_load --source=test: each client streams the run's test-split utterances back to
  back from its own starting utterance (a trained model's realistic load)."""
  from liveinterp.common import config as config_lib
  from tests.integration import micro_corpus
  data_dir, tok = micro_corpus.micro_corpus()
  c = config_lib.load("configs/micro.py:sft", lock=False, check=False)
  c.data.data_dir, c.tokenizer.model_path = data_dir, tok
  config_lib.save(c, str(tmp_path / "config.json"))
  code = ("import numpy as np, sys\n"
          "from benchmarks import common\n"
          f"a = common.corpus_speech({str(tmp_path)!r}, 3.0, 2, 16000)[1]\n"
          "np.save(sys.argv[1], a)\n")
  r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.npy")], cwd=ROOT,
                     env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  a = np.load(tmp_path / "a.npy")
  from data_pipelines import pipelines
  test = pipelines.open_corpus(c, "test")
  first = np.asarray(test[7 % len(test)]["src_audio"], np.float32) / 32768.0
  assert a.dtype == np.float32 and a.size == 3 * 16000
  np.testing.assert_array_equal(a[:min(first.size, a.size)], first[:a.size])
  if first.size < a.size:  # a 300 ms pause, then the next utterance
    assert not a[first.size:first.size + 4800].any()
  # The same run dir gives the RL table its reference-policy rows on any utterance count
  # (benchmarks/rl_table.policy_rows), equal to latency_bound's alignment schedule.
  from benchmarks import latency_bound, rl_table
  n = min(3, len(test))
  rows = {r["stage"]: r for r in rl_table.policy_rows(str(tmp_path), n)}
  assert set(rows) == {"reference text, alignment policy", "reference text, wait-3 policy"}
  recs = [test[i] for i in range(n)]
  bound = latency_bound.measure(recs, float(c.stream.chunk_ms), 16000)["alignment"]
  assert rows["reference text, alignment policy"]["laal_text"] == pytest.approx(bound)
  assert all(r["n"] == n for r in rows.values())


def test_streaming_batch_benchmark_runs_batched_workloads(tmp_path):
  """benchmarks/streaming_batch.py (the issue #14 per-stream cost table) on micro at B = 2
  (one decoder compile; the B = 1 baseline is the same code at another batch): every
  workload and component timed, nothing recompiled after warm-up, the matmul roofline
  measured at both ends of the run."""
  out = tmp_path / "streaming_batch.json"
  r = subprocess.run([sys.executable, "-m", "benchmarks.streaming_batch", "--size=micro",
                      "--batches=2", "--repeats=1", "--cores=0", f"--out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  data = json.load(open(out))
  assert data["zero_recompiles"] and set(data["recompiles_after_warmup"]) == {"masked/B=2"}
  rows = {(row["B"], row["workload"]): row for row in data["rows"]}
  assert {w for _, w in rows} >= {"wait", "text", "talk", "ragged"}
  for (b, _), row in rows.items():
    assert b == 2 and row["step_ms"] > 0
    assert row["per_stream_ms"] == pytest.approx(row["step_ms"] / b, rel=0.02)
  assert {c["component"] for c in data["components"]} >= {"speaker_embed", "codec_equal"}
  peaks = data["env"]["matmul_512_GFLOP_s_before_after"]  # the machine's speed, same run
  assert len(peaks) == 2 and all(p > 0 for p in peaks)
  assert "per_stream_ms" in r.stdout  # the printed table


def test_main_job_times_table_from_a_run_and_merged_by_label(tmp_path):
  """main_job_times reads a run's own records (recipe_times.json, each stage's
  result.json) and keeps rows of other labels when it writes the JSON."""
  run = tmp_path / "run"
  (run / "codec").mkdir(parents=True)
  json.dump({"data": 150.0, "codec": 450.0, "speech_tokens": 400.0, "rl_lag_only": 90.0},
            open(run / "recipe_times.json", "w"))
  json.dump({"step": 200, "steps_per_second": 0.5}, open(run / "codec" / "result.json", "w"))
  out = tmp_path / "times.json"
  json.dump({"rows": [{"label": "before", "step": "total", "seconds": 2000.0}]},
            open(out, "w"))
  r = subprocess.run([sys.executable, "-m", "benchmarks.main_job_times", f"--run_dir={run}",
                      "--label=after", f"--out={out}"],
                     cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
  rows = json.load(open(out))["rows"]
  assert [(x["label"], x["step"]) for x in rows] == [
      ("before", "total"), ("after", "data"), ("after", "codec"),
      ("after", "speech_tokens"), ("after", "rl_lag_only (ablation)"), ("after", "total")]
  codec = rows[2]
  assert (codec["seconds"], codec["steps"], codec["steps_per_s"], codec["s_per_step"],
          codec["share"]) == (450.0, 200, 0.5, 2.0, 0.45)
  assert rows[-2]["share"] is None  # an ablation is not part of the main job's total
  assert rows[-1]["seconds"] == 1000.0 and "s_per_step" in r.stdout
