"""Verse-aligned Bible (en–es): World English Bible + Reina-Valera 1909, read with pysword.

Debian packages `sword-text-web` and `sword-text-sparv` install SWORD modules under
`usr/share/sword`: a config `mods.d/<name>.conf` (DataPath, ModDrv, Versification,
Encoding) and the compressed text under `modules/texts/ztext/<module>/`. Verses are
paired by reference (OSIS book, chapter, verse) present in both modules.

Verse markup is OSIS: `<note>…</note>` (footnotes) and non-canonical `<title>`s
(section headings) are removed *with their content* before the remaining tags are
stripped, so footnote text never leaks into the sentence. Canonical titles (psalm
superscriptions) are kept because the Spanish text has them inline.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from typing import Iterator

from data_pipelines.sources import SourceFormatError, SourcePair

CORPUS_NAMES = ("bible",)
LANGS = ("en", "es")
LICENSE = "Public domain"
ATTRIBUTION = ("World English Bible (eBible.org, public domain) and Reina-Valera 1909 "
               "(public domain), SWORD modules from the Debian packages sword-text-web "
               "and sword-text-sparv.")
PACKAGES = ("sword-text-web", "sword-text-sparv")
SWORD_DIR = os.path.join("usr", "share", "sword")
MODULES = {"en": "engWEB2015eb", "es": "spaRV1909eb"}

_NOTE_RE = re.compile(r"<note\b[^>]*?/>|<note\b.*?</note\s*>", re.DOTALL)
_TITLE_RE = re.compile(r"<title\b([^>]*)>(.*?)</title\s*>", re.DOTALL)
_TAG_RE = re.compile(r"<[^<>]*>")
_DRIVERS = {"ztext": "ztext", "ztext4": "ztext4", "rawtext": "rawtext",
            "rawtext4": "rawtext4"}


def clean_osis(markup: str) -> str:
  """Verse text from OSIS markup: notes and section titles removed, then all tags."""
  text = _NOTE_RE.sub(" ", markup)  # a note often sits between two words
  text = _TITLE_RE.sub(lambda m: m.group(2) + " " if 'canonical="true"' in m.group(1)
                       else "", text)
  text = _TAG_RE.sub("", text)
  text = re.sub(r"\s+", " ", text).strip()
  return re.sub(r" ([,.;:!?”’)])", r"\1", text)


def read_conf(sword_dir: str, module: str) -> dict[str, str]:
  """The key=value entries of the `mods.d/*.conf` whose section is `[module]`."""
  for path in sorted(glob.glob(os.path.join(sword_dir, "mods.d", "*.conf"))):
    with open(path, encoding="utf-8", errors="replace") as f:
      lines = f.read().splitlines()
    conf, section = {}, None
    for line in lines:
      line = line.strip()
      if line.startswith("[") and line.endswith("]"):
        section = line[1:-1]
      elif "=" in line and not line.startswith("#") and section is not None:
        k, v = line.split("=", 1)
        conf.setdefault(k.strip(), v.strip())
    if section is not None and section.lower() == module.lower():
      conf["_conf_path"] = path
      return conf
  raise SourceFormatError(f"no SWORD config for module {module} in "
                          f"{os.path.join(sword_dir, 'mods.d')}")


def read_verses(sword_dir: str, module: str) -> dict[tuple[str, int, int], str]:
  """Raw OSIS text of every non-empty verse of `module`, by (book, chapter, verse)."""
  from pysword.bible import SwordBible
  conf = read_conf(sword_dir, module)
  data_path = os.path.normpath(os.path.join(sword_dir, conf.get("DataPath", "")))
  driver = _DRIVERS.get(conf.get("ModDrv", "zText").lower())
  if driver is None:
    raise SourceFormatError(f"{conf['_conf_path']}: unsupported ModDrv {conf['ModDrv']}")
  encoding = "utf-8" if conf.get("Encoding", "UTF-8").upper() == "UTF-8" else "cp1252"
  versification = conf.get("Versification", "KJV").lower()
  try:
    bible = SwordBible(data_path, driver, versification, encoding,
                       conf.get("SourceType", "OSIS"))
  except (IOError, ValueError) as e:
    raise SourceFormatError(f"{data_path}: cannot open SWORD module {module}: {e}") from e
  if hasattr(bible, "_decompressed_text"):
    # pysword decompresses a whole book block for every verse; remember the last block
    # so reading a book costs one decompression (100× faster on the full Bible).
    bible._decompressed_text = functools.lru_cache(maxsize=4)(bible._decompressed_text)
  out = {}
  for testament, books in bible.get_structure().get_books().items():
    for book in books:
      try:
        texts = list(bible.get_iter(books=book.name, clean=False))
      except KeyError:  # testament file absent from this module
        continue
      refs = [(book.osis_name, c + 1, v + 1)
              for c, n in enumerate(book.chapter_lengths) for v in range(n)]
      for ref, text in zip(refs, texts):
        if text and text.strip():
          out[ref] = text
  return out


def read_pairs(root: str) -> Iterator[SourcePair]:
  """Yields (english, spanish, "bible", "Gen.1.1") for verses present in both modules.

  root: the tree that mirrors `/` (containing `usr/share/sword`).
  """
  sword_dir = os.path.join(root, SWORD_DIR)
  if not os.path.isdir(sword_dir):
    raise SourceFormatError(f"SWORD directory {sword_dir} not found")
  en = read_verses(sword_dir, MODULES["en"])
  es = read_verses(sword_dir, MODULES["es"])
  for ref in en:
    if ref in es:
      yield SourcePair(clean_osis(en[ref]), clean_osis(es[ref]), "bible",
                       f"{ref[0]}.{ref[1]}.{ref[2]}")
