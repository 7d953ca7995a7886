"""TFDS builder of the synthetic liveinterp corpus (`data_pipelines.corpus`).

One BuilderConfig per language pair x size: `zh_en_micro`, `zh_en_tiny`, `zh_en_full`,
`en_zh_*`, `en_es_*`, `en_de_*`, and `zh_en_laptop` / `en_zh_laptop` (the laptop size
exists for zh–en only); splits train/dev/test/talk. A size's `max_seconds` (longest
sentence-level utterance) comes from the corpus knobs (`corpus.KNOBS`). Build and read back:

  from data_pipelines.tfds_builders import LiveinterpCorpus
  b = LiveinterpCorpus(config="zh_en_micro", data_dir=DIR)
  b.download_and_prepare()            # idempotent: an existing build is reused
  src = tfds.data_source("liveinterp_corpus/zh_en_micro", data_dir=DIR, split="train")

`example_source` (builder kwarg) replaces `corpus.iter_examples` (same signature); tests
use it before/without the real corpus. `multi_speaker_talks` (builder kwarg, the config's
`data.multi_speaker_talks`): the fraction of talks whose utterances alternate speakers
(`data_pipelines.talks`).

Beyond the shared record schema (`common.record_features`) this builder stores
`speaker_segments`: an *optional* string feature, JSON {"spans_ms": [[start, end], …],
"names": [speaker, …]} of a multi-speaker talk's per-utterance speaker spans, "" for
every other record. Optional, so builds made before it existed still load (the field
reads as None there); `talks.speaker_segments(rec)` reads it either way, with the
default of one span over the whole source audio.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipelines import corpus as corpus_lib
from data_pipelines import talks as talks_lib
from data_pipelines.tfds_builders import base, common

PAIRS = ("zh-en", "en-zh", "en-es", "en-de", "es-en", "de-en")
SIZES = ("micro", "tiny", "full", "laptop")
SPLITS = ("train", "dev", "test", "talk")

ExampleSource = Callable[..., Iterator[dict]]


def has_size(pair: str, size: str) -> bool:
  """Whether the corpus has `pair` at `size` (laptop: zh-en / en-zh only)."""
  return corpus_lib.PAIRS[pair][0] in corpus_lib.QUOTAS[size]


def config_name(pair: str, size: str) -> str:
  """'zh-en', 'micro' -> 'zh_en_micro'."""
  return f"{pair.replace('-', '_')}_{size}"


@dataclasses.dataclass
class CorpusConfig(tfds.core.BuilderConfig):
  """A language pair at a corpus size."""
  pair: str = "zh-en"
  size: str = "micro"
  max_seconds: float = 30.0        # longer sentence-level utterances are skipped
  talk_max_seconds: float = 900.0  # long-form talks may run longer


class LiveinterpCorpus(base.RecordBuilder):
  """Parallel speech/text with word timings and ready times, from `data_pipelines.corpus`."""

  BUILDER_CONFIGS = [
      CorpusConfig(name=config_name(p, s), pair=p, size=s,
                   max_seconds=corpus_lib.KNOBS[s].max_seconds,
                   description=f"{p} synthetic parallel speech, size {s}")
      for p in PAIRS for s in SIZES if has_size(p, s)
  ]
  DESCRIPTION = ("Synthetic simultaneous-interpretation corpus: human parallel text, "
                 "speech synthesised per speaker in both languages, word timings, "
                 "word alignment and target-word ready times.")
  # Known source licences; sources the corpus names beyond these get theirs from
  # `corpus.LICENSES` when it exists.
  LICENSES = {"hsk": "CC-BY-SA-4.0", "libreoffice": "MPL-2.0",
              "bible": "public domain", "ding": "GPL-2.0-or-later",
              "espeak-ng speech": "GPL-3.0-or-later"}

  def __init__(self, *, example_source: ExampleSource | None = None,
               corpus_cache_dir: str | None = None, corpus_seed: int = 0,
               multi_speaker_talks: float = 0.0, **kwargs):
    if not 0.0 <= float(multi_speaker_talks) <= 1.0:
      raise ValueError(f"multi_speaker_talks={multi_speaker_talks!r} (data."
                       "multi_speaker_talks): expected a fraction in [0, 1]")
    super().__init__(**kwargs)
    self._example_source = example_source
    self._corpus_cache_dir = corpus_cache_dir
    self._corpus_seed = corpus_seed
    self._multi_speaker_talks = float(multi_speaker_talks)
    self._segments: dict[str, str] = {}
    self._corpus_stats: dict[str, Any] = {}
    self._corpus_licenses: dict[str, Any] = {}

  def _split_names(self):
    return SPLITS

  def _features(self) -> tfds.features.FeaturesDict:
    # The shared record schema plus the optional `speaker_segments` (module docstring).
    feats = {k: common.record_features()[k] for k in common.RECORD_FIELDS}
    feats[SEGMENTS_FEATURE] = tfds.features.Tensor(shape=(), dtype=np.str_, optional=True)
    return tfds.features.FeaturesDict(feats)

  def _generate_examples(self, split: str):
    # The shared validation keeps the shared fields only: put the spans back.
    for key, ex in super()._generate_examples(split):
      ex[SEGMENTS_FEATURE] = self._segments.pop(ex["id"], "")
      yield key, ex

  def _max_seconds(self, split):
    cfg = self.builder_config
    return cfg.talk_max_seconds if split == "talk" else cfg.max_seconds

  def _source(self) -> ExampleSource:
    if self._example_source is not None:
      return self._example_source
    try:
      from data_pipelines import corpus  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ImportError("LiveinterpCorpus needs data_pipelines.corpus (iter_examples) or "
                        "an `example_source=` builder kwarg") from e
    return corpus.iter_examples

  def _licenses_for(self, sources):
    known = {k: v for k, v in self.LICENSES.items()}
    if self._example_source is None:
      try:
        from data_pipelines.sources import licenses  # pylint: disable=g-import-not-at-top
        known.update({k: v["license"] for k, v in licenses().items()})
      except ImportError:
        pass
    known.update({k: v["license"] if isinstance(v, dict) else str(v)
                  for k, v in self._corpus_licenses.items()})
    lic = {s: known.get(s, "unknown (see the corpus source)") for s in sources}
    lic["speech (espeak-ng voices)"] = known["espeak-ng speech"]
    return lic

  def _publish_stats(self):
    super()._publish_stats()
    if self._corpus_stats:
      self.info.metadata["corpus_stats"] = self._corpus_stats
      self.info.metadata["attributions"] = {
          k: v.get("attribution", "") for k, v in self._corpus_licenses.items()
          if isinstance(v, dict)}

  def _iter_split(self, split: str) -> Iterator[tuple[str, Any]]:
    cfg = self.builder_config
    cache = self._corpus_cache_dir or os.path.join(os.fspath(self.data_dir_root),
                                                   "corpus_cache")
    kwargs: dict[str, Any] = dict(seed=self._corpus_seed)
    corpus_stats: dict[str, Any] | None = None
    if self._example_source is None:  # the real corpus reports what it skipped
      corpus_stats = {}
      kwargs["stats"] = corpus_stats
      if self._multi_speaker_talks > 0:
        kwargs["multi_speaker_talks"] = self._multi_speaker_talks
    it = self._source()(cfg.pair, cfg.size, split, cache, **kwargs)
    for n, rec in enumerate(it):
      name = rec.get("id", f"{split}[{n}]") if isinstance(rec, dict) else f"{split}[{n}]"
      if isinstance(rec, dict) and rec.get("speaker_segment_names") is not None:
        self._segments[str(rec.get("id"))] = segments_json(rec)
      yield str(name), rec
    if corpus_stats is not None:
      for rid, err in zip(corpus_stats.get("synth_skipped_ids", []),
                          corpus_stats.get("synth_skipped_errors", [])):
        self._stats.skipped(split, rid, "synthesis_failed", err)
      text = corpus_stats.get("text") or {}
      self._corpus_licenses.update(text.get("licenses") or {})
      self._corpus_stats.setdefault("text", text)
      self._corpus_stats.setdefault("alignment", corpus_stats.get("alignment") or {})
      self._corpus_stats.setdefault("synthesis", {})[split] = dict(
          examples=corpus_stats.get("examples", 0),
          skipped=corpus_stats.get("synth_skipped", 0))


SEGMENTS_FEATURE = "speaker_segments"


def segments_json(rec: dict) -> str:
  """The stored `speaker_segments` string of a record with speaker spans."""
  spans, names = talks_lib.speaker_segments(rec)
  return json.dumps({"spans_ms": [[float(a), float(b)] for a, b in spans],
                     "names": list(names)}, ensure_ascii=False)


def builder(pair: str, size: str, data_dir: str, **kwargs) -> LiveinterpCorpus:
  """The corpus builder of `pair` at `size` writing under `data_dir`."""
  if pair not in PAIRS:
    raise ValueError(f"pair={pair!r}: expected one of {PAIRS}")
  if size not in SIZES:
    raise ValueError(f"size={size!r}: expected one of {SIZES}")
  if not has_size(pair, size):
    raise ValueError(f"size={size!r} does not exist for pair {pair!r}; its sizes: "
                     f"{[s for s in SIZES if has_size(pair, s)]}")
  return LiveinterpCorpus(config=config_name(pair, size), data_dir=data_dir, **kwargs)


def data_source(pair: str, size: str, data_dir: str, split: str):
  """Random-access ArrayRecord source of a prepared build (no generation)."""
  return tfds.data_source(f"liveinterp_corpus/{config_name(pair, size)}", split=split,
                          data_dir=data_dir, download=False, try_gcs=False)
