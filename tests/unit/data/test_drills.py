"""Interpreting drills (`sources.drills`) and the laptop corpus size built from them."""

import collections
import re

import numpy as np
import pytest

from data_pipelines import corpus, speakers
from data_pipelines.sources import drills, licenses
from data_pipelines.synthesis import synthesize, word_times
from data_pipelines.text_cleaning import tokenize_words


def _en_words(text):
  return [re.sub(r"^[\W_]+|[\W_]+$", "", w).lower() for w in text.split()]


@pytest.fixture(scope="module")
def pairs():
  return list(drills.read_pairs())


@pytest.fixture(scope="module")
def laptop_cache(tmp_path_factory):
  return str(tmp_path_factory.mktemp("laptop_cache"))


def test_numbers_golden():
  assert [drills.zh_number(n) for n in (0, 2, 10, 15, 20, 25, 99)] == \
      ["零", "二", "十", "十五", "二十", "二十五", "九十九"]
  assert [drills.zh_number(n) for n in (100, 105, 110, 125, 350)] == \
      ["一百", "一百零五", "一百一十", "一百二十五", "三百五十"]
  assert drills.zh_number(2, count=True) == "两" and drills.zh_number(22, count=True) == "二十二"
  assert drills.zh_number(200, count=True) == "两百"
  assert [drills.en_number(n) for n in (0, 13, 20, 25, 100, 105, 350)] == \
      ["zero", "thirteen", "twenty", "twenty five", "one hundred", "one hundred five",
       "three hundred fifty"]
  assert [drills.en_ordinal(n) for n in (1, 2, 3, 12, 20, 21, 30, 31)] == \
      ["first", "second", "third", "twelfth", "twentieth", "twenty first", "thirtieth",
       "thirty first"]


def test_deterministic_and_well_formed(pairs):
  again = list(drills.read_pairs())
  assert again == pairs
  assert len(pairs) == drills.NUM_PAIRS
  assert len({p.item_id for p in pairs}) == len(pairs)
  assert len({p.src for p in pairs}) == len(pairs)
  # Ids are stable prefixes: a shorter run yields the same first items.
  assert list(drills.read_pairs(num_pairs=50)) == pairs[:50]
  for p in pairs:
    assert p.source == "drill"
    assert p.src.endswith("。") and "。" not in p.src[:-1], p
    assert not re.search(r"[，、？！,.?!a-zA-Z0-9]", p.src[:-1]), p
    assert p.tgt.endswith(".") and p.tgt[0].isupper() and p.tgt.isascii(), p
    assert not re.search(r"[0-9,;:!?-]", p.tgt), p
    assert drills.ZH_CHARS[0] <= len(p.src) - 1 <= drills.ZH_CHARS[1], p
    assert drills.EN_WORDS[0] <= len(p.tgt.split()) <= drills.EN_WORDS[1], p
  # Every template is used.
  used = collections.Counter(p.item_id.rsplit("-", 1)[0] for p in pairs)
  assert set(used) == {t[0] for t in drills.TEMPLATES}


def test_enough_distinct_pairs():
  assert sum(1 for _ in drills.generate(20000)) == 20000


def test_small_vocabulary(pairs):
  en = {w for p in pairs for w in _en_words(p.tgt)}
  zh = {c for p in pairs for c in p.src[:-1]}
  assert 150 <= len(en) <= 400, len(en)
  assert len(zh) <= 300, len(zh)


def test_licence_registered():
  lic = licenses()["drill"]
  assert lic["license"] == drills.LICENSE == "CC0-1.0" and lic["attribution"]


