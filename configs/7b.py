"""`7b` pod recipe: `--config=configs/7b.py:STAGE`.

Mesh: FSDP fills the slice (tensor=4), data-parallel across slices via dcn_data (set
`--config.mesh.dcn_data=N` for N slices). pod_devices=256 is the target used by
`liveinterp.models.summary` for per-device memory estimates.
"""

from configs import base


def get_config(stage: str = "pretrain"):
  c = base.recipe("7b", stage)
  c.dtype = "bfloat16"
  c.mesh.ici_data = 1
  c.mesh.ici_fsdp = -1
  c.mesh.ici_tensor = 4
  c.mesh.pod_devices = 256
  c.train.batch_size = 512
  c.train.learning_rate = 3e-4
  c.train.warmup_steps = 2000
  c.train.steps = 200000
  c.data.seq_len = 4096
  c.tokenizer.text_vocab_size = 48000
  c.checkpoint.every_steps = 1000
  return c
