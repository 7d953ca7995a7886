"""Readers of real parallel text that ships offline (a PyPI wheel or Debian packages),
and one generated corpus (`drills`: closed-vocabulary zh–en interpreting drills).

Every reader yields `SourcePair(src, tgt, source, item_id)`: the first three fields are
the (source sentence, target sentence, corpus name) triple; `item_id` names the item
inside its corpus so that any later drop or failure can say which one it was.
Each reader module states its corpus licence and attribution as constants
(`LICENSE`, `ATTRIBUTION`); `LICENSES` collects them by corpus name.
"""

from __future__ import annotations

from typing import NamedTuple


class SourcePair(NamedTuple):
  """One parallel sentence pair as read from a corpus (raw, before cleaning).

  src, tgt: sentence in the reader's natural first / second language (see each
    reader's `LANGS`).
  source: corpus name, e.g. "hsk", "lo_help", "lo_ui", "bible", "ding", "drill".
  item_id: stable id of the item inside its corpus (file + paragraph id, verse...).
  """
  src: str
  tgt: str
  source: str
  item_id: str


class SourceFormatError(ValueError):
  """A corpus file does not have the expected layout; the message names the file."""


def licenses() -> dict[str, dict[str, str]]:
  """Licence and attribution of every corpus, by corpus name (for dataset metadata)."""
  from data_pipelines.sources import bible, ding, drills, hsk, libreoffice
  out = {}
  for mod in (hsk, libreoffice, bible, ding, drills):
    for name in mod.CORPUS_NAMES:
      out[name] = {"license": mod.LICENSE, "attribution": mod.ATTRIBUTION}
  return out
