"""Recipe configs for each stage, with the paths that connect the steps of a run."""

from __future__ import annotations

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def recipe_config(recipe: str, stage: str):
  spec = importlib.util.spec_from_file_location(
      f"recipe_{recipe}", os.path.join(ROOT, "configs", f"{recipe}.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(stage)


def stage_config(recipe, stage, run_dir, data_dir, tokenizer_prefix, scale=1.0):
  c = recipe_config(recipe, stage)
  c.data.data_dir = data_dir
  c.tokenizer.model_path = tokenizer_prefix
  c.data.codes_path = os.path.join(run_dir, "speech_codes.npz")
  if scale != 1.0:
    c.train.steps = max(2, int(c.train.steps * scale))
    c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps // 2)
    c.train.eval_every = max(1, min(c.train.eval_every, c.train.steps))
    c.checkpoint.every_steps = max(1, min(c.checkpoint.every_steps, c.train.steps))
  if stage == "sft":
    c.train.init_from = os.path.join(run_dir, "pretrain")
  return c
