"""RL stage configs: rl1/rl2, the ablations of configs/base.py RL_ABLATIONS, where each
recipe step starts from, and the RL-specific checks (each naming its field)."""

import pytest

from configs import base, micro, tiny
from liveinterp.common import config as config_lib
from liveinterp.rl import rewards, trainer
from liveinterp.train import stage_configs as recipes


def test_stages_and_ablations_resolve():
  assert tiny.get_config("rl1").rl.multi_turn is False
  assert tiny.get_config("rl2").rl.multi_turn is True
  time_only = tiny.get_config("rl_time_only")
  assert time_only.stage == "rl1"
  rc = rewards.RewardConfig.from_config(time_only)
  assert (rc.w_time, rc.w_det, rc.w_init, rc.w_qual, rc.w_fmt) == (1.0, 0.0, 0.0, 0.0, 0.0)
  assert rc.time_credit == "backlog"   # as it was run (runs/tiny_v3/rl_time_only)
  inc = tiny.get_config("rl_time_only_increment")
  assert inc.stage == "rl1" and inc.rl.time_credit == "increment"
  assert dict(inc.rl, time_credit="backlog") == dict(time_only.rl)   # nothing else differs
  assert tiny.get_config("rl1").rl.time_credit == "backlog"
  assert tiny.get_config("rl1").rl.kl_arm_fraction == 0.5
  lag = rewards.RewardConfig.from_config(tiny.get_config("rl_lag_only"))
  assert lag.multi_turn and lag.w_lag == 1.0 and lag.w_seq == 0.0 and lag.w_qual == 0.0
  one = tiny.get_config("rl_one_stage")
  assert one.stage == "rl2" and one.rl.multi_turn and one.rl.w_qual > 0
  assert tiny.get_config("rl_fixed_beta").rl.kl_adaptive is False
  for name in ("rl1", "rl2", *base.RL_ABLATIONS):
    c = tiny.get_config(name)
    config_lib.validate(c)
    assert c.train.steps == tiny.BUDGETS[name][0] > 0
  # where the recipe starts each one (and its KL reference)
  assert recipes.init_from("rl1", "R") == "R/sft"
  assert recipes.init_from("rl2", "R") == "R/rl1"
  assert all(recipes.init_from(n, "R") == "R/sft" for n in base.RL_ABLATIONS)


@pytest.mark.parametrize("field,value,match", [
    ("train.init_from", "", "train.init_from is empty"),
    ("rl.top_p", 0.9, "rl.top_p=0.9: must be 1.0"),
    ("rl.temperature", 0.0, "rl.temperature=0.0: must be > 0"),
    ("rl.ppo_minibatches", 3, "not divisible by rl.ppo_minibatches=3"),
    ("rl.kl_target", 0.0, "rl.kl_target=0.0: must be > 0"),
    ("rl.w_lag", float("nan"), "rl.w_lag"),
    ("rl.kl_arm_fraction", 1.5, r"rl.kl_arm_fraction=1.5: must be a finite number in \[0, 1\]"),
    ("rl.kl_arm_fraction", -0.1, "rl.kl_arm_fraction=-0.1"),
    ("rl.kl_arm_fraction", float("nan"), "rl.kl_arm_fraction=nan"),
    ("rl.kl_arm_fraction", float("inf"), "rl.kl_arm_fraction=inf"),
    ("rl.time_credit", "turn", "rl.time_credit='turn'"),
    ("rl.advantage", "vtrace", "rl.advantage='vtrace': expected one of"),
    ("rl.group_size", 3, "rl.group_size=3: must be a positive integer dividing"),
    ("rl.group_size", 0, "rl.group_size=0"),
    ("rl.advantage", "group", "rl.advantage='group' needs rl.group_size >= 2"),
    ("rl.kl_tokens", "speech", "rl.kl_tokens=.speech.: expected one of"),
])
def test_rl_checks_name_the_field(field, value, match):
  c = micro.get_config("rl1")
  c.train.init_from = "/somewhere/sft"
  section, key = field.split(".")
  c[section][key] = value
  with pytest.raises(ValueError, match=match):
    trainer.check_config(c)
