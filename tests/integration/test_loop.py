"""The stage loop: TensorBoard + orbax outputs, exact resume, restore onto another mesh,
a diverged run stops (issue #12)."""

import glob
import json
import os

import jax
import numpy as np

from configs import micro
from liveinterp.train import loop
from tests.tiny_models import TinyLM, lm_loss


def _stage():
  def make_data(start):
    step = start
    while True:
      rng = np.random.default_rng([7, step, jax.process_index()])
      ids = rng.integers(0, 32, (8, 9)).astype(np.int32)
      yield {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
      step += 1
  return loop.Stage("toy", lambda r: TinyLM(32, 16, 32, r), lm_loss, make_data)


def _cfg(steps, **mesh):
  c = micro.get_config()
  c.train.steps = steps
  c.train.warmup_steps = 1
  c.checkpoint.every_steps = 2
  c.checkpoint.async_save = False
  for k, v in mesh.items():
    c.mesh[k] = v
  return c


def _params(workdir, steps, **mesh):
  """Final params restored from the workdir's latest checkpoint (as numpy)."""
  from liveinterp.common import checkpointing, mesh as mesh_lib, sharding
  from liveinterp.train import optimizer, train_state
  c = _cfg(steps, **mesh)
  m = mesh_lib.create_mesh(c.mesh)
  rules = sharding.rules_from_config(c.logical_axis_rules)
  tx = optimizer.make_optimizer(c.train)
  _, abstract, _ = train_state.abstract_state(_stage().model_fn, tx, m, rules)
  ck = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"))
  state, step = ck.restore(abstract)
  ck.close()
  return step, state


def test_outputs_and_bitwise_resume(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  full = loop.run(_cfg(6), a, _stage())
  assert full["step"] == 6 and np.isfinite(full["train/loss"])
  assert glob.glob(os.path.join(a, "tensorboard", "events.out.tfevents.*"))
  assert sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(a, "checkpoints", "*"))
                if os.path.basename(p).isdigit()) == [2, 4, 6]
  part = loop.run(_cfg(6), b, _stage(), stop_at=3)  # "killed" after step 3
  assert part["step"] == 3 and part["stopped_early"]
  resumed = loop.run(_cfg(6), b, _stage())
  assert resumed["step"] == 6
  assert resumed["train/loss"] == full["train/loss"]  # same last-interval losses, bitwise
  _, sa = _params(a, 6)
  _, sb = _params(b, 6)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_restore_onto_a_different_mesh(tmp_path):
  w = str(tmp_path / "w")
  loop.run(_cfg(2, ici_data=2, ici_fsdp=2, ici_tensor=2), w, _stage())
  step8, _ = _params(w, 2, ici_data=2, ici_fsdp=2, ici_tensor=2)
  assert step8 == 2
  # The (2, 2, 2) checkpoint continues training on a (1, 8, 1) mesh.
  out = loop.run(_cfg(4, ici_data=1, ici_fsdp=8, ici_tensor=1), w, _stage())
  assert out["step"] == 4 and np.isfinite(out["train/loss"])
  step, s = _params(w, 4, ici_data=1, ici_fsdp=8, ici_tensor=1)
  assert step == 4
  k = s.params["up"]["kernel"][...]
  assert k.sharding.spec == jax.sharding.PartitionSpec("fsdp", None)


def test_init_from_another_run(tmp_path):
  a, b = str(tmp_path / "a"), str(tmp_path / "b")
  loop.run(_cfg(4), a, _stage())
  c = _cfg(1)
  c.train.init_from = a
  c.train.learning_rate = 1e-12
  c.train.weight_decay = 0.0
  loop.run(c, b, _stage())
  _, sa = _params(a, 4)
  _, sb = _params(b, 1)
  for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
  c.train.init_from = str(tmp_path / "nope")
  import pytest
  with pytest.raises(FileNotFoundError, match="nope"):
    loop.run(c, str(tmp_path / "c"), _stage())


def _saved(workdir):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                if os.path.basename(p).isdigit())


def test_diverged_run_stops_and_is_not_handed_on(tmp_path, capsys):
  """learning_rate=1e6 (steps 3.. non-finite, skipped): stopped after
  train.max_consecutive_skipped in a row, reason and counts in the result, a message
  that says what to try, nothing saved at the stop; another stage refuses its weights.
  Before issue #12 it trained on to the end and reported success."""
  w = str(tmp_path / "w")
  c = _cfg(12)
  c.train.learning_rate = 1e6
  c.train.max_consecutive_skipped = 3
  out = loop.run(c, w, _stage())
  assert out["stopped"] == "diverged" and out["stopped_early"], out
  assert loop.exit_code(out) == loop.EXIT_DIVERGED == 3
  assert out["skipped_in_a_row"] == 3 and out["skipped_steps"] >= 3
  assert out["step"] < 12 and "train.max_consecutive_skipped=3" in out["stop_reason"]
  said = capsys.readouterr().out
  assert f"STOPPED at step {out['step']}: training diverged" in said
  assert "lower train.learning_rate" in said and "check the data" in said
  assert _saved(w) and _saved(w)[-1] == out["last_checkpoint"] < out["step"]
  _, s = _params(w, 12)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(s.params))
  with open(os.path.join(w, "result.json"), "w") as f:  # as the CLI and the recipe write it
    json.dump(out, f)
  nxt = _cfg(1)
  nxt.train.init_from = w
  import pytest
  with pytest.raises(RuntimeError, match="stopped as diverged"):
    loop.run(nxt, str(tmp_path / "next"), _stage())


def test_skipped_fraction_limit():
  """More than max_skipped_fraction skipped: judged once skipped_fraction_after steps
  have run, or at the end of a run shorter than that; a run resumed near its end is not
  judged on its few steps."""
  c = _cfg(12)
  c.train.max_consecutive_skipped = 0
  c.train.max_skipped_fraction = 0.5
  c.train.skipped_fraction_after = 20
  flags = [0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 0, 1]  # 7 of 12, never 4 in a row
  g = loop._DivergenceGuard(c.train)
  assert not g.update(flags[:11])  # 6 of 11: a run shorter than 20 is judged at its end
  assert g.update(flags[11:]) and g.reason.startswith("7 of 12 steps were skipped")
  c.train.steps = 200
  g = loop._DivergenceGuard(c.train)
  assert not g.update(flags)  # 12 < skipped_fraction_after
  assert g.update([1] * 8) and g.steps == 20  # 15 of 20
  g = loop._DivergenceGuard(c.train)
  assert not g.update([1, 1])  # a run resumed at 198/200
