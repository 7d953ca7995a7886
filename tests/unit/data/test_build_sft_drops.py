"""The build counts every SFT record that cannot be formatted, by reason, and fails above a
configurable fraction (issue #10, Quality (c)). Tiny synthetic corpus (tone records)."""

import json
import os
import pickle

import numpy as np
import pytest

from data_pipelines import build
from data_pipelines import stream_format as sfmt
from tests.unit.data import test_formats_fixtures as fx

NO_READY = (0, 1, 2)   # train records without ready times (an unaligned corpus)
NO_TGT_TIMES = (3,)    # train record whose target word timings were lost


def broken_examples(pair, size, split, cache_dir, *, seed=0):
  """`fx.fake_examples` (12 train records) with 4 train records SFT cannot format."""
  for i, rec in enumerate(fx.fake_examples(pair, size, split, cache_dir, seed=seed)):
    if split == "train" and i in NO_READY:
      rec = dict(rec, tgt_ready_ms=np.full_like(rec["tgt_ready_ms"], -1.0))
    if split == "train" and i in NO_TGT_TIMES:
      rec = dict(rec, tgt_word_start_ms=np.full_like(rec["tgt_word_start_ms"], -1.0))
    yield rec


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  d = str(tmp_path_factory.mktemp("build_drops"))
  summary = build.run("en-es", "micro", d, example_source=broken_examples,
                      max_sft_drop_fraction=0.5)
  return d, summary


def test_drops_counted_by_reason_in_the_summary(built):
  d, summary = built
  g = summary["sft_drops"]
  assert g["with_speech"]["records"] == g["without_speech"]["records"] == 12
  assert g["with_speech"]["reasons"] == {"no_ready_times": 3, "no_target_word_times": 1}
  assert g["without_speech"]["reasons"] == {"no_ready_times": 3}
  assert g["with_speech"]["dropped"] == 4 and g["without_speech"]["dropped"] == 3
  assert g["worst_variant"] == "with_speech" and g["fraction"] == pytest.approx(4 / 12)
  assert g["max_fraction"] == 0.5 and g["max_len"] == build.model_config("micro").data.seq_len
  assert "fake-enes-train-0000" in g["with_speech"]["first"]["no_ready_times"]
  with open(build.summary_path(d, "en-es", "micro"), encoding="utf-8") as f:
    assert json.load(f)["sft_drops"] == g
  # The length stats name the reasons too (their streams have no max_len).
  ls = summary["length_stats"]["sft"]["simul"]
  assert ls["without_speech"]["error_reasons"] == {"no_ready_times": 3}


def test_counts_match_what_the_sft_pipeline_drops(built):
  """The count is of what `pipelines.StreamTransform` really drops (no example)."""
  from data_pipelines import pipelines
  from data_pipelines import tokenizer as tokmod
  _, summary = built
  cfg = build.model_config("micro")
  tok = tokmod.Tokenizer.load(summary["tokenizer"])
  recs = list(broken_examples("en-es", "micro", "train", None))
  t = pipelines.StreamTransform(tok, sfmt.StreamSpec.from_config(cfg), "sft",
                                policy=cfg.data.policy, wait_k=cfg.data.wait_k)
  rng = np.random.default_rng(0)
  dropped = sum(not t.random_map(r, rng) for r in recs)
  assert dropped == summary["sft_drops"]["without_speech"]["dropped"] == 3
  assert t.drops == {f"format:{k}": v for k, v in
                     summary["sft_drops"]["without_speech"]["reasons"].items()}


def test_build_fails_above_the_limit(built):
  d, _ = built
  with pytest.raises(build.BuildError,
                     match=r"drops 33\.3% of the train records \(4 of 12, with speech.*"
                           r"max_sft_drop_fraction=20\.0%.*no_ready_times': 3"):
    build.run("en-es", "micro", d, example_source=broken_examples,
              max_sft_drop_fraction=0.2)
  # The summary is written before the build fails, with the limit it failed against.
  with open(build.summary_path(d, "en-es", "micro"), encoding="utf-8") as f:
    assert json.load(f)["sft_drops"]["max_fraction"] == 0.2
  with pytest.raises(ValueError, match=r"max_sft_drop_fraction=1\.5"):
    build.sft_drop_gate(build.length_stats(d, "en-es", "micro")["sft_drops"], 1.5)


def test_clean_corpus_has_no_drops(tmp_path):
  summary = build.run("en-es", "micro", str(tmp_path), example_source=fx.fake_examples,
                      max_sft_drop_fraction=0.0)
  g = summary["sft_drops"]
  assert g["fraction"] == 0.0 and g["with_speech"]["reasons"] == {}


def test_config_override_reaches_the_build(tmp_path):
  """`config_overrides` (the CLI's --config.a.b=v) change the config the build measures
  with: a shorter data.seq_len is the SFT max_len, and the stats are recomputed, not
  reused, when the overrides change."""
  d = str(tmp_path)
  summary = build.run("en-es", "micro", d, example_source=fx.fake_examples,
                      max_sft_drop_fraction=1.0, config_overrides=["data.seq_len=40"])
  assert summary["config_overrides"] == ["data.seq_len=40"]
  assert summary["sft_drops"]["max_len"] == 40 != build.model_config("micro").data.seq_len
  assert summary["sft_drops"]["with_speech"]["dropped"] > 0  # 40 tokens hold no talk
  again = build.run("en-es", "micro", d, example_source=fx.fake_examples,
                    max_sft_drop_fraction=1.0)
  assert not again["length_stats_reused"]
  assert again["sft_drops"]["max_len"] == build.model_config("micro").data.seq_len
  with pytest.raises(ValueError, match="override no_such.field: unknown field 'no_such'"):
    build.run("en-es", "micro", str(tmp_path / "x"), example_source=fx.fake_examples,
              config_overrides=["no_such.field=1"])
  assert not os.path.exists(tmp_path / "x")


def test_format_error_reason_survives_pickling():
  e = sfmt.FormatError("record x: no", reason="no_ready_times")
  e2 = pickle.loads(pickle.dumps(e))
  assert e2.reason == "no_ready_times" and str(e2) == "record x: no"
  assert sfmt.FormatError("y").reason == "other"
  rec = next(broken_examples("en-es", "micro", "train", None))
  with pytest.raises(sfmt.FormatError) as err:
    sfmt.ready_times(rec)
  assert err.value.reason == "no_ready_times"
  assert os.path.basename(build.summary_path("/d", "en-es", "micro")) == \
      "build_summary_en_es_micro.json"
