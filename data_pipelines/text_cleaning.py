"""Text cleaning and word tokenization for parallel sentence pairs.

`clean_pairs` turns raw `SourcePair`s into clean ones and counts every drop by reason:

- markup (`<ahelp hid=…>`, `<emph>`, HTML tags and entities) is removed, keeping the text
  inside; text that still looks like markup afterwards is dropped ("markup");
- product placeholders (`%PRODUCTNAME`, `$[officename]`) become "LibreOffice"; any other
  placeholder (`%1`, `%s`, `$(ARG1)`, `{0}`, `%SIGMA`…) drops the pair ("placeholder"),
  since it would be read out as symbols;
- menu accelerators (`~File`, `文件(~F)`, and for UI catalogs `_Name`) are stripped;
- whitespace is normalised (all Unicode spaces → one ASCII space);
- untranslated entries (target equals source, "untranslated"), a Chinese side without
  CJK characters ("no_cjk") or a non-Chinese side with CJK ("unexpected_cjk");
- length filters in words and characters ("too_short", "too_long", "length_ratio");
- exact duplicates after normalisation ("duplicate"); empty sides ("empty").

`tokenize_words` defines the words of a sentence once for the whole pipeline
(synthesis timing, alignment and the example records all use it): jieba for Chinese,
whitespace for the others; punctuation-only tokens are attached to a neighbouring word.
"""

from __future__ import annotations

import collections
import dataclasses
import html
import logging
import re
import threading
import unicodedata
from typing import Iterable, NamedTuple

from data_pipelines.sources import SourcePair

DROP_REASONS = ("empty", "markup", "placeholder", "untranslated", "no_cjk",
                "unexpected_cjk", "too_short", "too_long", "length_ratio", "duplicate")

_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>")
_RESIDUAL_MARKUP_RE = re.compile(r"</?[A-Za-z_][^<>]*>|&[A-Za-z]+;|&#\d+;")
# Placeholders LibreOffice substitutes at run time; these have a spoken form.
KNOWN_PLACEHOLDERS = {
  "%PRODUCTNAME": "LibreOffice",
  "$[officename]": "LibreOffice",
  "%PRODUCT_NAME": "LibreOffice",
}
# Anything else placeholder-like has no spoken form: the pair is dropped.
_PLACEHOLDER_RE = re.compile(
  r"%(?:\d+|[a-zA-Z](?![a-zA-Z])|[A-Z][A-Z_]+)"  # %1 %s %d %SIGMA %APPDATA
  r"|\$\(\w+\)|\$\[\w+\]|\$\{\w+\}|\$\d+"        # $(ARG1) $[officename] ${x} $1
  r"|\{\d+\}|#\d+#")                               # {0} #1#
_PAREN_ACCEL_RE = re.compile(r"\s*[(（]\s*[~_&][A-Za-z0-9]\s*[)）]")
_UNDERSCORE_MNEMONIC_RE = re.compile(r"(?<![\w])_(?=\w)")
_SPACE_RE = re.compile(r"\s+")
_KEY_STRIP_RE = re.compile(r"[\W_]+")


def has_cjk(text: str) -> bool:
  """True when `text` contains at least one CJK ideograph."""
  return _CJK_RE.search(text) is not None


def normalize_whitespace(text: str) -> str:
  """All Unicode whitespace (NBSP, ideographic space, newlines…) → single spaces."""
  text = "".join(" " if unicodedata.category(c) in ("Zs", "Zl", "Zp") else c for c in text)
  return _SPACE_RE.sub(" ", text).strip()


def normalize_key(text: str) -> str:
  """Comparison key of a sentence: NFKC, case-folded, without punctuation or spaces.

  Used for dedup, the untranslated check and the split hash, so "Hello!" and
  "hello." count as the same sentence.
  """
  return _KEY_STRIP_RE.sub("", unicodedata.normalize("NFKC", text).casefold())


