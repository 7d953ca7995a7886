"""`tiny` recipe: `--config=configs/tiny.py:STAGE` (STAGE in liveinterp.common.config.STAGES).

The laptop-CPU default that `launch/main.sh` runs end to end (`liveinterp.recipe`):
zh→en interpreting-drill corpus (`laptop` build: generated, compositional sentences over a
closed ~300-word vocabulary, 4 espeak voices) → codec → speech tokens → pretraining (ASR +
ST, text only) → SFT (interleaved text + speech turns) → evaluation on held-out drills.
Sequence lengths, audio slots and the decoder's turn budget are sized from the build's
recorded length statistics (`data.size_from_data`), so nothing is truncated.
Step budgets are per stage and sized for a 2-core machine. `data.build=tiny` (real HSK +
LibreOffice text, 18 voices) and `full` are the harder corpora for real hardware.
"""

from configs import base

BUDGETS = {  # stage: (steps, peak learning rate, warmup)
    "demo": (200, 3e-3, 20),
    "codec": (200, 2e-3, 20),
    "pretrain": (500, 2e-3, 40),
    "sft_text": (300, 1e-3, 20),   # SFT on text-only turns first (recipe step sft_text)
    "sft": (250, 1e-3, 20),
    "rl1": (20, 5e-5, 0),     # PPO iterations (train.batch_size episodes each)
    # rl2: 20 iterations at 1e-4 with the stage-2 reward/KL settings of configs/base.py
    # RL2_SETTINGS (issue #13 tuning: runs/rl_tune_b; 12 at 5e-5 moved LAAL -5%)
    "rl2": (20, 1e-4, 0),
}
for _name in base.RL_ABLATIONS:  # ablations get the RL budget
  BUDGETS[_name] = BUDGETS["rl1"]


def get_config(stage: str = "demo"):
  c = base.recipe("tiny", stage)
  steps, lr, warmup = BUDGETS.get(stage, BUDGETS["demo"])
  c.train.steps, c.train.learning_rate, c.train.warmup_steps = steps, lr, warmup
  c.train.eval_every = max(50, steps // 2)
  c.train.eval_examples = 32
  c.checkpoint.every_steps = 100
  c.codec.dead_code_steps = 10
  c.data.build = "laptop"
  c.tokenizer.text_vocab_size = 1024  # BPE over the drills: every English word one piece
  c.data.size_from_data = True
  c.data.task_weights = dict(asr=1.0, st=1.0, tts=0.0, s2st=0.0)
  c.train.speech_weight = 0.25  # sft turns are ~84% codec tokens: text gets ~half the loss
  return c
