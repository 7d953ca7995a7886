"""`python -m liveinterp.evaluate` without --config evaluates a run with the config the run
was trained with (liveinterp/evaluate.run_config), never tiny's by default."""

import pytest

from liveinterp import evaluate
from liveinterp.common import cli


def test_the_stage_config_then_the_run_config_then_a_user_error(tmp_path):
  with pytest.raises(cli.UserError, match=r"--config is required: .* has no rl2/config.json "
                     r"nor config.json"):
    evaluate.run_config(str(tmp_path), "rl2")
  (tmp_path / "config.json").write_text("{}")
  assert evaluate.run_config(str(tmp_path), "rl2") == str(tmp_path / "config.json")
  (tmp_path / "rl2").mkdir()
  (tmp_path / "rl2" / "config.json").write_text("{}")
  assert evaluate.run_config(str(tmp_path), "rl2") == str(tmp_path / "rl2" / "config.json")
  assert evaluate.run_config(str(tmp_path), "sft") == str(tmp_path / "config.json")
