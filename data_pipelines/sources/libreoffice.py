"""LibreOffice help pages and UI strings (X–en), from the Debian language packs.

Packages (fetched with `data_pipelines.fetch`, never installed):
- `libreoffice-help-<code>` + `libreoffice-help-en-us`: rendered help pages
  `usr/share/libreoffice/help/<Help>/text/**.html`. A paragraph or heading
  (`<p|hN id="par_id…">`, headings also `id="hd_id…"`) is paired with the element of the
  same id (and same occurrence number) in the en-US twin page.
- `libreoffice-l10n-<code>`: gettext catalogs
  `usr/lib/libreoffice/program/resource/<mo>/LC_MESSAGES/*.mo`; the msgid is the English
  UI string and the msgstr its translation (read with `gettext.GNUTranslations`).

Both readers yield raw text (markup, `~` accelerators, placeholders): cleaning happens
in `text_cleaning`. Pairs are (foreign, English): `LANGS = ("<lang>", "en")`.
"""

from __future__ import annotations

import collections
import gettext
import glob
import hashlib
import os
import re
from typing import Iterator

from data_pipelines.sources import SourceFormatError, SourcePair

CORPUS_NAMES = ("lo_help", "lo_ui")
LICENSE = "MPL-2.0"
ATTRIBUTION = ("LibreOffice help and user-interface translations, The Document "
               "Foundation and contributors (Mozilla Public License 2.0), from the "
               "Debian packages libreoffice-help-* and libreoffice-l10n-*.")
HELP_DIR = os.path.join("usr", "share", "libreoffice", "help")
MO_DIR = os.path.join("usr", "lib", "libreoffice", "program", "resource")
# language → (Debian package suffix, help directory, gettext directory)
LANG_CODES = {
  "zh": ("zh-cn", "zh-CN", "zh_CN"),
  "de": ("de", "de", "de"),
  "es": ("es", "es", "es"),
  "fr": ("fr", "fr", "fr"),
  "ja": ("ja", "ja", "ja"),
}
_ELEMENT_RE = re.compile(r"<(p|h[1-6])\b([^>]*)>(.*?)</\1\s*>", re.DOTALL | re.IGNORECASE)
_ID_RE = re.compile(r"""\bid\s*=\s*["']((?:par|hd)_id[^"']*)["']""")


def _codes(lang: str) -> tuple[str, str, str]:
  if lang not in LANG_CODES:
    raise ValueError(f"LibreOffice: no language codes for {lang!r}; known: "
                     f"{sorted(LANG_CODES)}")
  return LANG_CODES[lang]


def packages(lang: str) -> tuple[str, ...]:
  """Debian packages needed for `lang` (help in `lang` and en-US, UI catalogs)."""
  deb = _codes(lang)[0]
  return (f"libreoffice-help-{deb}", "libreoffice-help-en-us", f"libreoffice-l10n-{deb}")


def parse_help_page(markup: str) -> dict[str, list[str]]:
  """Inner markup of every `<p|hN id="par_id…|hd_id…">` element, by id, in order."""
  out: dict[str, list[str]] = collections.defaultdict(list)
  for m in _ELEMENT_RE.finditer(markup):
    idm = _ID_RE.search(m.group(2))
    if idm:
      out[idm.group(1)].append(m.group(3))
  return out


def read_help_pairs(root: str, lang: str) -> Iterator[SourcePair]:
  """Yields (foreign, english, "lo_help", "<page>#<id>[#k]") from the help trees.

  root: the tree that mirrors `/` (e.g. `fetch.package_root(cache)` or "/").
  Pages without an en-US twin are skipped; a missing language tree raises
  SourceFormatError naming the directory.
  """
  help_code = _codes(lang)[1]
  lang_dir = os.path.join(root, HELP_DIR, help_code)
  en_dir = os.path.join(root, HELP_DIR, "en-US")
  for d in (lang_dir, en_dir):
    if not os.path.isdir(d):
      raise SourceFormatError(f"LibreOffice help directory {d} not found")
  for path in sorted(glob.glob(os.path.join(lang_dir, "**", "*.html"), recursive=True)):
    rel = os.path.relpath(path, lang_dir)
    twin = os.path.join(en_dir, rel)
    if not os.path.isfile(twin):
      continue
    with open(path, encoding="utf-8", errors="replace") as f:
      foreign = parse_help_page(f.read())
    with open(twin, encoding="utf-8", errors="replace") as f:
      english = parse_help_page(f.read())
    for el_id, texts in foreign.items():
      en_texts = english.get(el_id, [])
      for k, (t, e) in enumerate(zip(texts, en_texts)):
        suffix = f"#{k}" if k else ""
        yield SourcePair(t, e, "lo_help", f"{rel.replace(os.sep, '/')}#{el_id}{suffix}")


def read_ui_pairs(root: str, lang: str) -> Iterator[SourcePair]:
  """Yields (translation, english msgid, "lo_ui", "<catalog>#<hash>") from the .mo files.

  Message contexts ("ctx\\x04msgid") are removed from the English side; plural entries
  give their singular form only; the catalog header is skipped. A missing catalog
  directory or an unreadable .mo raises SourceFormatError naming it.
  """
  mo_dir = os.path.join(root, MO_DIR, _codes(lang)[2], "LC_MESSAGES")
  if not os.path.isdir(mo_dir):
    raise SourceFormatError(f"LibreOffice catalog directory {mo_dir} not found")
  for path in sorted(glob.glob(os.path.join(mo_dir, "*.mo"))):
    name = os.path.basename(path)
    try:
      with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # msgid → msgstr
    except (OSError, ValueError) as e:
      raise SourceFormatError(f"{path}: not a readable gettext catalog ({e})") from e
    for key, msgstr in catalog.items():
      if isinstance(key, tuple):  # plural: (msgid, n)
        msgid, n = key
        if n != 0:
          continue
      else:
        msgid = key
      if not msgid:
        continue  # header
      english = msgid.split("\x04", 1)[-1]
      digest = hashlib.sha1(msgid.encode("utf-8")).hexdigest()[:12]
      yield SourcePair(msgstr, english, "lo_ui", f"{name}#{digest}")
