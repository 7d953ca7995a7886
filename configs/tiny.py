"""`tiny` recipe: `--config=configs/tiny.py:STAGE` (STAGE in configs.base.STAGES)."""

from configs import base


def get_config(stage: str = "demo"):
  c = base.recipe("tiny", stage)
  # Laptop CPU default: the README main job.
  return c
