"""TFDS builder for CoVoST 2 (speech -> text translation over Common Voice clips).

Manual layout under `manual_dir`:

```
covost_v2.<src>_<tgt>.tsv       CoVoST 2 release TSV (locale codes, e.g. covost_v2.zh-CN_en.tsv)
     header: path  sentence  translation  client_id  split
     split: train | dev | test (| train_covost, counted as train)
common_voice/<src locale>/      the Common Voice release of the source language
  clips/<path>                  source speech (.mp3; a .wav twin is accepted)
  validated.tsv ...             used for `sentence`/`client_id` when the CoVoST TSV lacks them
```

CoVoST has no target speech: records carry an empty `tgt_audio` (usable for ASR and ST
pretraining, not for TTS/S2ST). Configs: zh_en, en_zh, es_en, de_en, fr_en, en_de.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator

import tensorflow_datasets as tfds

from data_pipelines.tfds_builders import base
from data_pipelines.tfds_builders import common
from data_pipelines.tfds_builders import common_voice as cv

PAIRS = (("zh", "en"), ("en", "zh"), ("es", "en"), ("de", "en"), ("fr", "en"), ("en", "de"))
SPLITS = ("train", "dev", "test")
_SPLIT_ALIASES = {"train": "train", "train_covost": "train", "dev": "dev", "test": "test"}


@dataclasses.dataclass
class Covost2Config(tfds.core.BuilderConfig):
  src: str = "zh"
  tgt: str = "en"
  max_seconds: float = 30.0
  max_chars_per_second: float = common.MAX_CHARS_PER_SECOND


def covost_tsv_name(src: str, tgt: str) -> str:
  """'zh', 'en' -> 'covost_v2.zh-CN_en.tsv' (CoVoST uses Common Voice locales)."""
  return f"covost_v2.{cv.CV_LOCALES.get(src, src)}_{cv.CV_LOCALES.get(tgt, tgt)}.tsv"


class LiveinterpCovost2(base.RecordBuilder):
  """CoVoST 2 source speech + transcripts + translations, as liveinterp records."""

  BUILDER_CONFIGS = [
      Covost2Config(name=f"{s}_{t}", src=s, tgt=t, description=f"CoVoST 2 {s}->{t}")
      for s, t in PAIRS
  ]
  DESCRIPTION = "CoVoST 2 speech translation over Common Voice clips."
  HOMEPAGE = "https://github.com/facebookresearch/covost"
  LICENSES = {"covost2": "CC-BY-NC-4.0", "common voice": "CC0-1.0"}
  MANUAL_DOWNLOAD_INSTRUCTIONS = __doc__

  def __init__(self, *, covost_tsv: str | None = None, cv_dir: str | None = None,
               **kwargs):
    super().__init__(**kwargs)
    self._covost_tsv = covost_tsv
    self._cv_dir = cv_dir
    self._manual: str | None = None
    self._rows: dict[str, list[dict[str, str]]] | None = None
    self._index: cv.ClipIndex | None = None

  def _split_names(self):
    return SPLITS

  def _split_generators(self, dl_manager):
    if not (self._covost_tsv and self._cv_dir):
      self._manual = os.fspath(dl_manager.manual_dir)
    return super()._split_generators(dl_manager)

  def _tsv_path(self) -> str:
    if self._covost_tsv:
      return self._covost_tsv
    cfg = self.builder_config
    name = covost_tsv_name(cfg.src, cfg.tgt)
    cands = [os.path.join(self._manual, name), os.path.join(self._manual, "covost", name),
             os.path.join(self._manual, f"covost_v2.{cfg.src}_{cfg.tgt}.tsv")]
    for c in cands:
      if os.path.exists(c):
        return c
    raise FileNotFoundError(f"CoVoST 2 TSV {name} not found; tried {cands}")

  def _split_rows(self) -> dict[str, list[dict[str, str]]]:
    if self._rows is None:
      path = self._tsv_path()
      rows, bad = common.read_headed_tsv(path)
      if rows and not {"path", "translation", "split"} <= set(rows[0]):
        raise ValueError(f"{path}: expected columns path, sentence, translation, "
                         f"client_id, split; got {sorted(rows[0])}")
      out: dict[str, list[dict[str, str]]] = {s: [] for s in SPLITS}
      for r in rows:
        s = _SPLIT_ALIASES.get((r.get("split") or "").strip())
        if s is not None:
          out[s].append(r)
        else:  # a row of no split this build writes: counted, not silently gone
          self._stats.skipped(common.NO_SPLIT, (r.get("path") or "").strip(),
                              "not_in_a_split", f"split {r.get('split')!r}")
      self._skip_rows([dataclasses.replace(b, split=_SPLIT_ALIASES.get(b.split or ""))
                       for b in bad])
      self._rows = out
    return self._rows

  def _split_has_items(self, split: str) -> bool:
    return bool(self._split_rows()[split])

  def _iter_split(self, split: str) -> Iterator[tuple[str, Any]]:
    cfg = self.builder_config
    cv_dir = self._cv_dir or cv.find_cv_dir(self._manual, cfg.src)
    for row in self._split_rows()[split]:
      path = (row.get("path") or "").strip()
      item = f"{split}/{path}"
      sentence = (row.get("sentence") or "").strip()
      client = (row.get("client_id") or "").strip()
      if not sentence or not client:
        if self._index is None:  # only needed when the CoVoST TSV lacks the fields
          self._index = cv.ClipIndex(cv_dir)
        clip = self._index.get(path)
        sentence = sentence or (clip.sentence if clip else "")
        client = client or (clip.client_id if clip else "")
      translation = (row.get("translation") or "").strip()
      if not path or not sentence or not translation:
        yield item, common.RecordError("empty_text", f"{item}: empty path, sentence or "
                                       f"translation")
        continue
      clip_file = cv.resolve_clip_path(cv_dir, path)
      try:
        pcm, info = common.load_audio(clip_file, max_seconds=cfg.max_seconds)
      except common.RecordError as e:
        yield item, e
        continue
      self._stats.audio(split, info)
      yield item, common.untimed_record(
          rid=f"covost2:{cfg.src}-{cfg.tgt}:{path}", source="covost2",
          speaker=client or f"cv-unknown:{path}", src_lang=cfg.src, tgt_lang=cfg.tgt,
          src_text=sentence, tgt_text=translation, src_audio=pcm, tgt_audio=None)