def strip_markup(text: str) -> str:
  """Removes tags (keeping their inner text; `<br>` becomes a space) and decodes HTML
  entities."""
  text = re.sub(r"<br\s*/?>", " ", text, flags=re.IGNORECASE)
  text = _TAG_RE.sub("", text)
  return html.unescape(text)


def replace_known_placeholders(text: str) -> str:
  """`%PRODUCTNAME`, `$[officename]` → "LibreOffice"."""
  for k, v in KNOWN_PLACEHOLDERS.items():
    text = text.replace(k, v)
  return text


def has_placeholder(text: str) -> bool:
  """True when a placeholder without a spoken form remains (`%1`, `$(ARG1)`, `{0}`…)."""
  return _PLACEHOLDER_RE.search(text) is not None


def strip_accelerators(text: str, underscore: bool = False) -> str:
  """Removes menu accelerators: `~File` → `File`, `文件(~F)` → `文件`.

  underscore: also remove GTK-style mnemonics (`_Name` → `Name`); only safe for UI
  catalogs, where a word-initial underscore is always a mnemonic.
  """
  text = _PAREN_ACCEL_RE.sub("", text)
  text = text.replace("~", "")
  if underscore:
    text = _UNDERSCORE_MNEMONIC_RE.sub("", text)
  return text


def clean_text(text: str, underscore_mnemonics: bool = False) -> str:
  """Markup, known placeholders, accelerators and whitespace, in that order."""
  text = strip_markup(text)
  text = replace_known_placeholders(text)
  text = strip_accelerators(text, underscore=underscore_mnemonics)
  return normalize_whitespace(text)


# ---- words --------------------------------------------------------------------------

class Word(NamedTuple):
  """A word of a sentence: its surface text and character span [start, end)."""
  text: str
  start: int
  end: int


_jieba_lock = threading.Lock()
_jieba_tokenizer = None


def _jieba():
  """The process-wide jieba tokenizer, initialised once (≈1 s the first time)."""
  global _jieba_tokenizer
  with _jieba_lock:
    if _jieba_tokenizer is None:
      import jieba
      jieba.setLogLevel(logging.WARNING)
      tok = jieba.Tokenizer()
      tok.initialize()
      _jieba_tokenizer = tok
    return _jieba_tokenizer


def _is_wordlike(token: str) -> bool:
  return any(c.isalnum() for c in token)


def tokenize_words(text: str, lang: str) -> list[Word]:
  """Words of `text` with character spans; the single word definition of the pipeline.

  Chinese ("zh") is segmented with jieba, other languages split on whitespace.
  Tokens without any letter or digit (punctuation, dashes) are merged into the previous
  word (or the next one at the start), so every returned word is speakable and the
  spans cover all non-space characters.
  """
  if lang == "zh":
    raw = [(w, s, e) for w, s, e in _jieba().tokenize(text) if w.strip()]
  else:
    raw = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", text)]
  spans: list[list[int]] = []
  pending_start = None  # punctuation before the first word
  for tok, s, e in raw:
    if _is_wordlike(tok):
      spans.append([s if pending_start is None else pending_start, e])
      pending_start = None
    elif spans:
      spans[-1][1] = e
    elif pending_start is None:
      pending_start = s
  return [Word(text[s:e], s, e) for s, e in spans]


def align_token(word: str) -> str:
  """Alignment form of a word: case-folded, outer punctuation removed."""
  t = word.casefold().strip()
  stripped = re.sub(r"^[\W_]+|[\W_]+$", "", t)
  return stripped or t


# ---- pair cleaning ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CleaningConfig:
  """Filters applied by `clean_pairs`.

  min_words, max_words: allowed number of words (`tokenize_words`) on each side.
  max_chars: maximum characters on each side.
  max_length_ratio: maximum (longer + 1) / (shorter + 1) word-count ratio.
  mnemonic_sources: corpora whose strings use `_X` mnemonics (UI catalogs).
  """
  min_words: int = 2
  max_words: int = 40
  max_chars: int = 300
  max_length_ratio: float = 4.0
  mnemonic_sources: tuple[str, ...] = ("lo_ui",)


