"""benchmarks/cpu_pinning.py: one core pins the process and makes XLA single-threaded;
0 or too many leaves it alone. Run in a child process (affinity is per process)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs")
def test_pin_one_core_and_none():
  code = ("import os; from benchmarks.cpu_pinning import pin_cores; "
          "n = len(os.sched_getaffinity(0)); assert pin_cores(0) == sorted(os.sched_getaffinity(0)); "
          "assert 'XLA_FLAGS' not in os.environ or 'eigen' not in os.environ['XLA_FLAGS']; "
          "got = pin_cores(1); assert len(got) == 1 and os.sched_getaffinity(0) == set(got); "
          "assert '--xla_cpu_multi_thread_eigen=false' in os.environ['XLA_FLAGS']; print('ok')")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env, PYTHONPATH=ROOT),
                       capture_output=True, text=True, timeout=60)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
