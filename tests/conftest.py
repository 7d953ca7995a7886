"""Test set-up: 8 fake CPU devices *before* JAX is imported, repo root on sys.path."""

import os
import sys

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


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running test (excluded by -m 'not slow')")


@pytest.fixture
def num_devices():
  return jax.device_count()


def skip_if_not_enough_devices(n: int):
  return pytest.mark.skipif(jax.device_count() < n, reason=f"needs {n} devices")
