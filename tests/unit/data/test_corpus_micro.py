"""The corpus entry point on the micro size (HSK only, no apt): exact record schema,
splits, talks, reversed pairs, counted skips and the apt-failure fallback."""

import numpy as np
import pytest

from data_pipelines import corpus, fetch, speakers
from data_pipelines.synthesis import SynthesisError

LIST_KEYS = {"src_words", "tgt_words"}
STR_KEYS = {"id", "source", "speaker", "src_lang", "tgt_lang", "src_text", "tgt_text"}
F32_KEYS = {"src_word_start_ms", "src_word_end_ms", "tgt_word_start_ms",
            "tgt_word_end_ms", "tgt_ready_ms"}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("corpus_cache"))


@pytest.fixture(scope="module")
def micro_train(cache):
  stats = {}
  return list(corpus.iter_examples("zh-en", "micro", "train", cache, seed=0,
                                   stats=stats)), stats


def check_record(ex, is_talk=False):
  assert set(ex) == set(corpus.EXAMPLE_KEYS) and len(ex) == len(corpus.EXAMPLE_KEYS)
  for k in STR_KEYS:
    assert isinstance(ex[k], str) and ex[k], k
  for k in LIST_KEYS:
    assert isinstance(ex[k], list) and all(isinstance(w, str) and w for w in ex[k]), k
  for k in ("src_audio", "tgt_audio"):
    a = ex[k]
    assert isinstance(a, np.ndarray) and a.dtype == np.int16 and a.ndim == 1
    assert np.abs(a).max() > 1000, k  # speech, not silence
  for k in F32_KEYS:
    assert isinstance(ex[k], np.ndarray) and ex[k].dtype == np.float32, k
  n, m = len(ex["src_words"]), len(ex["tgt_words"])
  assert ex["src_word_start_ms"].shape == ex["src_word_end_ms"].shape == (n,)
  for k in ("tgt_word_start_ms", "tgt_word_end_ms", "tgt_ready_ms"):
    assert ex[k].shape == (m,), k
  src_ms = 1000.0 * len(ex["src_audio"]) / 16000
  tgt_ms = 1000.0 * len(ex["tgt_audio"]) / 16000
  assert np.all(np.diff(ex["src_word_start_ms"]) >= 0)
  assert np.all(ex["src_word_start_ms"] >= 0) and ex["src_word_end_ms"][-1] <= src_ms
  assert np.all(np.diff(ex["tgt_word_start_ms"]) >= 0)
  assert ex["tgt_word_end_ms"][-1] <= tgt_ms
  assert np.all(np.diff(ex["tgt_ready_ms"]) >= 0)
  assert ex["tgt_ready_ms"].max() <= src_ms
  al = ex["alignment"]
  assert isinstance(al, np.ndarray) and al.dtype == np.int32 and al.ndim == 2
  assert al.shape[1] == 2 and len(al) > 0
  assert al[:, 0].max() < m and al[:, 1].max() < n and al.min() >= 0
  for k in range(m):  # aligned target words are ready after their source words end
    src_idx = al[al[:, 0] == k, 1]
    if len(src_idx):
      assert ex["tgt_ready_ms"][k] >= ex["src_word_end_ms"][src_idx].max() - 1e-3
  assert ex["is_talk"] is is_talk
  assert ex["speaker"] in speakers.SPEAKERS_BY_NAME


def test_micro_train_schema(micro_train):
  examples, stats = micro_train
  assert len(examples) == 18 and stats["examples"] == 18 and stats["synth_skipped"] == 0
  for ex in examples:
    check_record(ex)
    assert ex["src_lang"] == "zh" and ex["tgt_lang"] == "en" and ex["source"] == "hsk"
  assert len({ex["id"] for ex in examples}) == 18
  assert len({ex["speaker"] for ex in examples}) > 3
  assert stats["text"]["sources"]["hsk"]["selected"] == {"train": 18, "dev": 3, "test": 3}
  assert stats["text"]["licenses"]["hsk"]["license"] == "CC-BY-SA-4.0"
  assert stats["alignment"]["sentences"] == 24


def test_micro_splits_disjoint_and_reversed_pair(cache):
  splits, stats = corpus.build_text_pairs("zh-en", "micro", cache)
  assert {s: len(v) for s, v in splits.items()} == {"train": 18, "dev": 3, "test": 3}
  srcs = {s: {p.src_text for p in v} for s, v in splits.items()}
  assert not (srcs["train"] & srcs["dev"] or srcs["train"] & srcs["test"])
  rev, _ = corpus.build_text_pairs("en-zh", "micro", cache)
  assert [p.id for p in rev["dev"]] == [p.id for p in splits["dev"]]
  assert rev["dev"][0].src_text == splits["dev"][0].tgt_text
  ex = next(corpus.iter_examples("en-zh", "micro", "dev", cache, seed=0))
  check_record(ex)
  assert ex["src_lang"] == "en" and ex["tgt_lang"] == "zh"


def test_micro_talk_split(cache):
  talks = list(corpus.iter_examples("zh-en", "micro", "talk", cache, seed=1))
  assert len(talks) == 1
  talk = talks[0]
  check_record(talk, is_talk=True)
  test_pairs = corpus.build_text_pairs("zh-en", "micro", cache)[0]["test"]
  assert talk["id"] == "talk-test-0000"
  assert talk["src_text"] == "".join(p.src_text for p in test_pairs)
  assert talk["tgt_text"] == " ".join(p.tgt_text for p in test_pairs)
  assert len(talk["src_audio"]) > 3 * 16000  # three utterances plus pauses


def test_synthesis_failure_is_a_counted_skip(cache, monkeypatch):
  splits, _ = corpus.build_text_pairs("zh-en", "micro", cache)
  bad = splits["dev"][1].id
  real = corpus.synthesize

  def flaky(text, lang, speaker, config=None, rng=None):
    if text == splits["dev"][1].src_text:
      raise SynthesisError("silent audio")
    return real(text, lang, speaker, config, rng)

  monkeypatch.setattr(corpus, "synthesize", flaky)
  stats = {}
  out = list(corpus.iter_examples("zh-en", "micro", "dev", cache, stats=stats))
  assert len(out) == 2 and stats["synth_skipped"] == 1
  assert stats["synth_skipped_ids"] == [bad] and bad in stats["synth_skipped_errors"][0]


def test_bad_arguments_name_the_value(cache):
  with pytest.raises(ValueError, match="xx-yy"):
    corpus.build_text_pairs("xx-yy", "micro", cache)
  with pytest.raises(ValueError, match="huge"):
    corpus.build_text_pairs("zh-en", "huge", cache)
  with pytest.raises(ValueError, match="validation"):
    next(corpus.iter_examples("zh-en", "micro", "validation", cache))


def test_tiny_falls_back_to_hsk_when_apt_fails(tmp_path, monkeypatch):
  def no_apt(names, cache_dir, timeout_s=600.0):
    raise fetch.FetchError(f"cannot fetch {', '.join(names)}: apt unavailable (test)")

  monkeypatch.setattr(fetch, "fetch_packages", no_apt)
  splits, stats = corpus.build_text_pairs("zh-en", "tiny", str(tmp_path))
  assert stats["degraded"] is True
  assert set(stats["fetch_failures"]) == {"lo_help", "lo_ui"}
  assert "libreoffice-help-zh-cn" in stats["fetch_failures"]["lo_help"]
  assert {p.source for v in splits.values() for p in v} == {"hsk"}
  assert sum(len(v) for v in splits.values()) > 4000
  assert stats["sources"]["hsk"]["drops"]["too_short"] > 0
