"""`validate` warns when a stream stage trains on sequences that fit in the LLM's
attention window (issue #10: training never sees the sliding-window / sink regime that
inference runs in on every stream longer than the window)."""

import warnings

import pytest

from configs import base
from liveinterp.common import config as config_lib


def _cfg(stage, seq_len, window):
  c = base.recipe("tiny", stage)
  c.data.seq_len, c.llm.window = seq_len, window
  return c


def _warnings(c):
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    config_lib.validate(c)
  return [w for w in caught if issubclass(w.category, config_lib.ConfigWarning)]


@pytest.mark.parametrize("stage", config_lib.STREAM_STAGES)
@pytest.mark.parametrize("seq_len,window", [(256, 512), (512, 512)])
def test_stream_stage_inside_the_window_warns(stage, seq_len, window):
  with pytest.warns(config_lib.ConfigWarning, match=r"data.seq_len=\d+ <= llm.window"):
    config_lib.validate(_cfg(stage, seq_len, window))
  with pytest.warns(config_lib.ConfigWarning):
    assert config_lib.check_window_regime(_cfg(stage, seq_len, window))


@pytest.mark.parametrize("stage,seq_len,window", [
    ("sft", 1024, 512), ("rl1", 256, 128), ("rl2", 768, 256),  # longer than the window
    ("pretrain", 256, 512), ("codec", 256, 512), ("demo", 256, 512)])  # not stream stages
def test_no_warning_otherwise(stage, seq_len, window):
  assert _warnings(_cfg(stage, seq_len, window)) == []
  assert not config_lib.check_window_regime(_cfg(stage, seq_len, window))


def test_warning_points_at_the_caller():
  caught = _warnings(_cfg("sft", 256, 512))
  assert len(caught) == 1 and caught[0].filename == __file__
  assert "sliding-window/sink regime" in str(caught[0].message)
