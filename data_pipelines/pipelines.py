"""grain input pipelines for every training stage, ending in global jax Arrays.

```
TFDS ArrayRecord source ─► decode ─► per-process slice ─► seeded shuffle ─► repeat
   ─► stage transform (codec crops | pretraining task mixture | SFT interleaved stream)
   ─► packing (first-fit, to data.seq_len) or padding ─► batch ─► worker prefetch
   ─► make_global_batch: jax.make_array_from_process_local_data(data sharding, batch)
```

- `codec`: one random crop of an utterance (source or target speech of a record, both in
  the record speaker's voice) plus a crop of a *different* utterance of the same speaker
  for the speaker embedding, and the speaker's integer id.
- `pretrain`: per example one of ASR / ST / TTS / S2ST (weights configurable; tasks a
  record cannot serve, e.g. TTS without target speech, are re-drawn among the others).
- `sft`: the interleaved SIMUL stream (`stream_format.simul_example`), alignment or wait-k
  policy.

Everything random is a pure function of (seed, element index), so iterators checkpoint
exactly: `it.get_state()` / `it.set_state(state)`, or through orbax with
`grain.checkpoint.CheckpointSave/CheckpointRestore` (`orbax_save_args`,
`orbax_restore_args`).

Packed token rows hold several examples: `segment_ids` (0 = padding) and `positions`
restart per example. Audio is packed in parallel, one row per `<audio>` slot, into
`audio` int16[seq_len, S] (S = `StreamSpec.slot_samples`, 80 ms) with
`audio_segment_ids` int32[seq_len]: the k-th `<audio>` token of a row is `audio[k]`
(a row never has more slots than tokens, so seq_len slot rows always suffice).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
from typing import Any, Callable, Iterator, Mapping, Sequence

import grain
import jax
import numpy as np

from data_pipelines import stream_format as sfmt
from data_pipelines.tfds_builders import common as tfds_common
from liveinterp.common import files, sharding as shard_lib

STAGES = ("codec", "pretrain", "sft")
PRETRAIN_TASKS = ("asr", "st", "tts", "s2st")
# Sources whose target speech is *not* in the record speaker's voice (CVSS-C has one
# canonical target voice; CoVoST has no target speech at all).
TARGET_NOT_SPEAKER = frozenset({"cvss-c", "covost2"})

CodesFn = Callable[[Mapping[str, Any]], np.ndarray | None]


# ---- drop accounting -------------------------------------------------------------------
# Every reason a training pipeline drops a record or example for. `format:<reason>` are
# the `stream_format.FormatError` reasons (the one a record fails with; pretrain: the
# task drawn first), `max_audio_slots` an unpacked example with more audio rows than
# `data.max_audio_slots`, `speaker_single_utterance` a codec utterance whose speaker has
# no other one. A fixed vocabulary, so a worker process can send counts as a vector.
DROP_REASONS = tuple(f"format:{r}" for r in sfmt.FORMAT_REASONS) + (
    "max_audio_slots", "speaker_single_utterance")
_DROP_INDEX = {r: i for i, r in enumerate(DROP_REASONS)}
DROPS_FIELD = "data_drops"  # per-example int32[len(DROP_REASONS)] (worker processes only)


class DropCounts(dict):
  """reason -> number of records/examples a pipeline dropped (`DROP_REASONS`).

  A plain dict to read and to write as JSON (the stage puts it into its result as
  `data_drops`); `add` is thread-safe (grain maps records on several threads). Counts
  are of this process and this invocation: a resumed run counts what it reads from its
  restored data position on, from 0; each process of a multi-process run counts its own
  slice (the result is process 0's).
  """

  def __init__(self, *args, **kw):
    super().__init__(*args, **kw)
    self._lock = threading.Lock()

  def add(self, reason: str, n: int = 1):
    if n:
      with self._lock:
        self[reason] = self.get(reason, 0) + int(n)

  def add_vector(self, counts):
    """Adds counts given as a vector (or stacked vectors) over `DROP_REASONS`."""
    c = np.asarray(counts, np.int64).reshape(-1, len(DROP_REASONS)).sum(0)
    for i in np.nonzero(c)[0]:
      self.add(DROP_REASONS[int(i)], int(c[i]))

  def total(self) -> int:
    return int(sum(self.values()))

  def summary(self, what: str = "data") -> str:
    """One line: `<what>: dropped N examples: reason n, ...` (or none)."""
    if not self:
      return f"{what}: no examples dropped"
    parts = ", ".join(f"{k} {v}" for k, v in sorted(self.items(), key=lambda kv: -kv[1]))
    return f"{what}: dropped {self.total()} examples: {parts}"

  def __getstate__(self):  # the lock does not pickle (grain worker processes)
    return {}

  def __setstate__(self, state):
    del state
    self._lock = threading.Lock()


class _DropTally:
  """Drops of one transform: counted into `counts` (exact in this process) and, with
  `carry`, also held until the next example leaves, which takes them along as the
  `DROPS_FIELD` vector (how counts made in a grain worker process reach the trainer)."""

  def __init__(self, counts: DropCounts | None, carry: bool):
    self.counts = DropCounts() if counts is None else counts
    self.carry = carry
    self._pending = np.zeros((len(DROP_REASONS),), np.int32)
    self._lock = threading.Lock()

  def drop(self, reason: str):
    self.counts.add(reason)
    if self.carry:
      with self._lock:
        self._pending[_DROP_INDEX[reason]] += 1

  def attach(self, examples: list) -> list:
    if self.carry and examples:
      with self._lock:
        pending, self._pending = self._pending, np.zeros_like(self._pending)
      for i, ex in enumerate(examples):
        ex[DROPS_FIELD] = pending if i == 0 else np.zeros_like(pending)
    return examples

  def __getstate__(self):
    st = self.__dict__.copy()
    del st["_lock"]
    return st

  def __setstate__(self, st):
    self.__dict__.update(st)
    self._lock = threading.Lock()


def report_drops_at_end(batches: Iterator, drops: DropCounts,
                        log: Callable[[str], None] = logging.info) -> Iterator:
  """Yields `batches`; when the consumer lets go of them (a training stage ends,
  normally or not: the generator is closed or collected) logs `drops` as one line."""
  try:
    yield from batches
  finally:
    log(drops.summary("training data"))


def format_drop_reason(e: Exception) -> str:
  r = getattr(e, "reason", "other")
  return f"format:{r if r in sfmt.FORMAT_REASONS else 'other'}"


class _CountBatchDrops:
  """Main-process map after the worker processes: moves each batch's `DROPS_FIELD`
  vectors into `counts` and removes the field."""

  def __init__(self, counts: DropCounts):
    self.counts = counts

  def __call__(self, batch):
    if DROPS_FIELD in batch:
      batch = dict(batch)
      self.counts.add_vector(batch.pop(DROPS_FIELD))
    return batch


# ---- sources -------------------------------------------------------------------------
class DecodedSource:
  """Random-access source of records in the corpus schema (str fields decoded).

  Wraps a TFDS `data_source` (ArrayRecord) or any sequence of raw/decoded records.
  """

  def __init__(self, source: Sequence[Any], name: str = ""):
    self._source = source
    self.name = name or type(source).__name__

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, i: int) -> dict:
    return tfds_common.decode_example(self._source[int(i)])

  def __repr__(self):
    return f"DecodedSource({self.name}, n={len(self)})"


def open_source(data_dir: str, name: str, split: str) -> DecodedSource:
  """A prepared TFDS build, e.g. `open_source(d, 'liveinterp_corpus/zh_en_micro', 'train')`."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  import data_pipelines.tfds_builders  # noqa: F401  (registers the builders)
  src = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                         try_gcs=False)
  return DecodedSource(src, name=f"{name}[{split}]")


