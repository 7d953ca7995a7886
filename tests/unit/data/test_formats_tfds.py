"""TFDS builders: micro corpus build + read back, idempotence, counted skips, CVSS and
CoVoST 2 fixture trees in their release layouts, MP3 decode errors, build CLI."""

import os

import numpy as np
import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from data_pipelines import build as build_lib
from data_pipelines.tfds_builders import LiveinterpCovost2, LiveinterpCvss
from data_pipelines.tfds_builders import common, liveinterp_corpus
from tests.unit.data import test_formats_fixtures as fx

SR = 16000


def _read_all(name, data_dir, split):
  src = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                         try_gcs=False)
  return [common.decode_example(src[i]) for i in range(len(src))]


def _check_schema(r):
  for k in common.STRING_FIELDS:
    assert isinstance(r[k], str)
  for k in common.AUDIO_FIELDS:
    assert r[k].dtype == np.int16 and r[k].ndim == 1
  for k, wk in common.TIMING_FIELDS.items():
    assert r[k].dtype == np.float32 and r[k].shape == (len(r[wk]),)
  assert r["alignment"].dtype == np.int32 and r["alignment"].shape[1:] == (2,)
  assert isinstance(r["is_talk"], bool)


def test_micro_build_reads_back_with_metadata():
  data_dir = fx.micro_build()
  b = tfds.builder("liveinterp_corpus/zh_en_micro", data_dir=data_dir)
  assert set(b.info.splits) == {"train", "dev", "test", "talk"}
  md = b.info.metadata
  assert md["sample_rate"] == SR
  counts = {s: b.info.splits[s].num_examples for s in b.info.splits}
  assert counts["train"] >= 10 and counts["talk"] >= 1
  assert md["build_stats"]["train"]["examples"] == counts["train"]
  assert sum(md["per_source_counts"].values()) == sum(counts.values())
  for source in md["per_source_counts"]:
    assert source in md["licenses"]
  if fx.use_real_corpus():  # the corpus's own text/alignment/synthesis stats are kept
    assert md["licenses"]["hsk"] == "CC-BY-SA-4.0" and "hsk" in md["attributions"]
    assert md["corpus_stats"]["synthesis"]["train"]["examples"] == counts["train"]
    assert md["corpus_stats"]["text"]["pairs"]
  src = liveinterp_corpus.data_source("zh-en", "micro", data_dir, "train")
  train = [common.decode_example(src[i]) for i in range(len(src))]
  assert len(train) == counts["train"] and len({r["id"] for r in train}) == len(train)
  for r in train:
    _check_schema(r)
    assert (r["src_lang"], r["tgt_lang"]) == ("zh", "en") and not r["is_talk"]
    assert np.all(np.diff(r["tgt_ready_ms"]) >= 0)
    assert r["src_word_end_ms"][-1] <= len(r["src_audio"]) / SR * 1000 + 1
  talk = _read_all("liveinterp_corpus/zh_en_micro", data_dir, "talk")
  assert all(r["is_talk"] for r in talk)


def test_stored_records_equal_the_generated_ones(tmp_path):
  # Exact round trip through ArrayRecord (the deterministic fixture generator: the real
  # corpus re-synthesises speech with small run-to-run differences within one process).
  b = liveinterp_corpus.builder("en-zh", "micro", str(tmp_path),
                                example_source=fx.fake_examples)
  b.download_and_prepare()
  for split in ("train", "talk"):
    stored = {r["id"]: r for r in _read_all("liveinterp_corpus/en_zh_micro", str(tmp_path),
                                            split)}
    gen = list(fx.fake_examples("en-zh", "micro", split, None))
    assert sorted(stored) == sorted(r["id"] for r in gen)
    for rec in gen:
      s = stored[rec["id"]]
      for k in common.RECORD_FIELDS:
        if k in ("src_words", "tgt_words") or isinstance(rec[k], (str, bool)):
          assert s[k] == rec[k], k
        else:
          np.testing.assert_array_equal(s[k], rec[k], err_msg=k)
          assert s[k].dtype == common.record_features()[k].np_dtype, k


