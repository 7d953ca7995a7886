"""Reading a Mozilla Common Voice release (the source side of CVSS and CoVoST 2).

A Common Voice language folder looks like

```
<cv_dir>/clips/common_voice_<locale>_<n>.mp3       the clips (MP3 in releases; WAV accepted)
<cv_dir>/validated.tsv  train.tsv  dev.tsv  test.tsv  other.tsv  invalidated.tsv
         header: client_id  path  sentence  up_votes  down_votes  age  gender  accents ...
```

`ClipIndex` maps a clip name (`path`) to its speaker (`client_id`) and transcript
(`sentence`) across all of those TSVs.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

# Common Voice / CoVoST locale of each corpus language.
CV_LOCALES = {"zh": "zh-CN", "en": "en", "es": "es", "de": "de", "fr": "fr", "ja": "ja"}
CV_TSVS = ("validated.tsv", "train.tsv", "dev.tsv", "test.tsv", "other.tsv",
           "invalidated.tsv")

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


def base_lang(code: str) -> str:
  """'zh-CN' -> 'zh', 'sv-SE' -> 'sv', 'en' -> 'en'."""
  return code.split("-")[0].split("_")[0].lower()


def read_tsv(path: str) -> list[dict[str, str]]:
  """Rows of a headed TSV (Common Voice / CoVoST quoting: none)."""
  with open(path, encoding="utf-8", newline="") as f:
    reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
    return [dict(r) for r in reader]


@dataclasses.dataclass(frozen=True)
class Clip:
  client_id: str
  sentence: str


class ClipIndex:
  """clip name -> (client_id, sentence) over the Common Voice TSVs of one folder."""

  def __init__(self, cv_dir: str):
    self.cv_dir = cv_dir
    self.clips_dir = os.path.join(cv_dir, "clips")
    self._by_path: dict[str, Clip] = {}
    found = False
    for name in CV_TSVS:
      p = os.path.join(cv_dir, name)
      if not os.path.exists(p):
        continue
      found = True
      for row in read_tsv(p):
        path = (row.get("path") or "").strip()
        if path and path not in self._by_path:
          self._by_path[path] = Clip(client_id=(row.get("client_id") or "").strip(),
                                     sentence=(row.get("sentence") or "").strip())
    if not found:
      raise FileNotFoundError(
          f"{cv_dir}: no Common Voice TSV ({', '.join(CV_TSVS)}) found; expected a Common "
          f"Voice language folder with clips/ and validated.tsv")
    if not os.path.isdir(self.clips_dir):
      raise FileNotFoundError(f"{self.clips_dir}: Common Voice clips folder is missing")

  def __len__(self) -> int:
    return len(self._by_path)

  def get(self, path: str) -> Clip | None:
    """The clip `path` (also tried with/without the .mp3 suffix), or None."""
    c = self._by_path.get(path)
    if c is None and path.endswith(".mp3"):
      c = self._by_path.get(path[:-4])
    if c is None and not path.endswith(".mp3"):
      c = self._by_path.get(path + ".mp3")
    return c

  def clip_path(self, path: str) -> str:
    """File of clip `path` (see `resolve_clip_path`)."""
    return resolve_clip_path(self.cv_dir, path)


def resolve_clip_path(cv_dir: str, path: str) -> str:
  """`<cv_dir>/clips/<path>`; a `.wav`/`.flac` twin of an `.mp3` name is used when only it
  exists (clips converted beforehand where MP3 cannot be decoded)."""
  p = os.path.join(cv_dir, "clips", path)
  if not os.path.exists(p):
    stem = os.path.splitext(p)[0]
    for ext in (".wav", ".flac"):
      if os.path.exists(stem + ext):
        return stem + ext
  return p


def find_cv_dir(manual_dir: str, lang: str) -> str:
  """The Common Voice folder of `lang` under `manual_dir`.

  Tried in order: `common_voice/<locale>`, `common_voice/<lang>`, `common_voice`,
  `<locale>`, `<lang>`, `manual_dir` itself (each must hold `clips/`).
  """
  loc = CV_LOCALES.get(lang, lang)
  cands = [os.path.join(manual_dir, "common_voice", loc),
           os.path.join(manual_dir, "common_voice", lang),
           os.path.join(manual_dir, "common_voice"),
           os.path.join(manual_dir, loc), os.path.join(manual_dir, lang), manual_dir]
  for c in cands:
    if os.path.isdir(os.path.join(c, "clips")):
      return c
  raise FileNotFoundError(
      f"no Common Voice folder for {lang!r} ({loc}) under {manual_dir}: expected one of "
      + ", ".join(os.path.join(c, "clips") for c in cands[:3]))