def open_corpus(cfg, split: str = "train", data_dir: str | None = None) -> DecodedSource:
  """The corpus build named by `cfg.data`: `data.corpus` (default the project's own
  `liveinterp_corpus/<src>_<tgt>_<build>`; or any prepared TFDS build of the record schema
  by name, e.g. "cvss" -> `liveinterp_cvss/c_<src>_<tgt>`, "covost2",
  "liveinterp_cvss/t_zh_en": `liveinterp.common.config.corpus_name`) under data_dir."""
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  d = data_dir or cfg.data.data_dir
  if not d:
    raise ValueError("data.data_dir is empty: where was the corpus built? "
                     "(python -m data_pipelines.build --data_dir=...)")
  name = config_lib.corpus_name(cfg)
  return open_source(os.path.join(d, "tfds") if os.path.isdir(os.path.join(d, "tfds"))
                     else d, name, split)


def shard_options(process_index: int | None = None,
                  process_count: int | None = None) -> grain.sharding.ShardOptions:
  """This process's slice of the data (defaults from jax.process_index/count)."""
  if process_index is None and process_count is None:
    return grain.sharding.ShardByJaxProcess(drop_remainder=True)
  return grain.sharding.ShardOptions(shard_index=int(process_index or 0),
                                     shard_count=int(process_count or 1),
                                     drop_remainder=True)