def test_rebuild_is_idempotent():
  data_dir = fx.micro_build()

  def must_not_run(*a, **k):
    raise AssertionError("a prepared build must not be regenerated")
  b = liveinterp_corpus.builder("zh-en", "micro", data_dir, example_source=must_not_run)
  assert b.is_prepared()
  b.download_and_prepare()
  assert b.info.splits["train"].num_examples > 0


def test_bad_records_are_counted_skips(tmp_path):
  def source(pair, size, split, cache_dir, *, seed=0):
    if split != "train":
      yield from fx.fake_examples(pair, size, split, cache_dir, seed=seed)
      return
    good = list(fx.fake_examples(pair, size, split, cache_dir, seed=seed))
    yield from good[:4]
    bad = dict(good[4], id="empty-audio", src_audio=np.zeros((0,), np.int16))
    yield bad
    r = dict(good[5], id="not-monotone")
    r["tgt_ready_ms"] = r["tgt_ready_ms"][::-1].copy() + np.arange(len(r["tgt_ready_ms"]))
    yield r
    r = dict(good[6], id="nan-float-audio")
    r["src_audio"] = np.full((100,), np.nan, np.float32)
    yield r
    r = dict(good[7])
    del r["tgt_words"]
    r["id"] = "missing-field"
    yield r
    yield dict(good[0])  # duplicate id
    yield dict(good[8], id="too-long", src_audio=np.ones((31 * SR,), np.int16))
    yield dict(good[9], id="bad-alignment", alignment=np.array([[99, 0]], np.int32))

  b = liveinterp_corpus.builder("en-de", "micro", str(tmp_path), example_source=source)
  b.download_and_prepare()
  st = b.info.metadata["build_stats"]["train"]
  assert st["examples"] == 4 and b.info.splits["train"].num_examples == 4
  assert st["skipped"] == 7
  assert st["skip_reasons"] == {"empty_audio": 1, "bad_timing": 1, "nonfinite_audio": 1,
                                "bad_record": 1, "duplicate_id": 1, "too_long_audio": 1,
                                "bad_alignment": 1}
  named = {d["item"]: d["reason"] for d in st["skipped_items"]}
  assert named["empty-audio"] == "empty_audio" and named["not-monotone"] == "bad_timing"
  assert "missing fields ['tgt_words']" in next(
      d["message"] for d in st["skipped_items"] if d["item"] == "missing-field")


# ---- user corpora: fixture trees in the release layouts --------------------------------
def _tone(seconds, sr, f0=220.0, channels=1):
  t = np.arange(int(seconds * sr)) / sr
  x = (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32)
  return np.stack([x] * channels, axis=1) if channels > 1 else x


def _write_cv(cv_dir, clips):
  """Common Voice folder: clips/<path> + validated.tsv (client_id, path, sentence, ...)."""
  os.makedirs(os.path.join(cv_dir, "clips"), exist_ok=True)
  rows = ["client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tlocale"
          "\tsegment"]
  for path, client, sentence, audio in clips:
    full = os.path.join(cv_dir, "clips", path)
    if audio is None:
      pass
    elif isinstance(audio, bytes):
      with open(full, "wb") as f:
        f.write(audio)
    else:
      data, sr = audio
      sf.write(full, data, sr, format="MP3" if path.endswith(".mp3") else "WAV")
    if sentence is not None:
      rows.append(f"{client}\t{path}\t{sentence}\t2\t0\t\t\t\tzh-CN\t")
  with open(os.path.join(cv_dir, "validated.tsv"), "w", encoding="utf-8") as f:
    f.write("\n".join(rows) + "\n")


def _cv_clips():
  """5 good clips (48 kHz MP3; odd ones stereo), one corrupt MP3, one clip in no TSV."""
  clips = []
  for n, sentence in enumerate(["我们很好", "你好吗", "他来了", "今天是好天", "我说中文"]):
    audio = (_tone(1.0 + n * 0.1, 48000, channels=1 + n % 2), 48000)
    clips.append((f"common_voice_zh-CN_{n}.mp3", f"client{n % 2}", sentence, audio))
  clips.append(("common_voice_zh-CN_90.mp3", "client9", "坏文件", b"not an mp3" * 50))
  clips.append(("common_voice_zh-CN_91.mp3", "client9", None, (_tone(1.0, 48000), 48000)))
  return clips