def test_laptop_splits_disjoint_and_compositional(laptop_cache):
  splits, stats = corpus.build_text_pairs("zh-en", "laptop", laptop_cache)
  quota = corpus.QUOTAS["laptop"]["zh-en"]["drill"]
  assert [len(splits[s]) for s in ("train", "dev", "test")] == list(quota)
  assert stats["knobs"]["num_voices"] == 4 and set(stats["knobs"]["sources"]) == {"drill"}
  assert {p.source for s in splits.values() for p in s} == {"drill"}
  texts = {s: {p.src_text for p in v} for s, v in splits.items()}
  assert not texts["train"] & texts["test"] and not texts["train"] & texts["dev"]
  assert not texts["dev"] & texts["test"]
  # Held-out sentences are new combinations of words seen in training.
  train_en = {w for p in splits["train"] for w in _en_words(p.tgt_text)}
  # (Chinese by character: jieba glues numbers to measure words, 二十四只.)
  train_zh = {c for p in splits["train"] for c in p.src_text}
  for p in splits["test"] + splits["dev"]:
    assert set(_en_words(p.tgt_text)) <= train_en, p
    assert set(p.src_text) <= train_zh, p
  # The reversed pair is the same data with the sides swapped.
  rev, _ = corpus.build_text_pairs("en-zh", "laptop", laptop_cache)
  assert rev["test"][0].src_text == splits["test"][0].tgt_text


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_speakable_with_word_times(pairs, lang):
  rng = np.random.default_rng(0)
  for i in rng.choice(len(pairs), 10, replace=False):
    p = pairs[int(i)]
    text = p.src if lang == "zh" else p.tgt
    spk = speakers.speaker_for(p.item_id, 0, num_voices=4)
    utt = synthesize(text, lang, spk)
    assert 0.5 < len(utt.audio) / 16000 < 8.0, text
    words, start, end = word_times(text, lang, utt)
    assert words == [w.text for w in tokenize_words(text, lang)]
    assert np.all(np.isfinite(start)) and np.all(np.diff(start) >= 0)
    assert np.all(end >= start) and end[-1] <= utt.duration_ms + 1e-3
    if lang == "zh":  # one espeak event per character (a few merge into a neighbour)
      assert all(len(u) == 1 for u in utt.units), utt.units
      assert len(utt.units) >= 0.6 * (len(text) - 1), (text, utt.units)
    else:  # one event per word; espeak folds some function words (are, the) into
      # a neighbour's, word_times interpolates those
      assert len(utt.units) >= 0.5 * len(words), (text, utt.units)


def test_num_voices_knob():
  ids = [f"drill:x{i}" for i in range(300)]
  first4 = {s.name for s in speakers.SPEAKERS[:4]}
  assert {speakers.speaker_for(i, 0, 4).name for i in ids} == first4
  # None keeps the all-voices choice of the existing builds.
  assert all(speakers.speaker_for(i, 3) == speakers.speaker_for(i, 3, None)
             == speakers.speaker_for(i, 3, len(speakers.SPEAKERS)) for i in ids)
  with pytest.raises(ValueError, match="num_voices"):
    speakers.speaker_for("x", 0, 0)


def test_laptop_examples_use_first_voices(laptop_cache):
  first4 = {s.name for s in speakers.SPEAKERS[:4]}
  stats = {}
  exs = list(corpus.iter_examples("zh-en", "laptop", "train", laptop_cache, stats=stats,
                                  limit=12))
  assert len(exs) == 12 and stats["synth_skipped"] == 0
  assert {e["speaker"] for e in exs} <= first4
  assert all(e["source"] == "drill" and len(e["src_audio"]) / 16000 < 8.0 for e in exs)
  talks = list(corpus.iter_examples("zh-en", "laptop", "talk", laptop_cache, limit=6))
  assert talks and {t["speaker"] for t in talks} <= first4


def test_sizes_and_knobs():
  assert corpus.KNOBS["laptop"].num_voices == 4
  for size in ("micro", "tiny", "full"):  # the existing builds keep their defaults
    assert corpus.KNOBS[size] == corpus.SizeKnobs()
    assert "drill" not in corpus.QUOTAS[size]["zh-en"]
  with pytest.raises(ValueError, match="sizes of en-es.*micro"):
    corpus.build_text_pairs("en-es", "laptop")
  from data_pipelines.tfds_builders import liveinterp_corpus
  assert liveinterp_corpus.has_size("en-zh", "laptop")
  assert not liveinterp_corpus.has_size("en-de", "laptop")
  with pytest.raises(ValueError, match="its sizes"):
    liveinterp_corpus.builder("en-de", "laptop", "/nonexistent")
  cfgs = {c.name: c for c in liveinterp_corpus.LiveinterpCorpus.BUILDER_CONFIGS}
  assert cfgs["zh_en_laptop"].max_seconds == corpus.KNOBS["laptop"].max_seconds
  assert cfgs["zh_en_tiny"].max_seconds == 30.0 and "en_es_laptop" not in cfgs
