"""HSK graded example sentences (zh–en), from the PyPI wheel `hsk-sentences-audio`.

Layout: `hsk_sentences_audio/data/sentences.json`, a JSON list of records with
`id`, `chinese` and `translation.en` (plus pinyin, tokens, levels we do not use).
The wheel needs no network, so this source is always available: it is the fallback
when apt cannot fetch the Debian packages.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from data_pipelines.sources import SourceFormatError, SourcePair

CORPUS_NAMES = ("hsk",)
LANGS = ("zh", "en")  # (src, tgt) order of the pairs this reader yields
LICENSE = "CC-BY-SA-4.0"
ATTRIBUTION = ("HSK example sentences from the PyPI package hsk-sentences-audio "
               "(CC BY-SA 4.0); text only, audio not used.")


def default_path() -> str:
  """Path of `sentences.json` inside the installed wheel."""
  import hsk_sentences_audio
  return os.path.join(os.path.dirname(hsk_sentences_audio.__file__), "data",
                      "sentences.json")


def read_pairs(path: str | None = None) -> Iterator[SourcePair]:
  """Yields (chinese, english, "hsk", id) for every record of `sentences.json`.

  Records without a Chinese sentence or an English translation are still yielded with
  an empty side, so that cleaning counts them under "empty". A file that is not a list
  of records raises SourceFormatError naming the file and record.
  """
  path = path or default_path()
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  if not isinstance(data, list):
    raise SourceFormatError(f"{path}: expected a JSON list of records, got "
                            f"{type(data).__name__}")
  for i, rec in enumerate(data):
    if not isinstance(rec, dict):
      raise SourceFormatError(f"{path}: record {i} is {type(rec).__name__}, not an object")
    item_id = str(rec.get("id") or f"record{i}")
    zh = rec.get("chinese") or ""
    translation = rec.get("translation") or {}
    en = translation.get("en", "") if isinstance(translation, dict) else ""
    yield SourcePair(str(zh), str(en or ""), "hsk", item_id)