def local_batch_size(global_batch: int, process_count: int | None = None) -> int:
  """Per-process batch: the global batch split evenly across processes."""
  n = jax.process_count() if process_count is None else process_count
  if global_batch % n:
    raise ValueError(f"train.batch_size={global_batch} is not divisible by the "
                     f"{n} processes")
  return global_batch // n


class EpochPermutationMapDataset(grain.MapDataset):
  """Global shuffle, reshuffled every epoch, from a cached numpy permutation.

  Same contract as `MapDataset.shuffle` (index i of epoch e -> a fixed permutation of
  epoch e, so iterator checkpoints stay exact) but O(1) per element: grain's
  `index_shuffle` cycle-walks a block cipher and costs ~5 ms per element for datasets of
  a few dozen records (micro builds), ~0.1 ms at 1k. Use below ~10^7 records (one int64
  permutation per epoch in memory).
  """

  _MUTATES_ELEMENT_SPEC = False

  def __init__(self, parent: grain.MapDataset, *, seed: int):
    super().__init__(parent)
    self._seed = int(seed)
    self._perms: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    return len(self._parent)

  def __str__(self) -> str:
    return "EpochPermutationMapDataset"

  def _perm(self, epoch: int) -> np.ndarray:
    p = self._perms.get(epoch)
    if p is None:
      p = np.random.default_rng([self._seed, epoch]).permutation(len(self._parent))
      if len(self._perms) > 2:
        self._perms.clear()
      self._perms[epoch] = p
    return p

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    n = len(self._parent)
    epoch, i = divmod(int(index), n)
    return self._parent[int(self._perm(epoch)[i]) + epoch * n]

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_perms"] = {}
    return state


def _base_dataset(source: Sequence[Any], seed: int, shard: grain.sharding.ShardOptions,
                  num_epochs: int | None, shuffle: bool) -> grain.MapDataset:
  ds = grain.MapDataset.source(source)
  if shard.shard_count > 1:
    n = len(ds) - (len(ds) % shard.shard_count if shard.drop_remainder else 0)
    ds = ds[shard.shard_index:n:shard.shard_count]
  if len(ds) == 0:
    raise ValueError(f"source {source!r} has no records for shard {shard.shard_index} of "
                     f"{shard.shard_count}")
  ds = ds.seed(seed)
  if shuffle:
    ds = EpochPermutationMapDataset(ds, seed=seed) if len(ds) < 10**7 else ds.shuffle()
  return ds.repeat(num_epochs)


# ---- codec stage -----------------------------------------------------------------------
def speaker_index(source: Sequence[Mapping[str, Any]], cache_path: str | None = None,
                  drops: DropCounts | None = None) -> dict[str, list[tuple[int, str]]]:
  """speaker -> [(record index, audio field), …] of every usable utterance.

  An utterance is a non-empty `src_audio`, or a `tgt_audio` from a source whose target
  voice is the speaker's. Speakers with a single utterance are left out (no *different*
  reference utterance). Cached as JSON at `cache_path` when given. `drops` counts the
  utterances left out (`speaker_single_utterance`).
  """
  if cache_path and os.path.exists(cache_path):
    with open(cache_path) as f:
      cached = json.load(f)
    if cached.get("num_records") == len(source) and "left_out" in cached:
      if drops is not None:
        drops.add("speaker_single_utterance", int(cached["left_out"]))
      return {k: [tuple(u) for u in v] for k, v in cached["speakers"].items()}
  spk: dict[str, list[tuple[int, str]]] = {}
  for i in range(len(source)):
    r = source[i]
    utts = spk.setdefault(r["speaker"], [])
    if len(r["src_audio"]):
      utts.append((i, "src_audio"))
    if len(r["tgt_audio"]) and r["source"] not in TARGET_NOT_SPEAKER:
      utts.append((i, "tgt_audio"))
  out = {k: v for k, v in sorted(spk.items()) if len(v) >= 2}
  dropped = len(spk) - len(out)
  left_out = sum(len(v) for k, v in spk.items() if k not in out)
  if dropped:
    logging.info("speaker_index: %d speakers with a single utterance left out", dropped)
  if drops is not None:
    drops.add("speaker_single_utterance", left_out)
  if cache_path:
    files.write_json_atomic(
        cache_path, dict(num_records=len(source), speakers=out, left_out=left_out))
  return out


