"""Multi-speaker talks (issue #10): alternating speakers, per-utterance speaker spans,
single-speaker talks unchanged."""

import numpy as np
import pytest

from data_pipelines import speakers, talks
from data_pipelines.corpus import EXAMPLE_KEYS
from data_pipelines.synthesis import SAMPLE_RATE, SynthesisError


def _utt(i: int, spk: speakers.Speaker) -> dict:
  """A fake utterance record (no synthesis): length depends on the item and speaker."""
  n_src = 8000 + 160 * i + 16 * int(spk.name[3:])
  n_tgt = 6000 + 80 * i
  ms = lambda n: np.asarray([100.0, 0.5 * n / 16], np.float32)  # noqa: E731
  return {
    "id": f"u{i}", "source": "toy", "speaker": spk.name, "src_lang": "zh", "tgt_lang": "en",
    "src_text": f"源{i}", "tgt_text": f"w{i} x", "src_audio": np.full(n_src, i + 1, np.int16),
    "tgt_audio": np.full(n_tgt, i + 1, np.int16), "src_words": ["源", "句"],
    "src_word_start_ms": ms(n_src), "src_word_end_ms": ms(n_src) + 50,
    "tgt_words": [f"w{i}", "x"], "tgt_word_start_ms": ms(n_tgt),
    "tgt_word_end_ms": ms(n_tgt) + 50, "tgt_ready_ms": ms(n_src) + 60,
    "alignment": np.asarray([[0, 0], [1, 1]], np.int32), "is_talk": False}


def _talks(items, fraction, seed=5, **kw):
  cfg = talks.TalkConfig(pause_ms=(200.0, 600.0), min_duration_s=3.0, max_utterances=6,
                         multi_speaker_fraction=fraction, **kw)
  calls = []

  def synth(i, spk):
    calls.append((i, spk.name))
    if i == 4:
      raise SynthesisError("item 4: silent")
    return _utt(i, spk)
  return list(talks.make_talks(items, synth, "talk-t", cfg, seed)), calls


def test_speakers_alternate_and_spans_match_utterances():
  out, calls = _talks(range(24), 1.0)
  assert len(out) >= 3
  spoken = {i: s for i, s in calls if i != 4}
  for t in out:
    spans, names = talks.speaker_segments(t)
    assert list(t["speaker_segment_names"]) == names
    assert len(names) >= 2 and len(set(names)) == 2
    # consecutive utterances differ (2 speakers: they alternate), voices differ
    assert all(a != b for a, b in zip(names, names[1:])), names
    variants = {speakers.get_speaker(n).variant for n in names}
    assert len(variants) == 2
    assert t["speaker"] == "+".join(dict.fromkeys(names))
    # spans follow the utterances: first at 0, last ends the talk, lengths = the
    # utterances' source audio, gaps = the pauses, monotone and disjoint
    assert spans[0, 0] == 0.0
    assert spans[-1, 1] == pytest.approx(1000.0 * len(t["src_audio"]) / SAMPLE_RATE)
    assert np.all(spans[1:, 0] > spans[:-1, 1])
    gaps = spans[1:, 0] - spans[:-1, 1]
    assert np.all((gaps >= 199.9) & (gaps <= 600.1))
    # each span holds exactly one utterance's samples (fake audio value = item + 1)
    for (a, b), n in zip(spans, names):
      seg = t["src_audio"][int(round(a * 16)):int(round(b * 16))]
      assert seg.size and np.all(seg == seg[0]), (a, b)
      assert spoken[int(seg[0]) - 1] == n
      assert seg.size == len(_utt(int(seg[0]) - 1, speakers.get_speaker(n))["src_audio"])
    # word times of utterance k fall inside span k
    starts = t["src_word_start_ms"].reshape(-1, 2)
    assert np.all((starts >= spans[:, :1]) & (starts <= spans[:, 1:]))
  # the skipped item 4 does not break the alternation (checked above) and is not spoken
  again, _ = _talks(range(24), 1.0)
  assert [a["speaker_segment_names"] for a in again] == \
      [b["speaker_segment_names"] for b in out]  # deterministic


def test_speaker_at_maps_times_to_spans():
  spans = np.asarray([[0, 1000], [1500, 2500], [3000, 4000]], np.float32)
  names = ["spk01", "spk07", "spk01"]
  assert talks.speaker_at(spans, names, 10.0) == "spk01"
  assert talks.speaker_at(spans, names, 1200.0) == "spk01"   # pause: previous speaker
  assert talks.speaker_at(spans, names, 1500.0) == "spk07"
  assert talks.speaker_at(spans, names, 3999.0) == "spk01"
  assert talks.speaker_at(spans, names, -5.0) == "spk01"


