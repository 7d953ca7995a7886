"""The environment of a process a test starts (a CLI, a benchmark, a second host)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEVICE_COUNT = "--xla_force_host_platform_device_count="


def subprocess_env(**extra: str) -> dict:
  """This process's environment, so the child compiles as the suite does and shares its
  persistent compilation cache (tests/conftest.py), with the repository on PYTHONPATH,
  CPU only, and without the suite's 8-fake-device flag: each command asks for its own
  devices (`--cpu_devices`). `extra` overrides or adds variables."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             PYTHON=sys.executable)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith(_DEVICE_COUNT)]
  env["XLA_FLAGS"] = " ".join(flags)
  if not env["XLA_FLAGS"]:
    del env["XLA_FLAGS"]
  env.update(extra)
  return env
