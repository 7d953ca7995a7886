"""`micro` recipe: `--config=configs/micro.py:STAGE` (STAGE in configs.base.STAGES)."""

from configs import base


def get_config(stage: str = "demo"):
  c = base.recipe("micro", stage)
  # Test-sized: a few steps in seconds on CPU.
  c.train.batch_size = 8
  c.train.steps = 4
  c.train.warmup_steps = 1
  c.train.log_every = 1
  c.checkpoint.every_steps = 2
  c.data.seq_len = 256
  c.data.max_audio_slots = 64
  c.data.build = "micro"
  c.tokenizer.text_vocab_size = 256
  c.stream.chunk_ms = 320
  return c