def _crop(audio: np.ndarray, n: int, rng: np.random.Generator, align: int = 1):
  """Random crop of `n` samples (start a multiple of `align`), zero-padded; (crop, valid)."""
  out = np.zeros((n,), np.int16)
  if audio.size <= n:
    out[:audio.size] = audio
    return out, audio.size
  hi = (audio.size - n) // align
  s = int(rng.integers(0, hi + 1)) * align
  out[:] = audio[s:s + n]
  return out, n


class CodecTransform(grain.transforms.RandomMap):
  """(record index, field) -> audio crop + a crop of another utterance of the speaker."""

  def __init__(self, source: Sequence[Mapping[str, Any]],
               speakers: Mapping[str, Sequence[tuple[int, str]]], crop_samples: int,
               ref_samples: int, align: int):
    self.source = source
    self.speakers = {k: [tuple(u) for u in v] for k, v in speakers.items()}
    self.speaker_ids = {k: i for i, k in enumerate(sorted(self.speakers))}
    self.crop_samples, self.ref_samples, self.align = crop_samples, ref_samples, align

  def random_map(self, element, rng: np.random.Generator):
    spk, rec_idx, field = element
    rec = self.source[rec_idx]
    audio, n = _crop(np.asarray(rec[field], np.int16), self.crop_samples, rng, self.align)
    others = [u for u in self.speakers[spk] if u != (rec_idx, field)]
    o_idx, o_field = others[int(rng.integers(0, len(others)))]
    ref_rec = rec if o_idx == rec_idx else self.source[o_idx]
    ref, rn = _crop(np.asarray(ref_rec[o_field], np.int16), self.ref_samples, rng)
    return dict(audio=audio, audio_lengths=np.int32(n), ref_audio=ref,
                ref_audio_lengths=np.int32(rn), speaker_id=np.int32(self.speaker_ids[spk]))


