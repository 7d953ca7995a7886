"""benchmarks/model_summary.py: the README's model-size table, and the compiled S2ST step
(the stages' own loss, `stream_lm.loss_fn`) on the 8 fake devices, on the micro size."""

import json
import os

import jax
import pytest

from benchmarks import model_summary
from liveinterp.common import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(ROOT, "benchmarks", "results", "model_summary.json")


def _recorded():
  with open(RESULTS, encoding="utf-8") as f:
    return json.load(f)


def test_summary_row_has_the_recorded_columns():
  micro = next(r for r in _recorded() if r["size"] == "micro")
  row = model_summary.summarize("micro")
  assert list(row) == list(micro)
  assert row["params/s2st"] == (row["params/encoder"] + row["params/adapter"]
                                + row["params/llm"]) > 0


@pytest.mark.slow  # ~1 min: compiles forward + backward + AdamW for 8 devices
def test_compiled_memory_of_the_real_train_step():
  assert jax.device_count() >= 8
  got = model_summary.compiled_memory(config_lib.load("micro:pretrain"), batch=8,
                                      seq=64)
  recorded = next(r for r in _recorded() if any(k.startswith("compiled/") for k in r))
  assert sorted(f"compiled/{k}" for k in got) == sorted(
      k for k in recorded if k.startswith("compiled/"))
  assert got["batch"] == 8 and got["seq"] == 64
  assert got["argument_GiB"] > 0 and got["temp_GiB"] > 0