def test_single_speaker_mode_unchanged():
  items = list(range(24))
  out, calls = _talks(items, 0.0)
  # the pre-existing behaviour: talk t by speaker_for("talk-t-<t>", seed), pauses from
  # default_rng([seed, 7]) in order, no segment keys, every key of EXAMPLE_KEYS
  rng = np.random.default_rng([5, 7])
  spoken = [i for i, _ in calls if i != 4]
  pos = 0
  for t, talk in enumerate(out):
    spk = speakers.speaker_for(f"talk-t-{t}", 5)
    assert talk["speaker"] == spk.name and set(talk) == set(EXAMPLE_KEYS)
    n = len(talk["src_words"]) // 2
    utts = [_utt(i, spk) for i in spoken[pos:pos + n]]
    pos += n
    expect = talks.concat_examples(utts, rng.uniform(200.0, 600.0, size=n - 1).tolist(),
                                   f"talk-t-{t:04d}")
    for k in EXAMPLE_KEYS:
      if isinstance(expect[k], np.ndarray):
        np.testing.assert_array_equal(talk[k], expect[k], err_msg=k)
      else:
        assert talk[k] == expect[k], k
    spans, names = talks.speaker_segments(talk)
    np.testing.assert_allclose(spans, [[0.0, 1000.0 * len(talk["src_audio"]) / 16000]])
    assert names == [spk.name]
  # the explicit default config gives the same talks
  cfg = talks.TalkConfig(pause_ms=(200.0, 600.0), min_duration_s=3.0, max_utterances=6)
  assert cfg.multi_speaker_fraction == 0.0


def test_fraction_draws_some_multi_speaker_talks():
  out, _ = _talks(range(200), 0.5, seed=1)
  multi = [t for t in out if "speaker_segments_ms" in t]
  assert 0 < len(multi) < len(out)
  for t in multi:
    assert talks.is_multi_speaker(t["id"][:-4] + str(int(t["id"][-4:])), 1, 0.5)


def test_voice_map_and_bad_config():
  four = speakers.SPEAKERS[:4]
  vm = lambda s: speakers.speaker_for(s.name, 0, 4)  # noqa: E731  (the laptop build)
  cast = talks.talk_speakers("talk-x-0", 0, 3, vm(speakers.SPEAKERS[7]), vm)
  assert all(s in four for s in cast) and len({s.variant for s in cast}) == 3
  with pytest.raises(ValueError, match="variants"):
    talks.talk_speakers("talk-x-0", 0, 2, four[0], lambda s: four[0])
  with pytest.raises(ValueError, match="multi_speaker_fraction"):
    talks.TalkConfig(multi_speaker_fraction=1.5)
  with pytest.raises(ValueError, match="speakers_per_talk"):
    talks.TalkConfig(speakers_per_talk=1)
  with pytest.raises(ValueError, match="several speakers"):  # the old guard stays
    talks.concat_examples([_utt(0, four[0]), _utt(1, four[1])], [100.0], "x")


# ---- TFDS: the spans survive the build; builds made before the field still load --------
def _source_with_multi_talk(pair, size, split, cache_dir, *, seed=0):
  from tests.unit.data import test_formats_fixtures as fx
  yield from fx.fake_examples(pair, size, split, cache_dir, seed=seed)
  if split == "talk":
    a = _utt(1, speakers.SPEAKERS[0])
    b = _utt(2, speakers.SPEAKERS[7])
    a["src_lang"] = b["src_lang"] = pair.split("-")[0]
    a["tgt_lang"] = b["tgt_lang"] = pair.split("-")[1]
    yield talks.concat_examples([a, b, dict(a, id="u3")], [300.0, 500.0], "talk-multi",
                                multi_speaker=True)


def _read(data_dir, split):
  from data_pipelines import pipelines
  src = pipelines.open_source(data_dir, "liveinterp_corpus/zh_en_micro", split)
  return {r["id"]: r for r in (src[i] for i in range(len(src)))}


