"""`python -m liveinterp.train --config=configs/<recipe>.py:<stage> --workdir=DIR`.

The same command runs under every launcher in launch/ (one process, N local processes,
TPU VM workers, GKE/xpk, SLURM): distributed set-up is detected from flags/environment.

Before anything is built the config is validated (`config.validate`, with the device
count) and the files the stage reads are checked (`config.check_inputs`: the corpus build
in `data.data_dir`, the tokenizer, `train.init_from`), and `--workdir` must be writable.

Exit codes (every process of a job exits with the same one; `loop.exit_code`):
  0   the stage finished (or stopped at `--stop_at`); result.json has its metrics.
  1   a crash (a bug): the traceback says where.
  2   a user error (bad flag or config value, missing input, unwritable --workdir):
      one line `python -m liveinterp.train: error: ...` (`--verbose`: with the traceback,
      liveinterp/common/cli.py); nothing was built or written.
  3   diverged: too many non-finite (skipped) steps, see `train.max_consecutive_skipped`
      and `train.max_skipped_fraction`; result.json says why ("stopped": "diverged") and
      nothing was saved at the stop. Lower `train.learning_rate` or check the data.
  75  preempted (sysexits EX_TEMPFAIL, "temporary failure, retry"): SIGTERM arrived, a
      checkpoint was saved, result.json has "stopped": "preempted". Re-run the same
      command to resume; schedulers should requeue on 75 (SLURM: `--requeue` jobs, or
      `scontrol requeue $SLURM_JOB_ID` when srun returns 75; GKE/JobSet: a
      podFailurePolicy rule `onExitCodes: {operator: In, values: [75]}` with action
      `Ignore` restarts the pod without counting a failure; TPU VM: re-run the launch
      command while it exits 75).
"""

from __future__ import annotations

import json
import os
import warnings

from absl import flags, logging

from liveinterp.common import cli, config as config_lib, distributed

# `--config=configs/<recipe>.py:<stage>` plus `--config.a.b=v` overrides, loaded by
# config.load (the overrides are taken off the command line by cli.run).
_CONFIG = flags.DEFINE_string("config", None, "config file[:stage] (config.load spec: "
                              "configs/<size>.py:<stage>, a size name, a path or a run's "
                              "config.json); override fields with --config.a.b=v")
_WORKDIR = flags.DEFINE_string("workdir", None, "stage output directory", required=True)
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0")
_NPROC = flags.DEFINE_integer("num_processes", None, "processes in the job")
_PID = flags.DEFINE_integer("process_id", None, "this process's index")
_CPU = flags.DEFINE_integer("cpu_devices", 0, "CPU devices per process (0 = default)")
_STOP_AT = flags.DEFINE_integer("stop_at", None, "stop this run at this step (checkpointed)")


def main(argv):
  del argv
  # Metrics already reach the console through the progress line and TensorBoard through
  # clu; keep absl's INFO chatter (including clu's logging writer) out of the console.
  logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None:
    raise cli.UserError("--config is required: --config=configs/<recipe>.py:<stage>")
  # Everything that can be checked before any work (issue #12): values (overrides
  # included), then files. validate() again for its warnings (load does not warn).
  config = config_lib.load(_CONFIG.value, cli.config_overrides())
  config_lib.validate(config)
  # Its warnings are out now; the device check below and loop.run validate again.
  warnings.simplefilter("ignore", config_lib.ConfigWarning)
  config_lib.check_inputs(config)
  cli.check_writable_dir(_WORKDIR.value, "--workdir")
  from liveinterp.train import stages  # pylint: disable=g-import-not-at-top
  rl = config.stage in ("rl1", "rl2")  # liveinterp.rl.trainer: rollouts + PPO updates
  if not rl and config.stage not in stages.available():
    raise cli.UserError(f"stage={config.stage!r} has no trainer yet; available: "
                        f"{', '.join(stages.available())}")
  distributed.initialize(_COORD.value, _NPROC.value, _PID.value, cpu_devices=_CPU.value)
  # Imported after distributed init: nothing may touch JAX devices before it.
  import jax  # pylint: disable=g-import-not-at-top
  from liveinterp.common import reporting  # pylint: disable=g-import-not-at-top
  from liveinterp.train import loop  # pylint: disable=g-import-not-at-top
  config_lib.validate(config, num_devices=jax.device_count())  # mesh and batch vs devices
  workdir = os.path.abspath(_WORKDIR.value)
  if jax.process_index() == 0:  # the resolved config of this run (config.load reads it)
    config_lib.save(config, os.path.join(workdir, "config.json"))
  if rl:
    from liveinterp.rl import trainer  # pylint: disable=g-import-not-at-top
    trainer.check_config(config)
    result = trainer.run(config, workdir, stop_at=_STOP_AT.value)
  else:
    result = loop.run(config, workdir, stages.build(config), stop_at=_STOP_AT.value)
  if reporting.jax.process_index() == 0:
    with open(os.path.join(workdir, "result.json"), "w") as f:
      json.dump({k: v for k, v in result.items()}, f, indent=1)
  code = loop.exit_code(result)  # the loop printed why when it is not 0
  if code == 0:
    reporting.console(f"[{config.stage}] done at step {result['step']}; outputs in {workdir}")
  return code  # app.run exits with it


if __name__ == "__main__":
  cli.run(main, prog="python -m liveinterp.train", config_overrides=True)
