"""The embedded corpus: real parallel text → speech in both languages → example records.

Entry points (used by the TFDS builders and grain pipelines):

- `build_text_pairs(pair, size, cache_dir)` → ({split: [Pair]}, stats): read the
  sources, clean, split by source-sentence hash, select the size's subset. Cached as
  JSON under `<cache_dir>/text/`.
- `iter_examples(pair, size, split, cache_dir, *, seed)` → iterator of records with
  exactly the keys `EXAMPLE_KEYS` (see below); split "talk" (= "talk_test"),
  "talk_dev", "talk_train" give long-form talks built from that split's pairs.

Pairs: "zh-en" (default), "en-es", "en-de" and their reverses ("en-zh", "es-en",
"de-en": the same data with the sides swapped; the split of a pair is decided by the
first language of the canonical direction, so reversing never moves a sentence across
splits).

Sizes:
- micro: 24 pairs (18/3/3). zh-en uses HSK only (no apt, builds in seconds); the other
  pairs take them from their first apt source.
- tiny (default): zh-en = all of HSK + 1060 LibreOffice help + 640 UI pairs
  (≈ 6 k pairs); en-es / en-de = 2620 Bible / Ding + the same LibreOffice amounts.
- full: everything that survives cleaning (the generated drills excepted).
- laptop: zh-en (and en-zh) only: 6000/150/150 generated interpreting drills
  (`sources.drills`: numbers, dates, times, prices, names, reorderings over a closed
  ≈ 300-word vocabulary), 4 voices. Sized so that the tiny model can learn to
  translate held-out sentences in about half an hour on a laptop CPU; builds in a few
  minutes. Other pairs have no laptop size (ValueError naming the sizes they have).
Per-size build knobs (`KNOBS`, `size_knobs()`; recorded in the text stats under
"knobs" and in the build summary):
- sources: the corpora a size reads, with their (train, dev, test) quotas (`QUOTAS`).
- num_voices: speakers are drawn from the first N of `speakers.SPEAKERS` (None = all
  18); applies to sentences and talks.
- max_words: pairs with more words (`tokenize_words`) on either side are dropped
  before the split quotas are taken (reason "over_max_words"); None = only the
  cleaning limit (`CleaningConfig.max_words`).
- max_seconds: sentence-level utterances (either side) longer than this are skipped by
  the TFDS builder (reason "too_long_audio"); talks have their own limit.
micro, tiny and full keep the defaults (all voices, no word limit, 30 s).

When apt cannot fetch a Debian source, that source is skipped with a warning and
recorded in `stats["fetch_failures"]` (zh-en falls back to HSK alone); only a pair
left with no text at all raises.

Example record (`EXAMPLE_KEYS`):
  id str, source str (corpus), speaker str ("spk03"), src_lang, tgt_lang str,
  src_text, tgt_text str, src_audio int16[N], tgt_audio int16[M] (16 kHz, same speaker),
  src_words list[str], src_word_start_ms, src_word_end_ms float32[n],
  tgt_words list[str], tgt_word_start_ms, tgt_word_end_ms float32[m] (target speech),
  tgt_ready_ms float32[m] (monotone, in the source audio),
  alignment int32[k, 2] of (tgt_word_idx, src_word_idx), is_talk bool.
Multi-speaker talks add `talks.SEGMENT_KEYS` (per-utterance speaker spans); read the
spans of any record with `talks.speaker_segments(rec)`.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import logging
import os
import threading
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from data_pipelines import alignment as alignment_lib
from data_pipelines import fetch, splits as splits_lib, talks as talks_lib
from data_pipelines.sources import SourceFormatError, SourcePair, bible, ding, drills, hsk
from data_pipelines.sources import libreoffice
from data_pipelines.sources import licenses as source_licenses
from data_pipelines.speakers import Speaker, speaker_for
from data_pipelines.synthesis import (SAMPLE_RATE, SynthesisConfig, SynthesisError,
                                      synthesize, word_times)
from data_pipelines.text_cleaning import CleaningConfig, CleaningReport, clean_pairs
from data_pipelines.text_cleaning import tokenize_words
from liveinterp.common import files

logger = logging.getLogger(__name__)

EXAMPLE_KEYS = ("id", "source", "speaker", "src_lang", "tgt_lang", "src_text", "tgt_text",
                "src_audio", "tgt_audio", "src_words", "src_word_start_ms",
                "src_word_end_ms", "tgt_words", "tgt_word_start_ms", "tgt_word_end_ms",
                "tgt_ready_ms", "alignment", "is_talk")
SIZES = ("micro", "tiny", "full", "laptop")
# requested pair → (canonical pair, reversed?)
PAIRS = {"zh-en": ("zh-en", False), "en-zh": ("zh-en", True),
         "en-es": ("en-es", False), "es-en": ("en-es", True),
         "en-de": ("en-de", False), "de-en": ("en-de", True)}
TALK_SPLITS = {"talk": "test", "talk_test": "test", "talk_dev": "dev",
               "talk_train": "train"}
DEV_FRACTION = 0.02
TEST_FRACTION = 0.02
CACHE_VERSION = 1
CACHE_ENV = "LIVEINTERP_DATA_CACHE"
DEFAULT_SYNTHESIS = SynthesisConfig(lead_silence_ms=(100.0, 500.0),
                                    trail_silence_ms=(150.0, 600.0),
                                    noise_segment_prob=0.1)
DEFAULT_CLEANING = CleaningConfig()


@dataclasses.dataclass(frozen=True)
class Pair:
  """A clean sentence pair of the corpus (`id` = "<source>:<item id>")."""
  id: str
  source: str
  src_lang: str
  tgt_lang: str
  src_text: str
  tgt_text: str

  def reversed(self) -> "Pair":
    return Pair(self.id, self.source, self.tgt_lang, self.src_lang, self.tgt_text,
                self.src_text)


class _Source(NamedTuple):
  """A corpus: its name, the (src, tgt) languages its reader yields, the Debian
  packages it needs (empty: none) and the reader, called with the package root."""
  name: str
  langs: tuple[str, str]
  packages: tuple[str, ...]
  read: Callable[[str], object]


def _libreoffice_sources(lang: str) -> list[_Source]:
  pk = libreoffice.packages(lang)
  return [_Source("lo_help", (lang, "en"), pk[:2],
                  lambda root: libreoffice.read_help_pairs(root, lang)),
          _Source("lo_ui", (lang, "en"), pk[2:],
                  lambda root: libreoffice.read_ui_pairs(root, lang))]


SOURCES = {
  "zh-en": [_Source("hsk", hsk.LANGS, (), lambda root: hsk.read_pairs())]
           + _libreoffice_sources("zh")
           + [_Source("drill", drills.LANGS, (), drills.read_pairs)],
  "en-es": [_Source("bible", bible.LANGS, bible.PACKAGES, bible.read_pairs)]
           + _libreoffice_sources("es"),
  "en-de": [_Source("ding", ding.LANGS, ding.PACKAGES, ding.read_pairs)]
           + _libreoffice_sources("de"),
}
# size → canonical pair → source → (train, dev, test) pairs to keep, None = all.
_LO_TINY = {"lo_help": (1000, 30, 30), "lo_ui": (600, 20, 20)}
QUOTAS = {
  "micro": {"zh-en": {"hsk": (18, 3, 3)}, "en-es": {"bible": (18, 3, 3)},
            "en-de": {"ding": (18, 3, 3)}},
  "tiny": {"zh-en": {"hsk": None, **_LO_TINY},
           "en-es": {"bible": (2500, 60, 60), **_LO_TINY},
           "en-de": {"ding": (2500, 60, 60), **_LO_TINY}},
  # Generated drills are not "real" text: full keeps the human-written corpora only.
  "full": {p: {s.name: None for s in srcs if s.name != "drill"}
           for p, srcs in SOURCES.items()},
  "laptop": {"zh-en": {"drill": (6000, 150, 150)}},
}


@dataclasses.dataclass(frozen=True)
class SizeKnobs:
  """Build knobs of a corpus size (see the module docstring)."""
  num_voices: int | None = None  # first N of speakers.SPEAKERS; None = all
  max_words: int | None = None   # per side; None = CleaningConfig.max_words only
  max_seconds: float = 30.0      # sentence-level utterance, either side (TFDS builder)


KNOBS = {"micro": SizeKnobs(), "tiny": SizeKnobs(), "full": SizeKnobs(),
         "laptop": SizeKnobs(num_voices=4, max_words=12, max_seconds=8.0)}


def size_knobs(pair: str, size: str) -> dict:
  """The knobs of `pair` at `size` as a JSON-able dict (with "sources": source →
  [train, dev, test] quota, None = all)."""
  canonical, _ = _parse(pair, size)
  quotas = QUOTAS[size][canonical]
  return {**dataclasses.asdict(KNOBS[size]),
          "sources": {k: (list(v) if v is not None else None) for k, v in quotas.items()}}


def default_cache_dir() -> str:
  """$LIVEINTERP_DATA_CACHE, else ~/.cache/liveinterp/corpus."""
  return os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache",
                                                   "liveinterp", "corpus")


def _parse(pair: str, size: str) -> tuple[str, bool]:
  if pair not in PAIRS:
    raise ValueError(f"unknown language pair {pair!r}; choose one of {sorted(PAIRS)}")
  if size not in SIZES:
    raise ValueError(f"unknown corpus size {size!r}; choose one of {SIZES}")
  canonical = PAIRS[pair][0]
  if canonical not in QUOTAS[size]:
    have = [s for s in SIZES if canonical in QUOTAS[s]]
    raise ValueError(f"corpus size {size!r} has no {pair} data; sizes of {pair}: {have}")
  return PAIRS[pair]


def _write_json(path: str, data) -> None:
  """Atomic write (temp file + rename) so concurrent builders never read half a file."""
  files.write_json_atomic(path, data, ensure_ascii=False)


def _pair_key(p) -> str:
  return p.src + "\0" + p.tgt


def _build_canonical(canonical: str, size: str, cache_dir: str) -> dict:
  """Reads, cleans, splits and selects the pairs of a canonical pair (JSON-able)."""
  c_src, c_tgt = canonical.split("-")
  quotas = QUOTAS[size][canonical]
  knobs = KNOBS[size]
  report = CleaningReport()
  seen: set = set()
  stats = {"pair": canonical, "size": size, "sources": {}, "fetch_failures": {},
           "split_fractions": {"dev": DEV_FRACTION, "test": TEST_FRACTION},
           "cleaning": dataclasses.asdict(DEFAULT_CLEANING), "licenses": {}}
  chosen: dict[str, list] = {s: [] for s in splits_lib.SPLITS}
  licenses = source_licenses()
  for src in SOURCES[canonical]:
    if src.name not in quotas:
      continue
    try:
      root = fetch.fetch_packages(src.packages, cache_dir) if src.packages else ""
      raw = list(src.read(root))
    except (fetch.FetchError, SourceFormatError) as e:
      logger.warning("corpus %s/%s: skipping source %s: %s", canonical, size, src.name, e)
      stats["fetch_failures"][src.name] = str(e)
      continue
    if src.langs != (c_src, c_tgt):
      raw = [SourcePair(p.tgt, p.src, p.source, p.item_id) for p in raw]
    drops_before = collections.Counter(report.drops)
    kept, _ = clean_pairs(raw, c_src, c_tgt, DEFAULT_CLEANING, report, seen)
    if knobs.max_words is not None:
      kept = _drop_over_max_words(kept, c_src, c_tgt, knobs.max_words, report)
    by_split = splits_lib.assign_splits(kept, key=lambda p: p.src,
                                        dev_fraction=DEV_FRACTION,
                                        test_fraction=TEST_FRACTION)
    quota = quotas[src.name]
    selected = {}
    for i, split in enumerate(splits_lib.SPLITS):
      items = splits_lib.hash_order(by_split[split], _pair_key)
      if quota is not None:
        items = items[:quota[i]]
      chosen[split] += items
      selected[split] = len(items)
    stats["sources"][src.name] = {
      "read": len(raw), "kept": len(kept), "selected": selected,
      "drops": dict(collections.Counter(report.drops) - drops_before)}
    stats["licenses"][src.name] = licenses[src.name]
  if not any(chosen.values()):
    raise RuntimeError(f"corpus {canonical}/{size}: no text pairs; source failures: "
                       f"{stats['fetch_failures'] or 'none (all pairs dropped)'}")
  stats["drops"] = dict(report.drops)
  stats["drop_examples"] = {k: list(v) for k, v in report.drop_examples.items()}
  stats["degraded"] = bool(stats["fetch_failures"])
  stats["knobs"] = size_knobs(canonical, size)
  out_splits, ids = {}, set()
  for split, items in chosen.items():
    rows = []
    # Mix the sources with an ordering hash independent of the one that selected them.
    for p in splits_lib.hash_order(items, _pair_key, salt="liveinterp-mix-v1"):
      pid = f"{p.source}:{p.item_id}"
      n = 1
      while pid in ids:
        pid, n = f"{p.source}:{p.item_id}~{n}", n + 1
      ids.add(pid)
      rows.append(dataclasses.asdict(Pair(pid, p.source, c_src, c_tgt, p.src, p.tgt)))
    out_splits[split] = rows
  stats["pairs"] = {s: len(v) for s, v in out_splits.items()}
  return {"version": CACHE_VERSION, "stats": stats, "splits": out_splits}


def _drop_over_max_words(pairs, src_lang: str, tgt_lang: str, max_words: int,
                         report: CleaningReport) -> list:
  kept = []
  for p in pairs:
    if max(len(tokenize_words(p.src, src_lang)),
           len(tokenize_words(p.tgt, tgt_lang))) > max_words:
      report.add_drop("over_max_words", f"{p.source}:{p.item_id}")
    else:
      kept.append(p)
  return kept


_MEMO: dict = {}
_MEMO_LOCK = threading.Lock()


def build_text_pairs(pair: str = "zh-en", size: str = "tiny", cache_dir: str | None = None,
                     *, refresh: bool = False) -> tuple[dict[str, list[Pair]], dict]:
  """Clean text pairs of `pair` at `size`, by split ("train", "dev", "test").

  Returns (splits, stats); stats (JSON-able, for dataset metadata) has per-source
  counts ("sources": read/kept/selected/drops), "drops" per reason with
  "drop_examples", "fetch_failures" (source → message), "degraded" (a source was
  skipped), "pairs" per split and "licenses". The result is cached in
  `<cache_dir>/text/`; `refresh=True` rebuilds it (e.g. after a failed apt fetch).
  """
  canonical, reverse = _parse(pair, size)
  cache_dir = cache_dir or default_cache_dir()
  path = os.path.join(cache_dir, "text", f"{canonical}_{size}.v{CACHE_VERSION}.json")
  with _MEMO_LOCK:
    data = None if refresh else _MEMO.get(("text", path))
    if data is None and not refresh and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      if data.get("version") != CACHE_VERSION:
        data = None
    if data is None:
      data = _build_canonical(canonical, size, cache_dir)
      _write_json(path, data)
    _MEMO[("text", path)] = data
  out = {}
  for split, rows in data["splits"].items():
    ps = [Pair(**r) for r in rows]
    out[split] = [p.reversed() for p in ps] if reverse else ps
  stats = copy.deepcopy(data["stats"])
  stats["pair"] = pair
  return out, stats


def _text_digest(pairs: Sequence[Pair]) -> str:
  h = hashlib.sha256()
  for p in pairs:
    h.update(f"{p.id}\0{p.src_text}\0{p.tgt_text}\n".encode("utf-8"))
  return h.hexdigest()


def corpus_alignments(pair: str = "zh-en", size: str = "tiny",
                      cache_dir: str | None = None, *, refresh: bool = False
                      ) -> tuple[dict[str, np.ndarray], dict]:
  """Word alignment int32[k, 2] (tgt_idx, src_idx) of every pair id, trained with
  eflomal on all splits of the corpus together; cached in `<cache_dir>/align/` and
  recomputed when the text changes. Returns (alignments, stats)."""
  splits, _ = build_text_pairs(pair, size, cache_dir, refresh=refresh)
  cache_dir = cache_dir or default_cache_dir()
  pairs = [p for s in splits_lib.SPLITS for p in splits[s]]
  digest = _text_digest(pairs)
  path = os.path.join(cache_dir, "align", f"{pair}_{size}.v{CACHE_VERSION}.json")
  with _MEMO_LOCK:
    data = None if refresh else _MEMO.get(("align", path))
    if data is None and not refresh and os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data is None or data.get("digest") != digest:
      src_words = [[w.text for w in tokenize_words(p.src_text, p.src_lang)] for p in pairs]
      tgt_words = [[w.text for w in tokenize_words(p.tgt_text, p.tgt_lang)] for p in pairs]
      aligns, stats = alignment_lib.align_corpus(src_words, tgt_words)
      data = {"digest": digest, "stats": stats,
              "alignments": {p.id: a.reshape(-1).tolist() for p, a in zip(pairs, aligns)}}
      _write_json(path, data)
    _MEMO[("align", path)] = data
  out = {k: np.asarray(v, np.int32).reshape(-1, 2) for k, v in data["alignments"].items()}
  return out, copy.deepcopy(data["stats"])


def _item_seed(seed: int, item_id: str) -> list[int]:
  h = hashlib.sha256(item_id.encode("utf-8")).digest()
  return [seed, int.from_bytes(h[:4], "big")]


def make_example(p: Pair, alignment: np.ndarray, speaker: Speaker, seed: int = 0,
                 synth_config: SynthesisConfig | None = None) -> dict:
  """Synthesises both sides of `p` with `speaker` and returns its example record.

  Raises SynthesisError (message names `p.id`) when either side cannot be spoken or has
  no words, and ValueError when the alignment does not fit the words (stale cache).
  """
  cfg = synth_config or DEFAULT_SYNTHESIS
  rng = np.random.default_rng(_item_seed(seed, p.id))
  try:
    src = synthesize(p.src_text, p.src_lang, speaker, cfg, rng)
    tgt = synthesize(p.tgt_text, p.tgt_lang, speaker, cfg, rng)
  except SynthesisError as e:
    raise SynthesisError(f"{p.id}: {e}") from e
  src_words, src_start, src_end = word_times(p.src_text, p.src_lang, src)
  tgt_words, tgt_start, tgt_end = word_times(p.tgt_text, p.tgt_lang, tgt)
  if not src_words or not tgt_words:
    raise SynthesisError(f"{p.id}: a side has no words")
  alignment = np.asarray(alignment, np.int32).reshape(-1, 2)
  if len(alignment) and (alignment[:, 0].max() >= len(tgt_words)
                         or alignment[:, 1].max() >= len(src_words)):
    raise ValueError(f"{p.id}: alignment does not fit {len(tgt_words)} target / "
                     f"{len(src_words)} source words (stale alignment cache?)")
  ready = alignment_lib.ready_times(alignment, len(tgt_words), src_end, src.speech_end_ms)
  return {
    "id": p.id, "source": p.source, "speaker": speaker.name,
    "src_lang": p.src_lang, "tgt_lang": p.tgt_lang,
    "src_text": p.src_text, "tgt_text": p.tgt_text,
    "src_audio": src.audio, "tgt_audio": tgt.audio,
    "src_words": src_words, "src_word_start_ms": src_start, "src_word_end_ms": src_end,
    "tgt_words": tgt_words, "tgt_word_start_ms": tgt_start, "tgt_word_end_ms": tgt_end,
    "tgt_ready_ms": ready, "alignment": alignment, "is_talk": False,
  }


def iter_examples(pair: str = "zh-en", size: str = "tiny", split: str = "train",
                  cache_dir: str | None = None, *, seed: int = 0,
                  synth_config: SynthesisConfig | None = None,
                  talk_config: talks_lib.TalkConfig | None = None,
                  stats: dict | None = None, limit: int | None = None,
                  multi_speaker_talks: float | None = None) -> Iterator[dict]:
  """Example records (`EXAMPLE_KEYS`) of one split, in a fixed order.

  split: "train", "dev", "test", or a talk split ("talk" = "talk_test", "talk_dev",
  "talk_train") of long-form talks made from that split's pairs.
  seed: picks each item's speaker and its padding/noise (same seed → same data).
  stats: if given, filled as the iteration runs: "text" and "alignment" build stats,
  "examples" yielded, "synth_skipped" count with "synth_skipped_ids" and
  "synth_skipped_errors" (items whose speech was empty, silent or not finite).
  limit: stop after this many source pairs (for quick checks and timing).
  multi_speaker_talks: fraction of talks whose utterances alternate speakers
  (`talks.TalkConfig.multi_speaker_fraction`; None = talk_config's, default 0).
  """
  if split not in splits_lib.SPLITS and split not in TALK_SPLITS:
    raise ValueError(f"unknown split {split!r}; choose one of "
                     f"{splits_lib.SPLITS + tuple(TALK_SPLITS)}")
  splits, text_stats = build_text_pairs(pair, size, cache_dir)
  aligns, align_stats = corpus_alignments(pair, size, cache_dir)
  if stats is None:
    stats = {}
  stats.update({"text": text_stats, "alignment": align_stats, "examples": 0,
                "synth_skipped": 0, "synth_skipped_ids": [],
                "synth_skipped_errors": []})
  base = TALK_SPLITS.get(split, split)
  items = splits[base][:limit] if limit is not None else splits[base]
  num_voices = KNOBS[size].num_voices

  def skipped(p: Pair, e: Exception):
    logger.warning("skipping %s: %s", p.id, e)
    stats["synth_skipped"] += 1
    stats["synth_skipped_ids"].append(p.id)
    stats["synth_skipped_errors"].append(str(e))

  if split in TALK_SPLITS:
    def voice_map(spk: Speaker) -> Speaker:
      if num_voices is not None:  # the talk's speaker, mapped into the first N voices
        spk = speaker_for(spk.name, seed, num_voices)
      return spk

    def synth(p: Pair, spk: Speaker) -> dict:
      return make_example(p, aligns[p.id], spk, seed, synth_config)
    tc = talk_config or talks_lib.TalkConfig()
    if multi_speaker_talks is not None:
      tc = dataclasses.replace(tc, multi_speaker_fraction=float(multi_speaker_talks))
    for talk in talks_lib.make_talks(items, synth, f"talk-{base}", tc, seed, skipped,
                                     voice_map=voice_map):
      stats["examples"] += 1
      yield talk
    return
  for p in items:
    try:
      ex = make_example(p, aligns[p.id], speaker_for(p.id, seed, num_voices), seed,
                        synth_config)
    except SynthesisError as e:
      skipped(p, e)
      continue
    stats["examples"] += 1
    yield ex


def audio_seconds(example: dict) -> float:
  """Source + target audio duration of a record in seconds."""
  return (len(example["src_audio"]) + len(example["tgt_audio"])) / SAMPLE_RATE
