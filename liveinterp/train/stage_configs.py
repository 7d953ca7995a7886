"""Recipe configs for each stage, with the paths that connect the steps of a run."""

from __future__ import annotations

import os

from liveinterp.common import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _round_up(n: int, k: int) -> int:
  return -(-int(n) // k) * k


def size_from_data(c, stats: dict) -> dict:
  """Sets `data.seq_len`, `data.max_audio_slots` and `stream.max_turn_tokens` of config
  `c` from the stream-length statistics the corpus build recorded
  (`data_pipelines.build.length_stats`): the longest stream of the stage's tasks, the
  most audio slots and the longest turn, rounded up to whole chunks of audio slots, so
  that no training example is truncated or dropped and the decoder's turn budget covers
  every trained turn. Returns what was chosen (and from which statistic)."""
  from data_pipelines import stream_format as sfmt  # pylint: disable=g-import-not-at-top
  spec = sfmt.StreamSpec.from_config(c)
  want = {"chunk_ms": spec.chunk_ms, "slot_ms": spec.slot_ms, "codec_hop": spec.codec_hop,
          "num_codebooks": spec.num_codebooks}
  got = {k: stats.get("spec", {}).get(k) for k in want}
  if got != want:
    raise ValueError(f"the build's length stats were computed for stream geometry {got}, "
                     f"this config has {want}: rebuild the corpus with this model size")
  speech = "without_speech" if c.data.get("text_only", False) else "with_speech"
  if c.stage in ("sft", "rl1", "rl2"):  # RL streams are SFT streams, sampled
    rows = [stats["sft"]["simul"][speech]]
  else:
    # tasks that need speech (tts, s2st) have no text-only rows: text-only drops them
    rows = [v[speech] for t, v in stats["pretrain"].items()
            if c.data.task_weights.get(t, 0) > 0 and speech in v]
  spc = spec.slots_per_chunk
  seq = max(r["stream_len"]["max"] for r in rows)
  slots = max(r["audio_slots"]["max"] for r in rows)
  c.data.seq_len = _round_up(seq, spc)
  c.data.max_audio_slots = max(spc, _round_up(slots, spc))
  chosen = {"seq_len": c.data.seq_len, "max_audio_slots": c.data.max_audio_slots,
            "longest_stream": seq, "most_audio_slots": slots, "speech": speech}
  turn = stats["sft"]["simul"][speech].get("turn_len", {}).get("max")
  if turn:
    c.stream.max_turn_tokens = _round_up(turn + 1, 8)
    chosen["max_turn_tokens"] = c.stream.max_turn_tokens
    chosen["longest_turn"] = turn
  return chosen


def stage_config(recipe, stage, run_dir, data_dir, tokenizer_prefix, scale=1.0,
                 overrides=()):
  """The recipe's `stage` config (`config.load(f"{recipe}:{stage}", overrides)`: the
  `--config.a.b=v` overrides of the command line apply to every stage) with the paths of
  a run; with `data.size_from_data`, sequence lengths and the turn budget come from the
  build's length statistics."""
  c = config_lib.load(f"{recipe}:{stage}", overrides)
  c.data.data_dir = data_dir
  if c.data.get("size_from_data", False) and c.stage in ("pretrain", "sft", "rl1", "rl2"):
    from data_pipelines import build  # pylint: disable=g-import-not-at-top
    size_from_data(c, build.length_stats(data_dir, c.data.pair, c.data.build))
  c.tokenizer.model_path = tokenizer_prefix
  c.data.codes_path = os.path.join(run_dir, "speech_codes.npz")
  if c.stage == "asr_judge" and c.judge.codec_clips and not c.judge.codec_dir:
    c.judge.codec_dir = os.path.join(run_dir, "codec")  # the run's codec (step codec)
  if scale != 1.0:
    c.train.steps = max(2, int(c.train.steps * scale))
    c.train.warmup_steps = min(c.train.warmup_steps, c.train.steps // 2)
    c.train.eval_every = max(1, min(c.train.eval_every, c.train.steps))
    c.checkpoint.every_steps = max(1, min(c.checkpoint.every_steps, c.train.steps))
  c.train.init_from = init_from(stage, run_dir)
  return c


def init_from(stage: str, run_dir: str) -> str:
  """Where a recipe stage starts: sft_text from pretrain; sft from sft_text when that
  step has finished in this run (result.json), else from pretrain; rl1 from sft, rl2
  from rl1 (each RL stage's KL reference); others from scratch."""
  if stage in ("rl1", "rl2"):
    return os.path.join(run_dir, {"rl1": "sft", "rl2": "rl1"}[stage])
  if stage.startswith("rl_"):  # ablations (configs/base.py RL_ABLATIONS) start from SFT
    return os.path.join(run_dir, "sft")
  if stage == "sft_text":
    return os.path.join(run_dir, "pretrain")
  if stage == "sft":
    text = os.path.join(run_dir, "sft_text")
    if os.path.exists(os.path.join(text, "result.json")):
      return text
    return os.path.join(run_dir, "pretrain")
  return ""
