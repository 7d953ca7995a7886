"""`7b` pod recipe: `--config=configs/7b.py:STAGE`.

Mesh: FSDP fills the slice (tensor=4), data-parallel across slices via dcn_data (set
`--config.mesh.dcn_data=N` for N slices). pod_devices=256 is the target used by
`benchmarks.model_summary` for per-device memory estimates.
"""

from configs import base


def get_config(stage: str = "pretrain"):
  return base.pod_recipe("7b", stage, pod_devices=256, tensor=4, batch_size=512,
                         learning_rate=3e-4, text_vocab_size=48000)
