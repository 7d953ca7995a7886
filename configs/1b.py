"""`1b` pod recipe: `--config=configs/1b.py:STAGE`.

Mesh: FSDP fills the slice (tensor=1), data-parallel across slices via dcn_data (set
`--config.mesh.dcn_data=N` for N slices). pod_devices=64 is the target used by
`benchmarks.model_summary` for per-device memory estimates.
"""

from configs import base


def get_config(stage: str = "pretrain"):
  return base.pod_recipe("1b", stage, pod_devices=64, tensor=1, batch_size=256,
                         learning_rate=6e-4, text_vocab_size=32000)