def test_cvss_with_common_voice_fixture(tmp_path):
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips())
  cvss = manual / "cvss_c" / "zh"
  translations = ["we are fine", "how are you", "he came", "today is a good day",
                  "i speak chinese"]
  splits = {"train": [0, 1, 2, 90, 91, 4], "dev": [3], "test": []}
  for split, ns in splits.items():
    os.makedirs(cvss / split, exist_ok=True)
    lines = []
    for n in ns:
      cid = f"common_voice_zh-CN_{n}.mp3"
      lines.append(f"{cid}\t{translations[n] if n < 5 else 'bad'}")
      if n == 4:
        continue  # target wav missing -> counted skip
      if n == 2:  # target with NaN samples (float wav) -> counted skip
        x = _tone(1.0, 24000)
        x[100] = np.nan
        sf.write(str(cvss / split / f"{cid}.wav"), x, 24000, subtype="FLOAT")
        continue
      sf.write(str(cvss / split / f"{cid}.wav"), _tone(1.2, 24000, 330.0), 24000)
    (cvss / f"{split}.tsv").write_text("\n".join(lines) + ("\n" if lines else ""),
                                       encoding="utf-8")
  data_dir = str(tmp_path / "tfds")
  dl = tfds.download.DownloadConfig(manual_dir=str(manual))
  b = LiveinterpCvss(config="c_zh_en", data_dir=data_dir)
  b.download_and_prepare(download_config=dl)
  st = b.info.metadata["build_stats"]["train"]
  assert st["examples"] == 2  # clips 0 (mono) and 1 (stereo, 48 kHz)
  assert st["skip_reasons"] == {"corrupt_audio": 1, "no_cv_entry": 1, "missing_audio": 1,
                                "nonfinite_audio": 1}
  items = {d["item"]: d for d in st["skipped_items"]}
  assert "common_voice_zh-CN_90.mp3" in items["train/common_voice_zh-CN_90.mp3"]["message"]
  assert st["resampled"] == 4 and st["downmixed"] == 1
  recs = {r["id"]: r for r in _read_all("liveinterp_cvss/c_zh_en", data_dir, "train")}
  r = recs["cvss-c:zh-en:common_voice_zh-CN_1.mp3"]
  assert (r["speaker"], r["src_text"], r["tgt_text"]) == ("client1", "你好吗", "how are you")
  assert r["src_lang"] == "zh" and r["source"] == "cvss-c"
  assert abs(len(r["src_audio"]) - 1.1 * SR) < 0.1 * SR  # mp3 48 kHz stereo -> 16 kHz mono
  assert abs(len(r["tgt_audio"]) - 1.2 * SR) < 0.01 * SR  # 24 kHz wav -> 16 kHz
  assert r["src_words"] == ["你", "好", "吗"] and np.all(r["tgt_ready_ms"] == -1)
  assert b.info.splits["dev"].num_examples == 1
  # idempotent
  b2 = LiveinterpCvss(config="c_zh_en", data_dir=data_dir)
  b2.download_and_prepare(download_config=dl)
  assert b2.info.splits["train"].num_examples == 2


def _write_covost(manual, rows):
  with open(os.path.join(manual, "covost_v2.zh-CN_en.tsv"), "w", encoding="utf-8") as f:
    f.write("path\tsentence\ttranslation\tclient_id\tsplit\n")
    for r in rows:
      f.write("\t".join(r) + "\n")


