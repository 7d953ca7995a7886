"""The recipe stops where a stage did not finish (issue #12): a diverged stage ends it with
exit code 3 and its weights go no further; a stage stopped by SIGTERM ends it with 75,
"stopped, resume later", not as a failure."""

import dataclasses
import json
import os
import signal

from absl import flags
from absl.testing import flagsaver

from liveinterp.train import loop, stages
from tests.integration.test_loop import _cfg, _saved, _stage


def _run_recipe(monkeypatch, tmp_path, stage, cfg):
  from liveinterp import recipe  # defines the recipe's flags
  configured = []

  def stage_config(recipe_name, step, *args, **kwargs):
    del recipe_name, args, kwargs
    configured.append(step)
    return cfg

  monkeypatch.setattr(recipe, "stage_config", stage_config)
  monkeypatch.setattr(stages, "build", lambda c: stage)
  run = str(tmp_path / "run")
  with flagsaver.flagsaver():
    flags.FLAGS(["recipe", "--recipe=micro", f"--run_dir={run}",
                 f"--data_dir={tmp_path / 'data'}", "--steps=pretrain,sft"])
    code = recipe.main([])
  return code, configured, run


def test_diverged_stage_stops_the_recipe(monkeypatch, tmp_path, capsys):
  c = _cfg(12)
  c.train.learning_rate = 1e6  # steps 3.. are non-finite
  c.train.max_consecutive_skipped = 2
  code, configured, run = _run_recipe(monkeypatch, tmp_path, _stage(), c)
  assert code == loop.EXIT_DIVERGED
  assert configured == ["pretrain"] and not os.path.exists(os.path.join(run, "sft"))
  said = capsys.readouterr().out
  assert "[recipe] pretrain diverged" in said and "later steps are not run" in said


def test_preempted_stage_stops_the_recipe_to_resume_later(monkeypatch, tmp_path, capsys):
  toy = _stage()

  def make_data(start):
    for i, batch in enumerate(toy.make_data(start), start):
      if i == start + 2:  # fetched after step 2, used by step 3: as if preempted
        os.kill(os.getpid(), signal.SIGTERM)
      yield batch

  code, configured, run = _run_recipe(monkeypatch, tmp_path,
                                      dataclasses.replace(toy, make_data=make_data), _cfg(12))
  assert code == loop.EXIT_PREEMPTED
  assert configured == ["pretrain"] and not os.path.exists(os.path.join(run, "sft"))
  said = capsys.readouterr().out
  assert "saving a checkpoint and stopping" in said
  assert "[recipe] pretrain stopped at step 3 by SIGTERM" in said and "resume" in said
  assert _saved(os.path.join(run, "pretrain")) == [2, 3]  # saved at the stop


def test_recipe_times_accumulate_over_invocations(tmp_path):
  """recipe_times.json keeps the steps of earlier invocations (a run resumed step by step
  reports every stage's time), and a step run again gets its latest time."""
  from liveinterp import recipe
  recipe._record_time(str(tmp_path), "pretrain", 10.0)
  recipe._record_time(str(tmp_path), "sft", 20.0)
  recipe._record_time(str(tmp_path), "pretrain", 12.5)
  assert json.loads((tmp_path / "recipe_times.json").read_text()) == {
      "pretrain": 12.5, "sft": 20.0}


def test_finished_recipe_leaves_its_resolved_config_in_every_directory(monkeypatch, tmp_path):
  """Each stage directory and the run directory carry the resolved config (issue #15, a
  run directory is self-describing): `config.load(<dir>/config.json)` gives back the
  config the stage ran with, overrides included."""
  from liveinterp.common import config as config_lib
  c = _cfg(2)
  c.train.learning_rate = 0.0123  # a value no config file has
  code, configured, run = _run_recipe(monkeypatch, tmp_path, _stage(), c)
  assert not code and configured == ["pretrain", "sft"]  # main returns None when done
  for d in (os.path.join(run, "pretrain"), os.path.join(run, "sft"), run):
    got = config_lib.load(os.path.join(d, "config.json"), check=False)
    assert got.to_dict() == c.to_dict(), d
  assert not os.path.exists(os.path.join(tmp_path, "config.json"))
