"""`tiny` recipe: `--config=configs/tiny.py:STAGE` (STAGE in liveinterp.common.config.STAGES).

The laptop-CPU default that `launch/main.sh` runs end to end (`liveinterp.recipe`):
zh→en corpus (tiny build) → codec → speech tokens → pretraining → SFT → evaluation.
Step budgets are per stage and sized for a 2-core machine (~1 h in all).
"""

from configs import base

BUDGETS = {  # stage: (steps, peak learning rate, warmup)
    "demo": (200, 3e-3, 20),
    "codec": (400, 1e-3, 20),
    "pretrain": (500, 2e-3, 40),
    "sft": (200, 1e-3, 20),
    "rl1": (100, 1e-5, 0),
    "rl2": (100, 1e-5, 0),
}


def get_config(stage: str = "demo"):
  c = base.recipe("tiny", stage)
  steps, lr, warmup = BUDGETS.get(stage, BUDGETS["demo"])
  c.train.steps, c.train.learning_rate, c.train.warmup_steps = steps, lr, warmup
  c.train.eval_every = max(50, steps // 4)
  c.checkpoint.every_steps = 50
  return c