def test_covost2_with_common_voice_fixture(tmp_path):
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips())
  _write_covost(str(manual), [
      ("common_voice_zh-CN_0.mp3", "我们很好", "we are fine", "client0", "train"),
      ("common_voice_zh-CN_1.mp3", "", "how are you", "", "train_covost"),  # from CV TSV
      ("common_voice_zh-CN_90.mp3", "坏文件", "bad file", "client9", "train"),  # corrupt
      ("common_voice_zh-CN_2.mp3", "他来了", "he came", "client0", "dev"),
      ("common_voice_zh-CN_3.mp3", "今天是好天", "today is a good day", "client1", "test"),
      ("common_voice_zh-CN_4.mp3", "我说中文", "i speak chinese", "client0", "excluded"),
  ])
  data_dir = str(tmp_path / "tfds")
  b = LiveinterpCovost2(config="zh_en", data_dir=data_dir)
  b.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  counts = {s: b.info.splits[s].num_examples for s in b.info.splits}
  assert counts == {"train": 2, "dev": 1, "test": 1}
  st = b.info.metadata["build_stats"]["train"]
  assert st["skip_reasons"] == {"corrupt_audio": 1}
  train = {r["id"]: r for r in _read_all("liveinterp_covost2/zh_en", data_dir, "train")}
  r = train["covost2:zh-en:common_voice_zh-CN_1.mp3"]
  assert (r["src_text"], r["speaker"]) == ("你好吗", "client1")  # filled from validated.tsv
  assert r["tgt_audio"].size == 0 and r["tgt_words"] == ["how", "are", "you"]
  _check_schema(r)


def test_mp3_decoding_unavailable_is_a_clear_error(tmp_path, monkeypatch):
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips()[:1])
  _write_covost(str(manual), [("common_voice_zh-CN_0.mp3", "我们很好", "we are fine",
                               "client0", "train")])
  monkeypatch.setattr(common, "mp3_supported", lambda: False)
  b = LiveinterpCovost2(config="zh_en", data_dir=str(tmp_path / "tfds"))
  with pytest.raises(common.AudioDecodeUnavailable,
                     match=r"common_voice_zh-CN_0\.mp3: cannot decode MP3"):
    b.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))


def test_load_audio_resamples_downmixes_and_rejects(tmp_path):
  p = str(tmp_path / "st.wav")
  sf.write(p, _tone(0.5, 8000, channels=2), 8000)
  pcm, info = common.load_audio(p)
  assert pcm.dtype == np.int16 and pcm.shape == (SR // 2,)
  assert info.resampled and info.downmixed and info.orig_rate == 8000
  sf.write(str(tmp_path / "empty.wav"), np.zeros((0,), np.float32), SR)
  with pytest.raises(common.RecordError, match="empty.wav: audio has no samples") as e:
    common.load_audio(str(tmp_path / "empty.wav"))
  assert e.value.reason == "empty_audio"
  sf.write(str(tmp_path / "long.wav"), np.full((3 * SR,), 0.1, np.float32), SR)
  with pytest.raises(common.RecordError, match="long.wav: audio is 3.0 s long"):
    common.load_audio(str(tmp_path / "long.wav"), max_seconds=2.0)


def test_build_cli_runs_and_resumes(tmp_path):
  d = str(tmp_path / "data")
  s1 = build_lib.run("en-es", "micro", d, example_source=fx.fake_examples)
  assert s1["splits"]["train"] == 12 and not s1["reused"]["tfds"]
  assert os.path.exists(s1["tokenizer"] + ".model") and s1["sizes"]["tfds_bytes"] > 0
  assert s1["vocab_layout"]["llm"] == 640 and s1["vocab_layout"]["used"] <= 640
  s2 = build_lib.run("en-es", "micro", d, example_source=fx.fake_examples)
  assert s2["reused"] == {"tfds": True, "tokenizer": True}
  assert s2["splits"] == s1["splits"]
  assert os.path.exists(os.path.join(d, "build_summary_en_es_micro.json"))


def test_one_info_definition_with_builder_features(tmp_path):
  """Every builder's DatasetInfo comes from `RecordBuilder._info`; the corpus builder adds
  only its features (the shared schema + the optional speaker segments)."""
  from data_pipelines.tfds_builders import base  # pylint: disable=g-import-not-at-top
  for cls in (liveinterp_corpus.LiveinterpCorpus, LiveinterpCovost2, LiveinterpCvss):
    assert cls._info is base.RecordBuilder._info, cls.__name__  # pylint: disable=protected-access
  b = liveinterp_corpus.builder("zh-en", "micro", str(tmp_path),
                                example_source=fx.fake_examples)
  info = b.info
  assert set(info.features) == set(common.RECORD_FIELDS) | {liveinterp_corpus.SEGMENTS_FEATURE}
  assert info.metadata["sample_rate"] == common.SAMPLE_RATE
  assert info.metadata["licenses"] == dict(b.LICENSES)
