"""`build.run` records stream length stats of the train split (micro build, real corpus)."""

import json
import os

import numpy as np
import pytest

from data_pipelines import build, stream_format as sfmt
from data_pipelines import tokenizer as tokmod


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("build_micro"))
  summary = build.run("zh-en", "micro", d)
  return d, summary


def _records(summary):
  import tensorflow_datasets as tfds
  from data_pipelines.tfds_builders import common
  src = tfds.data_source(summary["tfds_name"].rsplit("/", 1)[0], split="train",
                         data_dir=os.path.dirname(os.path.dirname(os.path.dirname(
                             summary["tfds_dir"]))), download=False, try_gcs=False)
  return [common.decode_example(src[i]) for i in range(len(src))]


def test_length_stats_recorded_and_loadable(micro):
  d, summary = micro
  ls = build.length_stats(d, "zh-en", "micro")
  assert ls == summary["length_stats"]
  with open(build.summary_path(d, "zh-en", "micro"), encoding="utf-8") as f:
    assert json.load(f)["length_stats"] == ls
  assert ls["records"] == ls["split_records"] == summary["splits"]["train"]
  assert not ls["sampled"] and ls["model"] == "micro"
  assert set(ls["sft"]) == {"simul"} and set(ls["pretrain"]) == {"asr", "st", "tts", "s2st"}
  assert set(ls["sft"]["simul"]) == {"with_speech", "without_speech"}
  assert set(ls["pretrain"]["tts"]) == {"with_speech"}  # no TTS stream without speech
  for stage in ("sft", "pretrain"):
    for task, variants in ls[stage].items():
      for v, s in variants.items():
        d_ = s["stream_len"]
        assert d_["p50"] <= d_["p90"] <= d_["p99"] <= d_["max"], (task, v)
        assert s["n"] == ls["records"] and s["errors"] == 0
  sim = ls["sft"]["simul"]
  assert sim["with_speech"]["turn_len"]["max"] > sim["without_speech"]["turn_len"]["max"]
  assert summary["knobs"]["num_voices"] is None and summary["knobs"]["max_seconds"] == 30.0
  with pytest.raises(FileNotFoundError, match="data_pipelines.build"):
    build.length_stats(d, "zh-en", "tiny")
  assert not summary["length_stats_reused"]
  again = build.run("zh-en", "micro", d)  # everything reused, the stats too
  assert again["length_stats_reused"] and again["length_stats"] == ls


def test_length_stats_match_direct_computation(micro):
  d, summary = micro
  ls = summary["length_stats"]
  cfg = build.model_config("micro")
  tok = tokmod.Tokenizer.load(summary["tokenizer"])
  spec = sfmt.StreamSpec.from_config(cfg, max_len=None, speech_placeholder="zeros")
  recs = _records(summary)
  simul = [sfmt.simul_example(r, tok, spec, policy=cfg.data.policy, k=cfg.data.wait_k)
           for r in recs]
  lens = [len(e["tokens"]) for e in simul]
  turns = [len(ids) for e in simul for _, ids in sfmt.turns(e)]
  got = ls["sft"]["simul"]["with_speech"]
  assert got["stream_len"]["max"] == max(lens)
  assert got["stream_len"]["p50"] == int(np.percentile(lens, 50, method="higher"))
  assert got["turn_len"]["max"] == max(turns)
  assert got["audio_slots"]["max"] == max(int(e["audio_slot_mask"].sum()) for e in simul)
  s2st = [len(sfmt.pretrain_example(r, tok, spec, "s2st")["tokens"]) for r in recs]
  assert ls["pretrain"]["s2st"]["with_speech"]["stream_len"]["max"] == max(s2st)
  assert ls["text_tokens"]["tgt"]["max"] == max(len(tok.encode_text(r["tgt_text"]))
                                                for r in recs)


def test_length_stats_sample(micro):
  d, summary = micro
  tok = tokmod.Tokenizer.load(summary["tokenizer"])
  cfg = build.model_config("micro")
  recs = _records(summary)
  full = build.compute_length_stats(recs, tok, cfg)
  assert full["sft"] == summary["length_stats"]["sft"]
  part = build.compute_length_stats(recs[:5], tok, cfg)
  assert part["sft"]["simul"]["with_speech"]["n"] == 5
