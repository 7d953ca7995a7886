"""Base class of the liveinterp TFDS builders: ArrayRecord files, the shared record
features, build stats in the metadata, counted skips of bad items.

Subclasses implement `_split_names()` and `_iter_split(split)`; the latter yields
`(item_name, record_or_exception)` so that a bad item becomes a counted, named skip
(`RecordError`) instead of failing the build, while whole-build problems
(`AudioDecodeUnavailable`, a missing manual dir) still raise. Every drop is counted by
reason in the build stats (`info.metadata["build_stats"][split]["skip_reasons"]`): bad
audio, empty text, malformed TSV rows (`malformed_tsv_row`; rows that name no split
are under `common.NO_SPLIT`), text too long for its audio (`text_too_long_for_audio`,
`max_chars_per_second` of the builder config), duplicate ids.
"""

from __future__ import annotations

import inspect
import logging
import time
from typing import Any, Iterator

import tensorflow_datasets as tfds
from etils import epath

from data_pipelines.tfds_builders import common


class RecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """ArrayRecord builder of the shared record schema (see `common`)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  DESCRIPTION = ""
  HOMEPAGE = ""
  CITATION = ""
  LICENSES: dict[str, str] = {}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:  # pylint: disable=no-self-argument
    # TFDS's default resolves the package through `importlib_resources`, which is not a
    # dependency here; the defining file is all it needs (checksums path lookup).
    return epath.Path(inspect.getfile(cls))

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)
    self._stats = common.BuildStats()
    self._seen_ids: set[str] = set()

  # -- to implement --------------------------------------------------------------------
  def _split_names(self) -> tuple[str, ...]:
    raise NotImplementedError

  def _iter_split(self, split: str) -> Iterator[tuple[str, Any]]:
    raise NotImplementedError

  def _split_has_items(self, split: str) -> bool:
    """Whether `split` has candidate items (TFDS cannot write an empty split)."""
    del split
    return True

  def _max_seconds(self, split: str) -> float | None:
    return getattr(self.builder_config, "max_seconds", None)

  def _max_chars_per_second(self) -> float | None:
    """Text per second of audio above which a record is dropped (None: no check)."""
    return getattr(self.builder_config, "max_chars_per_second", None)

  def _skip_rows(self, rows):
    """Counts unreadable TSV rows (`common.BadRow`) as skips of their split."""
    for r in rows:
      self._stats.skipped(r.split or common.NO_SPLIT, r.item, "malformed_tsv_row", r.message)
      logging.info("skip %s (malformed_tsv_row): %s", r.item, r.message)

  # -- TFDS ----------------------------------------------------------------------------
  def _features(self) -> tfds.features.FeaturesDict:
    """The features of this builder's records: the shared schema (a subclass may add)."""
    return common.record_features()

  def _info(self) -> tfds.core.DatasetInfo:
    # DatasetInfo(builder=self): the builder lives outside a registered TFDS package.
    md = tfds.core.MetadataDict()
    md["sample_rate"] = common.SAMPLE_RATE
    md["licenses"] = dict(self.LICENSES)
    md["build_stats"] = {}
    md["per_source_counts"] = {}
    return tfds.core.DatasetInfo(
        builder=self, description=self.DESCRIPTION, features=self._features(),
        homepage=self.HOMEPAGE or None, citation=self.CITATION or None, metadata=md,
        license="; ".join(f"{k}: {v}" for k, v in sorted(self.LICENSES.items())) or None)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = [s for s in self._split_names() if self._split_has_items(s)]
    if not splits:
      raise ValueError(f"{self.name}/{self.builder_config.name}: no split has any items")
    return {split: self._generate_examples(split) for split in splits}

  def _generate_examples(self, split: str):
    t0 = time.time()
    max_s = self._max_seconds(split)
    for item, rec in self._iter_split(split):
      if isinstance(rec, common.RecordError):
        self._stats.skipped(split, item, rec.reason, str(rec))
        logging.info("skip %s (%s): %s", item, rec.reason, rec)
        continue
      try:
        ex = common.validate_record(rec, max_seconds=max_s)
        common.check_text_rate(ex, self._max_chars_per_second())
      except common.RecordError as e:
        self._stats.skipped(split, item, e.reason, str(e))
        logging.info("skip %s (%s): %s", item, e.reason, e)
        continue
      if ex["id"] in self._seen_ids:
        self._stats.skipped(split, item, "duplicate_id", f"id {ex['id']!r} seen before")
        continue
      self._seen_ids.add(ex["id"])
      self._stats.kept(split, ex)
      yield ex["id"], ex
    s = self._stats._split(split)  # pylint: disable=protected-access
    s["build_seconds"] = round(time.time() - t0, 3)
    self._publish_stats()
    if s["examples"] == 0:
      raise ValueError(
          f"{self.name}/{self.builder_config.name}: every item of split {split!r} was "
          f"skipped ({dict(s['skip_reasons'])}); first: "
          f"{s['skipped_items'][:3] if s['skipped_items'] else 'no items at all'}")

  def _publish_stats(self):
    md = self.info.metadata
    md["build_stats"] = self._stats.as_dict()
    md["per_source_counts"] = self._stats.per_source_totals()
    md["licenses"] = self._licenses_for(md["per_source_counts"])

  def _licenses_for(self, sources) -> dict[str, str]:
    lic = dict(self.LICENSES)
    for s in sources:
      lic.setdefault(s, "unknown (see the corpus source)")
    return lic

  @property
  def build_stats(self) -> dict:
    """Stats of the build run by this builder instance, or those stored in the metadata."""
    if self._stats.splits:
      return self._stats.as_dict()
    return dict(self.info.metadata.get("build_stats", {}))
