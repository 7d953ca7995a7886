"""TFDS builder for CVSS (speech-to-speech, X -> English) with Common Voice source clips.

Manual layout under `manual_dir` (the CVSS and Common Voice releases as downloaded):

```
cvss_c/<src>/  (CVSS-C; `cvss_t/<src>/` for CVSS-T; <src> may also be <src>-en, zh-CN ...)
  train.tsv  dev.tsv  test.tsv   no header; lines `<cv clip name>\\t<English translation>`
  train/<cv clip name>.wav       target speech (24 kHz in the release; resampled to 16 kHz)
  dev/...  test/...
common_voice/<locale>/           the Common Voice release of the source language
  clips/<cv clip name>           source speech (.mp3; a .wav twin is accepted)
  validated.tsv train.tsv ...    client_id (speaker), path, sentence (transcript)
```

Configs `c_<src>_en` / `t_<src>_en` for src in zh, es, de, fr. A pair whose clip, transcript or
target wav is missing or bad is a counted, named skip in the build stats.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import tensorflow_datasets as tfds

from data_pipelines.tfds_builders import base
from data_pipelines.tfds_builders import common
from data_pipelines.tfds_builders import common_voice as cv

SOURCES = ("zh", "es", "de", "fr")
VARIANTS = ("c", "t")
SPLITS = ("train", "dev", "test")


@dataclasses.dataclass
class CvssConfig(tfds.core.BuilderConfig):
  src: str = "zh"
  variant: str = "c"
  max_seconds: float = 30.0
  max_chars_per_second: float = common.MAX_CHARS_PER_SECOND


def read_cvss_tsv(path: str, bad: list | None = None) -> list[tuple[str, str]]:
  """(clip id, translation) rows of a CVSS split TSV (no header, tab separated).

  A row without exactly two fields raises ValueError, or, when `bad` is a list, is
  appended to it as a `common.BadRow` (a counted skip of the build)."""
  rows = []
  with open(path, encoding="utf-8") as f:
    for ln, line in enumerate(f, 1):
      line = line.rstrip("\n").rstrip("\r")
      if not line.strip():
        continue
      parts = line.split("\t")
      if len(parts) != 2 or not parts[0].strip():
        msg = (f"{path}:{ln}: expected `<id>\\t<translation>`, got {len(parts)} field(s): "
               f"{line[:80]!r}")
        if bad is None:
          raise ValueError(msg)
        bad.append(common.BadRow(path, ln, msg))
        continue
      rows.append((parts[0].strip(), parts[1].strip()))
  return rows


class LiveinterpCvss(base.RecordBuilder):
  """CVSS-C/T target speech + Common Voice source speech, as liveinterp records."""

  BUILDER_CONFIGS = [
      CvssConfig(name=f"{v}_{s}_en", src=s, variant=v,
                 description=f"CVSS-{v.upper()} {s}->en with Common Voice sources")
      for v in VARIANTS for s in SOURCES
  ]
  DESCRIPTION = "CVSS speech-to-speech translation pairs with Common Voice source speech."
  HOMEPAGE = "https://github.com/google-research-datasets/cvss"
  LICENSES = {"cvss-c": "CC-BY-4.0", "cvss-t": "CC-BY-4.0", "common voice": "CC0-1.0"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def __init__(self, *, cvss_dir: str | None = None, cv_dir: str | None = None, **kwargs):
    super().__init__(**kwargs)
    self._cvss_dir = cvss_dir
    self._cv_dir = cv_dir
    self._manual: str | None = None
    self._index: cv.ClipIndex | None = None

  def _split_names(self):
    return SPLITS

  def _manual_dir(self) -> str:
    if self._manual is None:
      raise FileNotFoundError(f"{self.name}: no manual_dir; pass download_config=tfds."
                              "download.DownloadConfig(manual_dir=...)")
    return self._manual

  def _split_generators(self, dl_manager):
    # Accessing manual_dir raises with MANUAL_DOWNLOAD_INSTRUCTIONS when it is missing.
    if not (self._cvss_dir and self._cv_dir):
      self._manual = os.fspath(dl_manager.manual_dir)
    return super()._split_generators(dl_manager)

  def _find_cvss_dir(self) -> str:
    if self._cvss_dir:
      return self._cvss_dir
    cfg = self.builder_config
    md = self._manual_dir()
    loc = cv.CV_LOCALES.get(cfg.src, cfg.src)
    cands = []
    for root in (f"cvss_{cfg.variant}", f"cvss-{cfg.variant}", "cvss"):
      for d in (cfg.src, f"{cfg.src}-en", f"{cfg.src}_en", loc, f"{loc}-en", f"{loc}_en"):
        cands.append(os.path.join(md, root, d))
    for c in cands:
      if os.path.exists(os.path.join(c, "train.tsv")) or os.path.exists(
          os.path.join(c, "test.tsv")):
        return c
    raise FileNotFoundError(f"no CVSS-{cfg.variant.upper()} {cfg.src}-en folder with "
                            f"train.tsv under {md}; tried {cands[:6]} ...")

  def _split_has_items(self, split: str) -> bool:
    tsv = os.path.join(self._find_cvss_dir(), f"{split}.tsv")
    return os.path.exists(tsv) and bool(read_cvss_tsv(tsv, bad=[]))

  def _iter_split(self, split: str) -> Iterator[tuple[str, Any]]:
    cfg = self.builder_config
    cvss_dir = self._find_cvss_dir()
    cv_dir = self._cv_dir or cv.find_cv_dir(self._manual_dir(), cfg.src)
    tsv = os.path.join(cvss_dir, f"{split}.tsv")
    if not os.path.exists(tsv):
      return
    if self._index is None:  # read the Common Voice TSVs once for all splits
      self._index = cv.ClipIndex(cv_dir)
    index = self._index
    source = f"cvss-{cfg.variant}"
    bad: list[common.BadRow] = []
    rows = read_cvss_tsv(tsv, bad=bad)
    self._skip_rows([dataclasses.replace(b, split=split) for b in bad])
    for clip_id, translation in rows:
      item = f"{split}/{clip_id}"
      clip = index.get(clip_id)
      if clip is None:
        yield item, common.RecordError(
            "no_cv_entry", f"{clip_id}: not in any Common Voice TSV of {cv_dir}")
        continue
      if not clip.sentence or not translation:
        yield item, common.RecordError("empty_text", f"{clip_id}: empty transcript or "
                                       f"translation")
        continue
      tgt_wav = os.path.join(cvss_dir, split, clip_id + ".wav")
      if not os.path.exists(tgt_wav):
        alt = os.path.join(cvss_dir, split, os.path.splitext(clip_id)[0] + ".wav")
        tgt_wav = alt if os.path.exists(alt) else tgt_wav
      try:
        src_pcm, src_info = common.load_audio(index.clip_path(clip_id),
                                              max_seconds=cfg.max_seconds)
        tgt_pcm, tgt_info = common.load_audio(tgt_wav, max_seconds=cfg.max_seconds)
      except common.RecordError as e:
        yield item, e
        continue
      self._stats.audio(split, src_info)
      self._stats.audio(split, tgt_info)
      yield item, common.untimed_record(
          rid=f"{source}:{cfg.src}-en:{clip_id}", source=source,
          speaker=clip.client_id or f"cv-unknown:{clip_id}", src_lang=cfg.src,
          tgt_lang="en", src_text=clip.sentence, tgt_text=translation,
          src_audio=src_pcm, tgt_audio=tgt_pcm)