def codec_dataset(source: Sequence[Mapping[str, Any]], cfg, *, batch_size: int,
                  seed: int = 0, shard: grain.sharding.ShardOptions | None = None,
                  num_epochs: int | None = None, crop_ms: int = 1000, ref_ms: int = 2000,
                  speakers: Mapping[str, Sequence[tuple[int, str]]] | None = None,
                  speaker_cache: str | None = None, shuffle: bool = True,
                  worker_count: int = 0, read_threads: int = 2,
                  drops: DropCounts | None = None) -> grain.IterDataset:
  """Batches of {audio int16[B, crop], audio_lengths int32[B], ref_audio int16[B, ref],
  ref_audio_lengths int32[B], speaker_id int32[B]}.

  The speaker index scans the source once (cached as JSON at `speaker_cache` if given).
  `drops` counts the utterances left out (the crops themselves never drop).
  """
  sr = cfg.audio.sample_rate
  hop = int(math.prod(cfg.codec.strides))
  crop = max(hop, crop_ms * sr // 1000 // hop * hop)
  ref = ref_ms * sr // 1000
  speakers = (speaker_index(source, speaker_cache, drops) if speakers is None
              else speakers)
  utterances = [(spk, int(i), f) for spk, utts in speakers.items() for i, f in utts]
  if not utterances:
    raise ValueError(f"{source!r}: no speaker has two utterances; the codec stage needs a "
                     f"different utterance of the same speaker")
  shard = shard or shard_options()
  ds = _base_dataset(utterances, seed, shard, num_epochs, shuffle)
  ds = ds.random_map(CodecTransform(source, speakers, crop, ref, hop))
  return _finish(ds, batch_size, worker_count, read_threads)


# ---- pretraining / SFT -------------------------------------------------------------------
class StreamTransform(grain.transforms.RandomMap):
  """Record -> a list of token sequences of the stream format (flattened downstream).

  pretrain: one sequence; sft: one per window (`stream_format.simul_windows`: a stream
  longer than `seq_len`, e.g. a talk, gives several, together training every turn once).
  Empty when the record can't serve; every dropped record or example is counted by
  reason in `drops` (`DROP_REASONS`; with `carry_drops`, also carried in the examples).
  """

  def __init__(self, tokenizer, spec: sfmt.StreamSpec, stage: str, *,
               task_weights: Mapping[str, float] | None = None, policy: str = "alignment",
               wait_k: int = 3, codes_fn: CodesFn | None = None, frame_ms: int = 0,
               context_chunks: int = 4, max_audio_slots: int | None = None,
               drops: DropCounts | None = None, carry_drops: bool = False):
    if stage not in ("pretrain", "sft"):
      raise ValueError(f"stage={stage!r}: expected 'pretrain' or 'sft'")
    self.tok, self.spec, self.stage = tokenizer, spec, stage
    w = dict(task_weights or {t: 1.0 for t in PRETRAIN_TASKS})
    unknown = set(w) - set(PRETRAIN_TASKS)
    if unknown:
      raise ValueError(f"task_weights: unknown tasks {sorted(unknown)}; known "
                       f"{PRETRAIN_TASKS}")
    self.tasks = [t for t in PRETRAIN_TASKS if w.get(t, 0) > 0]
    if not self.tasks:
      raise ValueError("task_weights: every weight is 0")
    p = np.asarray([w[t] for t in self.tasks], np.float64)
    self.probs = p / p.sum()
    self.policy, self.wait_k, self.codes_fn = policy, wait_k, codes_fn
    self.frame_ms = int(frame_ms)
    if self.frame_ms and spec.slot_ms % self.frame_ms:
      raise ValueError(f"encoder frame of {self.frame_ms} ms does not divide the "
                       f"{spec.slot_ms} ms audio slot")
    self.context_chunks = int(context_chunks)
    if self.context_chunks < 0:
      raise ValueError(f"data.window_context_chunks={context_chunks}: must be >= 0")
    self.max_audio_slots = max_audio_slots
    self.tally = _DropTally(drops, carry_drops)

  @property
  def drops(self) -> DropCounts:
    return self.tally.counts

  def random_map(self, rec, rng: np.random.Generator) -> list:
    return self.tally.attach(self._examples(rec, rng))

  def _examples(self, rec, rng) -> list:
    codes = self.codes_fn(rec) if self.codes_fn is not None else None
    if self.stage == "sft":
      try:
        windows = sfmt.simul_windows(rec, self.tok, self.spec, tgt_codes=codes,
                                     policy=self.policy, k=self.wait_k,
                                     context_chunks=self.context_chunks)
      except sfmt.FormatError as e:
        logging.debug("sft skip: %s", e)
        self.tally.drop(format_drop_reason(e))
        return []
      return [self._with_source_ids(w.example, rec, whole=w.whole,
                                    offset_ms=w.first * self.spec.chunk_ms)
              for w in windows if self._fits_audio(w.example)]
    order = list(rng.choice(len(self.tasks), size=len(self.tasks), replace=False,
                            p=self.probs))
    first = None
    for ti in order:  # the drawn task first, then the others in weighted random order
      try:
        ex = sfmt.pretrain_example(rec, self.tok, self.spec, self.tasks[ti],
                                   tgt_codes=codes)
      except sfmt.FormatError as e:
        logging.debug("pretrain %s skip: %s", self.tasks[ti], e)
        first = first or e
        continue
      if not self._fits_audio(ex):
        return []
      return [self._with_source_ids(ex, rec)]
    self.tally.drop(format_drop_reason(first))
    return []

  def _fits_audio(self, ex) -> bool:
    """False (and counted as `max_audio_slots`) for an example with too many audio rows."""
    if self.max_audio_slots is None or ex["audio"].shape[0] <= self.max_audio_slots:
      return True
    logging.info("dropping an example with %d audio slots > max_audio_slots=%d",
                 ex["audio"].shape[0], self.max_audio_slots)
    self.tally.drop("max_audio_slots")
    return False

  def _with_source_ids(self, ex, rec, whole: bool | None = None, offset_ms: float = 0.0):
    """Adds `src_ids` (the source transcript's token ids: the auxiliary CTC target of
    the audio). Empty when the example carries no audio or only part of the source
    audio (a stream cut at `max_len`, a window of a talk), so a partial transcript is
    never a target. `offset_ms`: where the example's audio starts in the source."""
    n_slots = ex["audio"].shape[0]
    if whole is None:
      whole = n_slots >= sfmt.num_slots(len(rec["src_audio"]), self.spec)
    whole = whole and n_slots > 0
    ids = self.tok.encode_text(rec["src_text"]) if whole else []
    ex["src_ids"] = np.asarray(ids, np.int32)
    if self.frame_ms:
      ex["src_frames"] = source_frame_labels(
          rec, self.tok, n_slots * self.spec.slot_ms // self.frame_ms, self.frame_ms,
          offset_ms=offset_ms)
    return ex


def window_context_chunks(cfg) -> int:
  """`data.window_context_chunks` (default 4), checked: an integer >= 0."""
  v = cfg.data.get("window_context_chunks", 4)
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
    raise ValueError(f"data.window_context_chunks={v!r}: must be an integer >= 0 (the "
                     f"chunks of context before an SFT window's own turns)")
  return int(v)


class _Flatten(grain.experimental.FlatMapTransform):
  """A list of examples -> its examples (an empty list drops the record)."""
  max_fan_out = 1 << 16

  def flat_map(self, element):
    return element


def source_frame_labels(rec, tok, num_frames: int, frame_ms: int,
                        offset_ms: float = 0.0) -> np.ndarray:
  """Per encoder frame, the source character being spoken: int32[num_frames].

  Each source word's aligned span (`src_word_start_ms`/`src_word_end_ms`) is split
  evenly over its letters/ideographs (`Tokenizer.char_ids`); frame f takes the character
  whose span holds its centre `(f + ½) * frame_ms`, 0 where none does (silence, pauses,
  punctuation). -1 (no target) everywhere when the record has no word times. The
  target of the auxiliary frame loss (`train.frame_weight`). `offset_ms`: the source
  time of frame 0 (a window of a talk starts mid-source)."""
  out = np.zeros((num_frames,), np.int32)
  starts, ends = rec.get("src_word_start_ms"), rec.get("src_word_end_ms")
  if starts is None or ends is None or len(starts) != len(rec.get("src_words", ())):
    out[:] = -1
    return out
  centres = (np.arange(num_frames) + 0.5) * frame_ms + offset_ms
  for word, a, b in zip(rec["src_words"], starts, ends):
    chars = tok.char_ids(word)
    if not chars or b <= a:
      continue
    bounds = a + (b - a) * np.arange(len(chars) + 1) / len(chars)
    for cid, lo, hi in zip(chars, bounds[:-1], bounds[1:]):
      out[(centres >= lo) & (centres < hi)] = cid
  return out


_PACKED = ("tokens", "loss_mask", "audio_slot_mask", "chunk_index", "audio")


def _select_packed(ex):
  return {k: ex[k] for k in _PACKED}


def _rename_packed(row):
  return dict(tokens=row["tokens"], loss_mask=row["loss_mask"],
              audio_slot_mask=row["audio_slot_mask"], chunk_index=row["chunk_index"],
              segment_ids=row["tokens_segment_ids"], positions=row["tokens_positions"],
              audio=row["audio"], audio_segment_ids=row["audio_segment_ids"])


def _pack(ds: grain.IterDataset, seq_len: int, num_bins: int,
          seed: int) -> grain.IterDataset:
  """First-fit packing of token features and audio slot rows to `seq_len`."""
  lengths = {k: seq_len for k in _PACKED}
  padding = {k: 0 for k in _PACKED}
  padding["chunk_index"] = -1
  packed = grain.experimental.FirstFitPackIterDataset(
      ds.map(_select_packed), length_struct=lengths, num_packing_bins=num_bins, seed=seed,
      shuffle_bins=True, padding_struct=padding)
  return packed.map(_rename_packed)


def pad_example(ex: Mapping[str, np.ndarray], seq_len: int,
                max_audio_slots: int | None = None, max_src_tokens: int = 0,
                frames_per_slot: int = 0) -> dict:
  """One example padded to `seq_len` tokens and `max_audio_slots` (default `seq_len`)
  audio slot rows (one segment per row). With `max_src_tokens` > 0 the row also gets
  `src_ids` int32[max_src_tokens] (0-padded) and `src_len`: the CTC target of its audio
  (length 0 = no target, also when the transcript is longer than `max_src_tokens`).
  With `frames_per_slot` > 0 it gets `src_frames` int32[max_audio_slots * frames_per_slot]:
  the per-frame source characters (`source_frame_labels`), -1 past the example's audio."""
  L, n_slots = ex["tokens"].size, ex["audio"].shape[0]
  slots = seq_len if max_audio_slots is None else max_audio_slots
  if L > seq_len or n_slots > slots:
    raise ValueError(f"example of {L} tokens / {n_slots} audio slots exceeds "
                     f"seq_len={seq_len} / max_audio_slots={slots}")

  def pad(x, n, v=0):
    out = np.full((n,) + x.shape[1:], v, x.dtype)
    out[:x.shape[0]] = x
    return out
  seg = pad(np.ones((L,), np.int32), seq_len)
  out = dict(tokens=pad(ex["tokens"], seq_len), loss_mask=pad(ex["loss_mask"], seq_len),
             audio_slot_mask=pad(ex["audio_slot_mask"], seq_len),
             chunk_index=pad(ex["chunk_index"], seq_len, -1), segment_ids=seg,
             positions=pad(np.arange(L, dtype=np.int32), seq_len),
             audio=pad(ex["audio"], slots),
             audio_segment_ids=pad(np.ones((n_slots,), np.int32), slots))
  if max_src_tokens > 0:
    src = np.asarray(ex.get("src_ids", np.zeros((0,), np.int32)), np.int32)
    if src.size > max_src_tokens:
      src = src[:0]
    out["src_ids"] = pad(src, max_src_tokens)
    out["src_len"] = np.int32(src.size)
  if frames_per_slot > 0:
    fr = np.asarray(ex.get("src_frames", np.full((n_slots * frames_per_slot,), -1, np.int32)),
                    np.int32)
    out["src_frames"] = pad(fr, slots * frames_per_slot, -1)
  if DROPS_FIELD in ex:
    out[DROPS_FIELD] = ex[DROPS_FIELD]
  return out


def stream_dataset(source: Sequence[Mapping[str, Any]], cfg, tokenizer, stage: str, *,
                   batch_size: int, seed: int = 0,
                   shard: grain.sharding.ShardOptions | None = None,
                   num_epochs: int | None = None, packing: bool = True,
                   num_packing_bins: int | None = None, shuffle: bool = True,
                   task_weights: Mapping[str, float] | None = None,
                   policy: str = "alignment", wait_k: int = 3,
                   codes_fn: CodesFn | None = None, speech_placeholder: str = "none",
                   src_transcript: bool | None = None, worker_count: int = 0,
                   read_threads: int = 2,
                   max_audio_slots: int | None = None,
                   max_src_tokens: int = 0, frame_ms: int = 0,
                   context_chunks: int | None = None,
                   drops: DropCounts | None = None) -> grain.IterDataset:
  """Pretraining (`stage='pretrain'`) or SFT (`'sft'`) batches of token rows.

  Without packing, `max_audio_slots` bounds the audio rows per example (longer examples
  are dropped and logged), so the encoder does not run over `seq_len` slots of padding.
  SFT streams longer than `seq_len` are cut into windows (`stream_format.simul_windows`,
  `context_chunks`, default `data.window_context_chunks`), each a row.

  `drops` (a `DropCounts`) receives every dropped record/example by reason. With
  `worker_count` 0 it is counted as it happens; with worker processes (unpacked only)
  the counts ride along in the examples and are added when their batch reaches this
  process (drops after the last delivered example are not seen). Packed pipelines with
  worker processes cannot report drops (logged once).

  Batch: tokens, loss_mask, audio_slot_mask, chunk_index, segment_ids, positions,
  audio_segment_ids int32[B, seq_len]; audio int16[B, seq_len, S] (S samples per slot).
  `frame_ms` > 0 (the encoder frame, unpacked only) adds `src_frames` (per-frame source
  characters, `source_frame_labels`). `src_transcript`: SFT turns start with `<src>
  newly heard source words` (None: `data.src_transcript`).
  """
  seq_len = cfg.data.seq_len
  if src_transcript is None:
    src_transcript = bool(cfg.data.get("src_transcript", False))
  spec = sfmt.StreamSpec.from_config(cfg, speech_placeholder=speech_placeholder,
                                     src_transcript=src_transcript)
  shard = shard or shard_options()
  ds = _base_dataset(source, seed, shard, num_epochs, shuffle)
  if context_chunks is None:
    context_chunks = window_context_chunks(cfg)
  carry = worker_count > 0 and drops is not None and not packing
  if worker_count > 0 and drops is not None and packing:
    logging.warning("packed pipeline with %d worker processes: dropped examples are not "
                    "reported (data_drops stays empty)", worker_count)
  ds = ds.random_map(StreamTransform(tokenizer, spec, stage, task_weights=task_weights,
                                     policy=policy, wait_k=wait_k, codes_fn=codes_fn,
                                     frame_ms=frame_ms, context_chunks=context_chunks,
                                     max_audio_slots=None if packing else max_audio_slots,
                                     drops=drops, carry_drops=carry))
  it = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                            prefetch_buffer_size=max(8, 4 * batch_size)))
  it = grain.experimental.FlatMapIterDataset(it, _Flatten())
  if packing:
    it = _pack(it, seq_len, num_packing_bins or batch_size, seed)
  else:
    it = it.map(functools.partial(pad_example, seq_len=seq_len,
                                  max_audio_slots=max_audio_slots,
                                  max_src_tokens=max_src_tokens,
                                  frames_per_slot=(spec.slot_ms // frame_ms if frame_ms
                                                   else 0)))
  return _finish(it, batch_size, worker_count, read_threads,
                 drops if carry else None)


