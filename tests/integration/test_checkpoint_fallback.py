"""Checkpoints and metrics under crashes (issue #12): a corrupt latest checkpoint falls
back to the newest step that restores; replayed steps are logged once (metrics.jsonl and
TensorBoard); clu's async writer gets copies; a full disk during an async save is one
clear error."""

import errno
import glob
import json
import os
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from liveinterp.common import checkpointing, cli, reporting
from liveinterp.train import loop
from tests.integration.test_loop import _cfg, _stage


@pytest.fixture(scope="module")
def six_steps(tmp_path_factory):
  """A finished 6-step run (checkpoints 2, 4, 6; one metrics row per step)."""
  w = str(tmp_path_factory.mktemp("six") / "w")
  out = loop.run(_cfg(6), w, _stage())
  assert out["step"] == 6
  return w


def _copy(src, tmp_path):
  dst = str(tmp_path / "w")
  shutil.copytree(src, dst)
  return dst


def _steps_in(w):
  return sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(w, "checkpoints", "*"))
                if os.path.basename(p).isdigit())


def _metric_steps(w):
  with open(os.path.join(w, "metrics.jsonl")) as f:
    return [json.loads(line)["step"] for line in f]


def _tb_steps(w, tag="train/loss"):
  from tensorboard.backend.event_processing import event_file_loader
  steps = []
  for p in glob.glob(os.path.join(w, "tensorboard", "events.out.tfevents.*")):
    for ev in event_file_loader.EventFileLoader(p).Load():
      if ev.HasField("summary") and any(v.tag == tag for v in ev.summary.value):
        steps.append(ev.step)
  return sorted(steps)


def _truncate_arrays(step_dir):
  files = [p for p in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
           if os.path.isfile(p)]
  assert files
  for p in files:
    with open(p, "r+b") as f:
      f.truncate(os.path.getsize(p) // 2)


def test_corrupt_latest_checkpoint_falls_back_and_logs_each_step_once(six_steps, tmp_path,
                                                                        capsys):
  """Step 6's array files truncated: the resume warns naming step 6, restores step 4,
  replays 5-6 and trains on to 8; the bad step is moved aside so 6 is saved again;
  metrics.jsonl and TensorBoard have one value per step. Before: fatal ValueError."""
  w = _copy(six_steps, tmp_path)
  _truncate_arrays(os.path.join(w, "checkpoints", "6"))
  out = loop.run(_cfg(8), w, _stage())
  said = capsys.readouterr().out
  assert "checkpoint step 6 in" in said and "does not restore" in said
  assert "resuming from step 4 instead" in said and "resumed from step 4" in said
  assert out["step"] == 8 and np.isfinite(out["train/loss"])
  assert _steps_in(w) == [4, 6, 8]  # 6 re-saved (keep=3)
  assert os.path.isdir(os.path.join(w, "checkpoints.corrupt", "6"))
  assert _metric_steps(w) == list(range(1, 9))
  assert _tb_steps(w) == list(range(1, 9))


def test_no_checkpoint_restores_is_one_clear_error(six_steps, tmp_path):
  w = _copy(six_steps, tmp_path)
  for s in (2, 4, 6):
    _truncate_arrays(os.path.join(w, "checkpoints", str(s)))
  with pytest.raises(checkpointing.CheckpointRestoreError) as e:
    loop.run(_cfg(8), w, _stage())
  msg = str(e.value)
  assert "no checkpoint in" in msg and "restores" in msg
  assert all(f"step {s}:" in msg for s in (2, 4, 6)) and "remove the directory" in msg
  assert cli.is_user_error(e.value) and "\n" not in cli.one_line(e.value)


def test_kill9_replayed_steps_are_logged_once(six_steps, tmp_path):
  """As after a kill -9 between logging step 6 and committing its checkpoint (and in the
  middle of writing a metrics line): the resume replays 5-6 and writes them once."""
  w = _copy(six_steps, tmp_path)
  shutil.rmtree(os.path.join(w, "checkpoints", "6"))
  with open(os.path.join(w, "metrics.jsonl"), "a") as f:
    f.write('{"step": 7, "train/lo')  # cut mid-line
  out = loop.run(_cfg(6), w, _stage())
  assert out["step"] == 6
  assert _metric_steps(w) == [1, 2, 3, 4, 5, 6]
  assert _tb_steps(w) == [1, 2, 3, 4, 5, 6]


def test_async_writer_gets_copies_and_the_run_finishes(tmp_path, monkeypatch):
  """With eval on, the dict handed to clu's async writer is never changed afterwards
  (before: `last.update(ev)` mutated it while the writer thread read it, "dictionary
  changed size during iteration"); the run ends with its eval metrics in the result."""
  handed = []
  real_create = reporting.create_writer

  def spying_writer(logdir):
    w = real_create(logdir)  # the real asynchronous clu writer
    real_write = w.write_scalars

    def write_scalars(step, scalars):
      handed.append((step, scalars, dict(scalars)))
      return real_write(step, scalars)
    w.write_scalars = write_scalars
    return w

  monkeypatch.setattr(reporting, "create_writer", spying_writer)
  stage = _stage()
  stage.eval_fn = lambda model, step: {"eval/score": float(step)}
  c = _cfg(4)
  c.train.eval_every = 2
  out = loop.run(c, str(tmp_path / "w"), stage)
  assert out["step"] == 4 and out["eval/score"] == 4.0 and "stopped" not in out
  assert len(handed) >= 6
  for step, given, snapshot in handed:
    assert given == snapshot, f"the dict handed to the writer at step {step} was changed"
  assert _tb_steps(str(tmp_path / "w"), "eval/score") == [2, 4]


def test_full_disk_during_async_save_is_one_clear_error(tmp_path, monkeypatch, capsys):
  """The async save's OSError(ENOSPC), re-raised by orbax when the loop waits, becomes one
  CheckpointWriteError naming the directory and its free space (one line at the CLI);
  orbax's threads are still shut down."""
  real_wait = ocp.CheckpointManager.wait_until_finished
  closed = []
  real_close = ocp.CheckpointManager.close

  def failing_wait(self):
    real_wait(self)
    if self.all_steps():
      try:
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory))
      except OSError as e:  # orbax re-raises the thread's error wrapped
        raise RuntimeError("Save Finalize thread failed") from e

  def spy_close(self):
    closed.append(True)
    return real_close(self)

  monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failing_wait)
  monkeypatch.setattr(ocp.CheckpointManager, "close", spy_close)
  c = _cfg(4)
  c.checkpoint.async_save = True
  w = str(tmp_path / "w")
  with pytest.raises(checkpointing.CheckpointWriteError) as e:
    loop.run(c, w, _stage())
  assert e.value.errno == errno.ENOSPC and closed
  line = cli.one_line(e.value)
  assert "\n" not in line and "No space left on device" in line and "MiB free" in line
  assert os.path.join(w, "checkpoints") in line
  assert cli.is_user_error(e.value)
  capsys.readouterr()
  assert cli.report("python -m liveinterp.train", e.value) == cli.EXIT_USAGE
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and err.startswith("python -m liveinterp.train: error: checkpoint")
