"""RL stage rl1 through the training CLI on micro (issue #13): it runs from an SFT run,
logs every reward component and PPO metric, and a run stopped at iteration 1 and resumed
ends bit-identical to an uninterrupted one (same episodes, sampling keys, β, weights).

The three processes share one persistent JAX compilation cache (the suite's, from
tests/conftest.py, when there is one), so only the first pays for compiling the decoder
scan, the scoring forward and the update.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.subprocess_env import subprocess_env
from tests.unit.data.test_formats_fixtures import micro_build, micro_tokenizer, session_root

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
  """A micro 'SFT' run to start from: random S2ST weights saved as the sft stage saves
  them (a TrainState in orbax), plus the corpus build and tokenizer."""
  import optax
  from configs import micro
  from liveinterp.common import checkpointing, mesh as mesh_lib, sharding
  from liveinterp.models import s2st
  from liveinterp.train import train_state
  root = tmp_path_factory.mktemp("rl")
  data_dir = micro_build()
  tok = micro_tokenizer()
  c = micro.get_config("sft")
  mesh = mesh_lib.create_mesh(c.mesh, jax.devices()[:1])
  rules = sharding.rules_from_config(c.logical_axis_rules)
  _, state, _ = train_state.create_train_state(lambda r: s2st.S2ST(c, rngs=r),
                                               optax.adam(1e-3), mesh, rules, seed=2)
  ck = checkpointing.Checkpointer(str(root / "sft" / "checkpoints"), async_save=False)
  ck.save(1, state, force=True)
  ck.close()
  del tok  # trained and saved by micro_tokenizer at its session prefix:
  return str(root), data_dir, os.path.join(session_root(), "tok", "zh_en_micro")


def _cmd(root, data_dir, tok_prefix, workdir, *extra):
  return [sys.executable, "-m", "liveinterp.train", "--config=configs/micro.py:rl1",
          f"--workdir={workdir}", "--cpu_devices=1",
          f"--config.data.data_dir={data_dir}", f"--config.tokenizer.model_path={tok_prefix}",
          f"--config.train.init_from={os.path.join(root, 'sft')}",
          "--config.train.steps=2", "--config.checkpoint.every_steps=1",
          "--config.train.batch_size=4", "--config.rl.eval_episodes=2",
          "--config.rl.value_warmup=1", "--config.train.learning_rate=1e-3",
          "--config.stream.max_turn_tokens=16",
          # the explained-variance gate of the value warm-up measured at iteration 1
          # (rl/value_ev_before, equal after a resume) but never binding (EV >= -1e9)
          "--config.rl.value_warmup_max=1", "--config.rl.value_warmup_ev=-1e9", *extra]


def _env(cache):
  return subprocess_env(
      JAX_COMPILATION_CACHE_DIR=os.environ.get("JAX_COMPILATION_CACHE_DIR", cache),
      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _params(workdir, step):
  from liveinterp.common import checkpointing
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  try:
    import orbax.checkpoint as ocp
    out = ck._manager.restore(step, args=ocp.args.Composite(  # pylint: disable=protected-access
        state=ocp.args.StandardRestore()))
  finally:
    ck.close()
  return out["state"]


def _run(sft_run, cache, workdir, *extra):
  root, data_dir, tok_prefix = sft_run
  return subprocess.run(_cmd(root, data_dir, tok_prefix, workdir, *extra), cwd=ROOT,
                        env=_env(cache), capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def rl1_run(sft_run, tmp_path_factory):
  """An uninterrupted 2-iteration rl1 run in `<run dir>/rl1` (shared with the notebook
  test): (its workdir, the completed process, the compilation cache directory)."""
  base = tmp_path_factory.mktemp("rl1_run")
  cache = str(base / "jax_cache")
  workdir = str(base / "run" / "rl1")
  return workdir, _run(sft_run, cache, workdir), cache


def test_rl1_cli_runs_and_resumes_bit_identically(sft_run, rl1_run, tmp_path):
  a, full, cache = rl1_run
  b = str(tmp_path / "b")
  run = lambda w, *x: _run(sft_run, cache, w, *x)  # noqa: E731
  assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
  assert "[rl1] done at step 2" in full.stdout
  rows = _rows(a)
  assert [r["step"] for r in rows] == [1, 2]
  for k in ("reward/det", "reward/init", "reward/qual", "reward/time", "reward/fmt",
            "reward/lag", "reward/seq", "reward/total", "rl/kl", "rl/beta", "rl/entropy",
            "rl/clip_fraction", "rl/value_loss", "rl/explained_variance",
            "rl/text_tokens_per_turn", "rl/speech_s_per_turn", "rl/rollout_logp_gap"):
    assert all(np.isfinite(r[k]) for r in rows), k
  assert rows[0]["rl/value_warmup"] == 1 and rows[1]["rl/value_warmup"] == 0
  assert "rl/value_ev_before" not in rows[0] and rows[1]["rl/value_ev_before"] <= 1.0
  assert all(r["rl/rollout_logp_gap"] < 1e-3 for r in rows)  # train forward == decoder
  result = json.load(open(os.path.join(a, "result.json")))
  assert result["step"] == 2 and not result["stopped_early"]
  # Dev scores at both ends: the starting policy (before iteration 1) and the last one.
  assert "eval @ 0 (starting policy" in full.stdout
  for k in ("eval/simul_bleu", "eval/simul_chrf", "eval/simul_laal", "eval/simul_empty"):
    assert np.isfinite(result[k]) and np.isfinite(result["start/" + k]), k

  first = run(b, "--stop_at=1")
  assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
  assert json.load(open(os.path.join(b, "result.json")))["stopped"] == "stop_at"
  second = run(b)
  assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
  assert "resumed from iteration 1" in second.stdout
  assert "eval @ 0" not in second.stdout  # read back from start_eval.json, not redone
  rb_result = json.load(open(os.path.join(b, "result.json")))
  assert {k: v for k, v in rb_result.items() if k.startswith("start/")} == {
      k: v for k, v in result.items() if k.startswith("start/")}
  ra, rb = _rows(a), _rows(b)
  for x, y in zip(ra, rb):
    for k in x:
      if not k.endswith("seconds"):
        assert x[k] == y[k], (x["step"], k, x[k], y[k])
  sa, sb = _params(a, 2), _params(b, 2)
  la, lb = jax.tree.leaves(sa), jax.tree.leaves(sb)
  assert len(la) == len(lb) > 10
  for x, y in zip(la, lb):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_rl_analysis_notebook_on_the_rl1_run(rl1_run, tmp_path):
  """notebooks/rl_analysis.ipynb on this run (tests/integration/test_notebooks.py)."""
  from tests.integration.test_notebooks import check_rl_analysis
  workdir, full, _ = rl1_run
  assert full.returncode == 0, full.stdout[-3000:] + full.stderr[-3000:]
  check_rl_analysis(os.path.dirname(workdir), str(tmp_path / "figs"))