@dataclasses.dataclass
class CleaningReport:
  """What `clean_pairs` did: counts read/kept, drops per reason with example ids."""
  read: int = 0
  kept: int = 0
  drops: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  drop_examples: dict = dataclasses.field(default_factory=dict)

  def add_drop(self, reason: str, item_id: str, max_examples: int = 5):
    self.drops[reason] += 1
    ex = self.drop_examples.setdefault(reason, [])
    if len(ex) < max_examples:
      ex.append(item_id)

  def as_dict(self) -> dict:
    return {"read": self.read, "kept": self.kept, "drops": dict(self.drops),
            "drop_examples": {k: list(v) for k, v in self.drop_examples.items()}}


def check_pair(src: str, tgt: str, src_lang: str, tgt_lang: str,
               config: CleaningConfig) -> str | None:
  """The drop reason of an already-cleaned pair (not dedup), or None to keep it."""
  if not src or not tgt:
    return "empty"
  if _RESIDUAL_MARKUP_RE.search(src) or _RESIDUAL_MARKUP_RE.search(tgt):
    return "markup"
  if has_placeholder(src) or has_placeholder(tgt):
    return "placeholder"
  if normalize_key(src) == normalize_key(tgt):
    return "untranslated"
  for text, lang in ((src, src_lang), (tgt, tgt_lang)):
    if lang == "zh" and not has_cjk(text):
      return "no_cjk"
    if lang != "zh" and has_cjk(text):
      return "unexpected_cjk"
  if not normalize_key(src) or not normalize_key(tgt):
    return "empty"
  if max(len(src), len(tgt)) > config.max_chars:
    return "too_long"
  n_src = len(tokenize_words(src, src_lang))
  n_tgt = len(tokenize_words(tgt, tgt_lang))
  if min(n_src, n_tgt) < config.min_words:
    return "too_short"
  if max(n_src, n_tgt) > config.max_words:
    return "too_long"
  if (max(n_src, n_tgt) + 1) / (min(n_src, n_tgt) + 1) > config.max_length_ratio:
    return "length_ratio"
  return None


def clean_pairs(pairs: Iterable[SourcePair], src_lang: str, tgt_lang: str,
                config: CleaningConfig | None = None,
                report: CleaningReport | None = None,
                seen: set[tuple[str, str]] | None = None
                ) -> tuple[list[SourcePair], CleaningReport]:
  """Cleans `pairs` (src in `src_lang`, tgt in `tgt_lang`) and drops bad ones.

  Returns the kept pairs (texts cleaned, order preserved, first of duplicates kept) and
  a report counting every drop reason (`DROP_REASONS`) with a few example item ids.
  Pass `report` to accumulate counts over several calls, and the same `seen` set to
  deduplicate across calls (e.g. across corpora); otherwise dedup is per call.
  """
  config = config or CleaningConfig()
  report = report if report is not None else CleaningReport()
  seen = seen if seen is not None else set()
  kept: list[SourcePair] = []
  for p in pairs:
    report.read += 1
    underscore = p.source in config.mnemonic_sources
    src = clean_text(p.src or "", underscore)
    tgt = clean_text(p.tgt or "", underscore)
    reason = check_pair(src, tgt, src_lang, tgt_lang, config)
    if reason is None:
      key = (normalize_key(src), normalize_key(tgt))
      if key in seen:
        reason = "duplicate"
      else:
        seen.add(key)
    if reason is not None:
      report.add_drop(reason, f"{p.source}:{p.item_id}")
      continue
    kept.append(SourcePair(src, tgt, p.source, p.item_id))
  report.kept += len(kept)
  return kept, report
