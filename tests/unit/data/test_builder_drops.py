"""User corpora builders count every drop by reason (issue #12): malformed TSV rows,
rows of no split, text absurdly long for its audio (`max_chars_per_second`)."""

import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines.tfds_builders import LiveinterpCovost2, LiveinterpCvss, common, cvss
from tests.unit.data.test_formats_tfds import _cv_clips, _tone, _write_cv

SR = 16000


def test_check_text_rate_limit_is_configurable():
  rec = dict(id="r", src_text="x" * 60, tgt_text="y" * 10,
             src_audio=np.ones(SR, np.int16), tgt_audio=np.zeros(0, np.int16))
  with pytest.raises(common.RecordError, match=r"src_text has 60 characters for 1.00 s "
                     r"of src_audio \(60 chars/s > max_chars_per_second=50\)") as e:
    common.check_text_rate(rec, 50.0)
  assert e.value.reason == "text_too_long_for_audio"
  common.check_text_rate(rec, 100.0)  # a higher limit keeps it
  common.check_text_rate(rec, None)  # no limit
  rec["tgt_audio"] = np.ones(SR // 10, np.int16)  # 10 chars for 0.1 s: 100 chars/s
  with pytest.raises(common.RecordError, match="tgt_text has 10 characters"):
    common.check_text_rate(rec, 60.0)


def test_read_cvss_tsv_raises_or_collects_bad_rows(tmp_path):
  p = tmp_path / "train.tsv"
  p.write_text("a.mp3\thello\nno tab here\nb.mp3\tx\ty\n\nc.mp3\tfine\n", encoding="utf-8")
  with pytest.raises(ValueError, match=r"train.tsv:2: expected"):
    cvss.read_cvss_tsv(str(p))
  bad = []
  assert cvss.read_cvss_tsv(str(p), bad=bad) == [("a.mp3", "hello"), ("c.mp3", "fine")]
  assert [(b.line, b.item) for b in bad] == [(2, "train.tsv:2"), (3, "train.tsv:3")]


def test_cvss_counts_malformed_rows_and_overlong_text(tmp_path):
  """Before: a row without a tab failed the whole build (ValueError), and a 5,000
  character translation of a 1.2 s clip was kept."""
  import soundfile as sf
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips())
  d = manual / "cvss_c" / "zh"
  for split in ("train", "dev"):
    os.makedirs(d / split, exist_ok=True)
  for split, n in (("train", 0), ("train", 1), ("dev", 3)):
    sf.write(str(d / split / f"common_voice_zh-CN_{n}.mp3.wav"), _tone(1.2, 24000), 24000)
  (d / "train.tsv").write_text(
      "common_voice_zh-CN_0.mp3\twe are fine\n"
      "common_voice_zh-CN_1.mp3\t" + "word " * 1000 + "\n"  # 5,000 chars for 1.2 s
      "a line without any tab\n"
      "common_voice_zh-CN_2.mp3\the came\textra field\n", encoding="utf-8")
  (d / "dev.tsv").write_text("common_voice_zh-CN_3.mp3\ttoday is a good day\n",
                             encoding="utf-8")
  b = LiveinterpCvss(config="c_zh_en", data_dir=str(tmp_path / "tfds"))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  st = b.info.metadata["build_stats"]["train"]
  assert st["examples"] == 1
  assert st["skip_reasons"] == {"text_too_long_for_audio": 1, "malformed_tsv_row": 2}
  items = {x["item"]: x for x in st["skipped_items"]}
  assert "train.tsv:3" in items and "train.tsv:4" in items
  assert "chars/s > max_chars_per_second=50" in items[
      "train/common_voice_zh-CN_1.mp3"]["message"]
  assert b.info.splits["train"].num_examples == 1
  assert b.build_stats["dev"]["examples"] == 1


def test_covost2_counts_malformed_rows_rows_of_no_split_and_overlong_text(tmp_path):
  """Before: a row with a missing or an extra field and a row of an unknown split were
  dropped uncounted, and a 500-character transcript of a 1.1 s clip was kept."""
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips())
  rows = [
      "path\tsentence\ttranslation\tclient_id\tsplit",
      "common_voice_zh-CN_0.mp3\t我们很好\twe are fine\tclient0\ttrain",
      "common_voice_zh-CN_1.mp3\t" + "我" * 500 + "\thow are you\tclient1\ttrain",
      "common_voice_zh-CN_2.mp3\t他来了",  # 2 of 5 fields: no split known
      "common_voice_zh-CN_4.mp3\t我说中文\ti speak\tchinese\tclient0\ttrain",  # 6 fields
      "common_voice_zh-CN_2.mp3\t他来了\the came\tclient0\texcluded",
      "common_voice_zh-CN_3.mp3\t今天是好天\ttoday is a good day\tclient1\tdev",
  ]
  (manual / "covost_v2.zh-CN_en.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
  b = LiveinterpCovost2(config="zh_en", data_dir=str(tmp_path / "tfds"))
  b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
  stats = b.info.metadata["build_stats"]
  assert stats["train"]["examples"] == 1
  assert stats["train"]["skip_reasons"] == {"text_too_long_for_audio": 1,
                                            "malformed_tsv_row": 1}
  assert stats[common.NO_SPLIT]["skip_reasons"] == {"malformed_tsv_row": 1,
                                                    "not_in_a_split": 1}
  msgs = [x["message"] for x in stats[common.NO_SPLIT]["skipped_items"]]
  assert any("covost_v2.zh-CN_en.tsv:4: 2 tab-separated fields, the header has 5" in m
             for m in msgs)
  assert stats["dev"]["examples"] == 1