def test_tfds_stores_spans_and_old_builds_load(tmp_path, monkeypatch):
  from data_pipelines.tfds_builders import base, liveinterp_corpus as lc
  new_dir, old_dir = str(tmp_path / "new"), str(tmp_path / "old")
  lc.builder("zh-en", "micro", new_dir, example_source=_source_with_multi_talk
             ).download_and_prepare()
  recs = _read(new_dir, "talk")
  multi = recs["talk-multi"]
  expect = talks.concat_examples(
      [_utt(1, speakers.SPEAKERS[0]), _utt(2, speakers.SPEAKERS[7]),
       dict(_utt(1, speakers.SPEAKERS[0]), id="u3")], [300.0, 500.0], "x",
      multi_speaker=True)
  spans, names = talks.speaker_segments(multi)
  np.testing.assert_allclose(spans, expect["speaker_segments_ms"], rtol=1e-6)
  assert names == ["spk00", "spk07", "spk00"] and multi["speaker"] == "spk00+spk07"
  for rid, r in recs.items():   # single-speaker talks: stored "", read as the default
    if rid != "talk-multi":
      s, n = talks.speaker_segments(r)
      assert n == [r["speaker"]] and s[0, 0] == 0.0
  train = _read(new_dir, "train")
  r = next(iter(train.values()))
  assert talks.speaker_segments(r)[1] == [r["speaker"]]
  # a build made by the code before the field existed (no `speaker_segments` feature)
  monkeypatch.setattr(lc.LiveinterpCorpus, "_features", base.RecordBuilder._features)
  monkeypatch.setattr(lc.LiveinterpCorpus, "_generate_examples",
                      base.RecordBuilder._generate_examples)
  lc.builder("zh-en", "micro", old_dir, example_source=_source_with_multi_talk
             ).download_and_prepare()
  monkeypatch.undo()
  old = _read(old_dir, "talk")
  assert old["talk-multi"].get("speaker_segments") is None
  s, n = talks.speaker_segments(old["talk-multi"])   # the default: one span
  assert n == ["spk00+spk07"] and s.shape == (1, 2)
  with pytest.raises(ValueError, match="multi_speaker_talks"):
    lc.builder("zh-en", "micro", new_dir, multi_speaker_talks=2.0)
  with pytest.raises(ValueError, match="unreadable speaker_segments"):
    talks.speaker_segments({"id": "x", "speaker_segments": b"{not json",
                            "src_audio": np.zeros(3), "speaker": "a"})


def test_micro_corpus_multi_speaker_talk(tmp_path):
  # The real micro corpus (HSK text, espeak speech): its one test talk, all talks drawn
  # multi-speaker; the laptop knob (4 voices) path is `test_voice_map_and_bad_config`.
  from data_pipelines import corpus
  cache = str(tmp_path)
  one = list(corpus.iter_examples("zh-en", "micro", "talk", cache, seed=1))
  multi = list(corpus.iter_examples("zh-en", "micro", "talk", cache, seed=1,
                                    multi_speaker_talks=1.0))
  assert len(one) == len(multi) == 1 and "speaker_segments_ms" not in one[0]
  t = multi[0]
  spans, names = talks.speaker_segments(t)
  n = len(corpus.build_text_pairs("zh-en", "micro", cache)[0]["test"])
  assert len(names) == n and all(a != b for a, b in zip(names, names[1:]))
  assert len({speakers.get_speaker(s).variant for s in names}) == 2
  assert spans[-1, 1] == pytest.approx(1000.0 * len(t["src_audio"]) / SAMPLE_RATE)
  assert names[0] == one[0]["speaker"] or names[1] == one[0]["speaker"]
  # same text and words as the single-speaker talk; the speech differs by speaker
  assert t["src_text"] == one[0]["src_text"] and t["tgt_words"] == one[0]["tgt_words"]


def test_concat_of_a_multi_speaker_talk_keeps_its_spans():
  a, b, c = (_utt(i, speakers.SPEAKERS[k]) for i, k in ((0, 0), (1, 7), (2, 3)))
  inner = talks.concat_examples([a, b], [250.0], "inner", multi_speaker=True)
  outer = talks.concat_examples([dict(inner, is_talk=False), c], [500.0], "outer",
                                multi_speaker=True)
  spans, names = talks.speaker_segments(outer)
  assert names == ["spk00", "spk07", "spk03"] and outer["speaker"] == "spk00+spk07+spk03"
  inner_spans, _ = talks.speaker_segments(inner)
  np.testing.assert_allclose(spans[:2], inner_spans)
  start_c = 1000.0 * (len(inner["src_audio"])) / 16000 + 500.0
  np.testing.assert_allclose(spans[2], [start_c, start_c + len(c["src_audio"]) / 16.0])