def _finish(ds, batch_size: int, worker_count: int, read_threads: int,
            carried_drops: DropCounts | None = None) -> grain.IterDataset:
  if isinstance(ds, grain.MapDataset):
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                              prefetch_buffer_size=max(8, 4 * batch_size)))
  ds = ds.batch(batch_size, drop_remainder=True)
  if worker_count > 0:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  if carried_drops is not None:  # in this process, after the workers
    ds = ds.map(_CountBatchDrops(carried_drops))
  return ds


def make_dataset(stage: str, cfg, source: Sequence[Mapping[str, Any]], tokenizer=None, *,
                 seed: int | None = None, shard: grain.sharding.ShardOptions | None = None,
                 worker_count: int | None = None, **kwargs) -> grain.IterDataset:
  """The `stage` pipeline with batch size, seed and workers from `cfg` (per process)."""
  if stage not in STAGES:
    raise ValueError(f"stage={stage!r}: expected one of {STAGES}")
  shard = shard or shard_options()
  bs = local_batch_size(cfg.train.batch_size, shard.shard_count)
  seed = cfg.data.shuffle_seed if seed is None else seed
  wc = cfg.data.worker_count if worker_count is None else worker_count
  if stage == "codec":
    return codec_dataset(source, cfg, batch_size=bs, seed=seed, shard=shard,
                         worker_count=wc, **kwargs)
  if tokenizer is None:
    raise ValueError(f"stage {stage} needs a tokenizer")
  return stream_dataset(source, cfg, tokenizer, stage, batch_size=bs, seed=seed,
                        shard=shard, worker_count=wc, **kwargs)


# ---- global arrays & checkpoints ---------------------------------------------------------
def make_global_batch(local_batch: Mapping[str, np.ndarray], mesh: jax.sharding.Mesh,
                      rules: shard_lib.LogicalRules) -> dict[str, jax.Array]:
  """Process-local numpy batch -> global jax Arrays, leading axis over the batch mesh axes.

  `rules`: logical-axis rules as `sharding.rules_from_config` returns them. The training
  loop feeds every step through this.
  """
  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(
        shard_lib.data_sharding(mesh, x.ndim, rules), x)
  return {k: put(v) for k, v in local_batch.items()}


def orbax_save_args(iterator):
  """orbax args saving a grain iterator (use as an item of `ocp.args.Composite`)."""
  return grain.checkpoint.CheckpointSave(iterator)


def orbax_restore_args(iterator):
  """orbax args restoring into a (fresh) grain iterator of the same pipeline."""
  return grain.checkpoint.CheckpointRestore(iterator)


def take(iterator: Iterator, n: int) -> list:
  """The next `n` elements of `iterator`."""
  return [next(iterator) for _ in range(n)]
