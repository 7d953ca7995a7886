"""`small` recipe: `--config=configs/small.py:STAGE` (STAGE in configs.base.STAGES)."""

from configs import base


def get_config(stage: str = "demo"):
  c = base.recipe("small", stage)
  # A single host or small slice; bf16 compute.
  c.dtype = "bfloat16"
  c.train.batch_size = 64
  c.train.learning_rate = 1e-3
  c.data.seq_len = 1024
  c.tokenizer.text_vocab_size = 12000
  return c
