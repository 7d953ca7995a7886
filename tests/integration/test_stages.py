"""Every training stage on a micro corpus: codec → speech tokens → pretrain → sft, with
bitwise resume (including grain data order) and initialisation from the previous stage."""

import json
import os

import jax
import numpy as np
import pytest

from configs import micro
from liveinterp.train import loop, speech_tokens, stages


@pytest.fixture(scope="module")
def micro_data(tmp_path_factory):
  from data_pipelines import build
  d = str(tmp_path_factory.mktemp("data"))
  build.run("zh-en", "micro", d, model="micro")
  return d, build.tokenizer_prefix(d, "zh-en", "micro", 256, "bpe")


def _cfg(stage, data, run, steps=4):
  d, tok = data
  c = micro.get_config(stage)
  c.data.data_dir, c.tokenizer.model_path = d, tok
  c.data.codes_path = os.path.join(run, "codes.npz")
  c.train.steps, c.train.warmup_steps, c.train.eval_every = steps, 1, steps
  c.checkpoint.every_steps, c.checkpoint.async_save = 2, False
  return c


def _losses(workdir):
  rows = [json.loads(l) for l in open(os.path.join(workdir, "metrics.jsonl"))]
  return {r["step"]: r["train/loss"] for r in rows}  # a re-logged step keeps its last value


def test_stages_end_to_end_with_exact_resume(micro_data, tmp_path):
  run = str(tmp_path)
  # codec: loss goes down over a few steps; dev reconstruction metrics reported
  c = _cfg("codec", micro_data, run, steps=6)
  out = loop.run(c, os.path.join(run, "codec"), stages.build(c))
  codec_losses = _losses(os.path.join(run, "codec"))
  assert codec_losses[6] < codec_losses[1]
  assert np.isfinite(out["eval/mel"]) and out["eval/perplexity"] >= 1.0

  stats = speech_tokens.encode_corpus(_cfg("pretrain", micro_data, run), os.path.join(run, "codec"),
                                      os.path.join(run, "codes.npz"))
  assert stats["records"] == 25 and stats["frames"] > 0
  lookup = speech_tokens.codes_fn_for(_cfg("pretrain", micro_data, run))
  assert lookup is not None
  # The loaded codec carries its trained EMA codebooks (non-param state), not fresh ones.
  from flax import nnx
  from liveinterp.layers.quantizer import CodebookStats
  from liveinterp.models import voice
  from liveinterp.train import restore
  cc = _cfg("codec", micro_data, run)
  loaded = restore.load_model(lambda r: voice.VoiceCodec(cc, rngs=r),
                              os.path.join(run, "codec"), cc)
  fresh = voice.VoiceCodec(cc, rngs=nnx.Rngs(0))
  diff = [float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(
      jax.tree.leaves(nnx.state(loaded, CodebookStats)),
      jax.tree.leaves(nnx.state(fresh, CodebookStats)))]
  assert max(diff) > 0

  # pretrain: 4 steps straight vs 2 steps, "killed", resumed to 4 — identical losses
  a, b = os.path.join(run, "pre_a"), os.path.join(run, "pre_b")
  c = _cfg("pretrain", micro_data, run)
  loop.run(c, a, stages.build(c))
  part = loop.run(c, b, stages.build(c), stop_at=2)
  assert part["stopped_early"]
  loop.run(c, b, stages.build(c))  # a fresh pipeline: data position comes from the checkpoint
  la, lb = _losses(a), _losses(b)
  assert [la[s] for s in range(1, 5)] == [lb[s] for s in range(1, 5)]  # bitwise
  assert la[4] < la[1]

  # sft initialised from pretraining
  c = _cfg("sft", micro_data, run, steps=2)
  c.train.init_from = a
  out = loop.run(c, os.path.join(run, "sft"), stages.build(c))
  assert out["step"] == 2 and np.isfinite(out["train/loss"])

  # evaluation of the run: streaming translation, latency, quality, plots, report
  from liveinterp import evaluate
  report_md = evaluate.run(c, run, split="test", max_examples=3)
  report = json.load(open(report_md.replace(".md", ".json")))
  lat = report["simul"]["text_latency"]
  assert report["examples"] == 3 and lat["episodes"] == 3
  assert report["offline"]["text_latency"]["AL"] > 0
  assert report["policies"]["alignment"]["text_latency"]["LAAL"] > 0
  assert report["codec"]["items"] == 3 and report["codec"]["mel_l1"] > 0
  assert 0 <= report["codec"]["asr_chrf_original"] <= 100
  assert os.path.exists(os.path.join(run, "eval", "latency_quality_test.png"))
  assert os.path.exists(os.path.join(run, "eval", "timeline_test_0.png"))


def test_stage_fails_fast_when_nothing_fits(micro_data, tmp_path):
  c = _cfg("pretrain", micro_data, str(tmp_path))
  c.data.max_audio_slots = 4
  with pytest.raises(ValueError, match="none of the first .* records fits"):
    stages.build(c)
