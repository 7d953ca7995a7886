"""Test set-up: 8 fake CPU devices *before* JAX is imported, repo root on sys.path."""

import atexit
import os
import shutil
import sys
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Identical programs compiled again in one test process (a stage run straight vs killed and
# resumed, the same micro step in several tests) load the first executable instead of
# recompiling: an XLA compile of a micro train step costs 40-270 s on 2 shared cores.
# The cache lives in a fresh directory of this process only (nothing carries over between
# runs, and subprocesses started by tests do not share it); only compiles of a second or
# more are written (JAX's default threshold).
_COMPILE_CACHE = tempfile.mkdtemp(prefix="liveinterp-test-xla-cache-")
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running test (excluded by -m 'not slow')")


@pytest.fixture
def num_devices():
  return jax.device_count()


def skip_if_not_enough_devices(n: int):
  return pytest.mark.skipif(jax.device_count() < n, reason=f"needs {n} devices")
