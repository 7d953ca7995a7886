"""`data.corpus` selects any prepared TFDS build of the record schema by name (issue #12):
before, `pipelines.open_corpus` only opened `liveinterp_corpus/<pair>_<build>`."""

import os

import pytest
import soundfile as sf
import tensorflow_datasets as tfds

from configs import micro
from data_pipelines import pipelines
from data_pipelines.tfds_builders import LiveinterpCvss
from liveinterp.common import config as config_lib
from tests.unit.data.test_formats_tfds import _cv_clips, _tone, _write_cv


def _cfg(**data):
  c = micro.get_config("codec")  # a stage that reads the corpus but no tokenizer
  for k, v in data.items():
    c.data[k] = v
  return c


def test_corpus_names():
  assert config_lib.corpus_name(_cfg()) == "liveinterp_corpus/zh_en_micro"
  assert config_lib.corpus_name(_cfg(corpus="liveinterp_corpus")) == \
      "liveinterp_corpus/zh_en_micro"
  assert config_lib.corpus_name(_cfg(corpus="cvss")) == "liveinterp_cvss/c_zh_en"
  assert config_lib.corpus_name(_cfg(corpus="cvss_t", pair="de-en")) == \
      "liveinterp_cvss/t_de_en"
  assert config_lib.corpus_name(_cfg(corpus="covost2")) == "liveinterp_covost2/zh_en"
  assert config_lib.corpus_name(_cfg(corpus="my_set/v2")) == "my_set/v2"
  with pytest.raises(config_lib.ConfigError, match="data.corpus='cvs': expected"):
    config_lib.validate(_cfg(corpus="cvs"))


def test_a_cvss_build_is_selectable_by_name(tmp_path):
  manual = tmp_path / "manual"
  _write_cv(str(manual / "common_voice" / "zh-CN"), _cv_clips())
  d = manual / "cvss_c" / "zh"
  os.makedirs(d / "train", exist_ok=True)
  lines = []
  for n, text in ((0, "we are fine"), (1, "how are you")):
    sf.write(str(d / "train" / f"common_voice_zh-CN_{n}.mp3.wav"), _tone(1.2, 24000), 24000)
    lines.append(f"common_voice_zh-CN_{n}.mp3\t{text}")
  (d / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
  data_dir = str(tmp_path / "data")
  LiveinterpCvss(config="c_zh_en", data_dir=os.path.join(data_dir, "tfds")).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))

  for corpus in ("cvss", "liveinterp_cvss/c_zh_en"):
    c = _cfg(corpus=corpus, data_dir=data_dir)
    config_lib.validate(c)
    config_lib.check_inputs(c)
    src = pipelines.open_corpus(c, "train")
    recs = sorted((src[i] for i in range(len(src))), key=lambda r: r["id"])
    assert [r["tgt_text"] for r in recs] == ["we are fine", "how are you"]
    assert recs[0]["source"] == "cvss-c" and recs[0]["src_lang"] == "zh"
  c = _cfg(corpus="cvss_t", data_dir=data_dir)  # not built: named, with what builds it
  with pytest.raises(config_lib.ConfigError, match="does not hold the corpus build "
                     "liveinterp_cvss/t_zh_en .*the builder of liveinterp_cvss/t_zh_en"):
    config_lib.check_inputs(c)
