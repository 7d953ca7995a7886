"""German–English example sentences from the Ding dictionary (Debian `trans-de-en`).

File `usr/share/trans/de-en`: one entry per line, `German :: English`; each side lists
sub-entries separated by ` | ` that correspond one to one; a sub-entry lists variants
separated by `; `. Headwords carry grammar tags (`{m}`, `{pl}`) and usage labels
(`[ugs.]`). We keep the sub-entries that are example *sentences*: no grammar tag, no
dictionary placeholders (jdm., etw., sb., sth.), no slash alternatives, at least three
words, a capital first letter and final punctuation on both sides. Variants are paired
one to one when both sides list the same number, otherwise first with first.
"""

from __future__ import annotations

import os
import re
from typing import Iterator

from data_pipelines.sources import SourceFormatError, SourcePair

CORPUS_NAMES = ("ding",)
LANGS = ("de", "en")
LICENSE = "GPL-2.0-or-later"
ATTRIBUTION = ("Ding German–English dictionary by Frank Richter, TU Chemnitz "
               "(GNU GPL version 2 or later), Debian package trans-de-en.")
PACKAGES = ("trans-de-en",)
DICT_PATH = os.path.join("usr", "share", "trans", "de-en")

_LABEL_RE = re.compile(r"\s*\[[^\]]*\]")
_DICT_PLACEHOLDER_RE = re.compile(r"\b(?:jdm|jdn|jds|etw|sb|sth|so|sbd)\.", re.IGNORECASE)
_END_RE = re.compile(r"[.!?…][\"'“”»«)]*$")


def _strip_labels(text: str) -> str:
  return re.sub(r"\s+", " ", _LABEL_RE.sub("", text)).strip()


def is_sentence(text: str) -> bool:
  """True for an example sentence (not a headword, phrase or abbreviation entry)."""
  if not text or "{" in text or "/" in text or _DICT_PLACEHOLDER_RE.search(text):
    return False
  if len(text.split()) < 3 or not _END_RE.search(text):
    return False
  first = next((c for c in text if c.isalpha()), "")
  return first.isupper()


def parse_line(line: str) -> list[tuple[str, str, int]]:
  """(german, english, sub-entry index) sentence pairs of one dictionary line."""
  if line.startswith("#") or " :: " not in line:
    return []
  de_side, en_side = line.rstrip("\n").split(" :: ", 1)
  de_parts, en_parts = de_side.split(" | "), en_side.split(" | ")
  if len(de_parts) != len(en_parts):
    return []
  out = []
  for k, (de, en) in enumerate(zip(de_parts, en_parts)):
    de_vars = [_strip_labels(v) for v in de.split("; ")]
    en_vars = [_strip_labels(v) for v in en.split("; ")]
    pairs = (list(zip(de_vars, en_vars)) if len(de_vars) == len(en_vars)
             else [(de_vars[0], en_vars[0])])
    for d, e in pairs:
      if is_sentence(d) and is_sentence(e):
        out.append((d, e, k))
  return out


def read_pairs(root: str) -> Iterator[SourcePair]:
  """Yields (german, english, "ding", "line<n>.<k>[.<v>]") from `usr/share/trans/de-en`."""
  path = os.path.join(root, DICT_PATH)
  if not os.path.isfile(path):
    raise SourceFormatError(f"Ding dictionary {path} not found")
  with open(path, encoding="utf-8", errors="replace") as f:
    for n, line in enumerate(f, 1):
      seen = {}
      for de, en, k in parse_line(line):
        v = seen.get(k, 0)
        seen[k] = v + 1
        yield SourcePair(de, en, "ding", f"line{n}.{k}" + (f".{v}" if v else ""))
