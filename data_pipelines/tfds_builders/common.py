"""Shared pieces of the TFDS builders: the record features, audio loading, build stats.

Every builder writes the same record schema (the one `data_pipelines.corpus` yields), so
the grain pipelines read synthetic and user corpora alike:

```
id, source, speaker, src_lang, tgt_lang, src_text, tgt_text      str
src_audio int16[N], tgt_audio int16[M]                            16 kHz mono PCM
src_words list[str], src_word_start_ms/src_word_end_ms f32[n]     -1 where unknown
tgt_words list[str], tgt_word_start_ms/tgt_word_end_ms f32[m]     -1 where unknown
tgt_ready_ms f32[m]            ready time of each target word vs the source audio, -1 unknown
alignment int32[k, 2]          (tgt word index, src word index) pairs
is_talk bool
```

Audio is stored as `tfds.features.Tensor(shape=(None,), dtype=np.int16)` with raw-bytes
encoding (no TF needed to decode) and the sample rate in the dataset metadata.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import unicodedata
from typing import Any, Mapping

import numpy as np
import soundfile as sf
import soxr
import tensorflow_datasets as tfds

SAMPLE_RATE = 16000
UNKNOWN_MS = -1.0  # timing value for corpora without word timestamps
MAX_NAMED_SKIPS = 200  # skipped items listed by name in the stats (the rest only counted)
# A record with more text per second of its audio than this is dropped at build time
# (reason `text_too_long_for_audio`): fast speech is ~15 chars/s in English and ~5 in
# Chinese, so 50 only catches text that does not belong to the clip (a whole paragraph
# for a 1 s clip), which the training pipeline would otherwise drop silently later.
MAX_CHARS_PER_SECOND = 50.0
NO_SPLIT = "(no split)"  # stats key of TSV rows that name no usable split

STRING_FIELDS = ("id", "source", "speaker", "src_lang", "tgt_lang", "src_text", "tgt_text")
AUDIO_FIELDS = ("src_audio", "tgt_audio")
WORD_FIELDS = ("src_words", "tgt_words")
TIMING_FIELDS = {"src_word_start_ms": "src_words", "src_word_end_ms": "src_words",
                 "tgt_word_start_ms": "tgt_words", "tgt_word_end_ms": "tgt_words",
                 "tgt_ready_ms": "tgt_words"}
RECORD_FIELDS = (STRING_FIELDS + AUDIO_FIELDS + WORD_FIELDS + tuple(TIMING_FIELDS)
                 + ("alignment", "is_talk"))


class RecordError(ValueError):
  """One record/file cannot be used; `reason` is a short stats key, the message names it."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


class AudioDecodeUnavailable(RuntimeError):
  """This machine cannot decode a whole audio format (e.g. MP3 without libsndfile 1.1)."""


def record_features() -> tfds.features.FeaturesDict:
  """The TFDS features of one record (see the module docstring)."""
  f = tfds.features
  feats: dict[str, Any] = {k: f.Text() for k in STRING_FIELDS}
  for k in AUDIO_FIELDS:
    # Raw bytes: without an encoding, tf.Example upcasts int16 to int64 varints
    # (~2x the disk and ~5x the parse time).
    feats[k] = f.Tensor(shape=(None,), dtype=np.int16, encoding=f.Encoding.BYTES)
  for k in WORD_FIELDS:
    feats[k] = f.Sequence(f.Text())
  for k in TIMING_FIELDS:
    feats[k] = f.Tensor(shape=(None,), dtype=np.float32)
  feats["alignment"] = f.Tensor(shape=(None, 2), dtype=np.int32)
  feats["is_talk"] = f.Scalar(dtype=np.bool_)
  return f.FeaturesDict(feats)


# ---- text ---------------------------------------------------------------------------
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]")
_WORDS_CJK = re.compile(
    r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]"
    r"|[^\s\W\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff]+", re.UNICODE)


def split_words(text: str, lang: str) -> list[str]:
  """Words of `text`: whitespace tokens, or single characters for Chinese/Japanese script.

  Punctuation is dropped (it has no duration of its own in speech).
  """
  text = unicodedata.normalize("NFKC", text)
  base = lang.split("-")[0].lower()
  if base in ("zh", "ja") or _CJK.search(text):
    return _WORDS_CJK.findall(text)
  words = []
  for w in text.split():
    w = w.strip(".,;:!?\"()[]{}«»“”‘’¡¿")
    if w:
      words.append(w)
  return words


# ---- audio --------------------------------------------------------------------------
@dataclasses.dataclass
class AudioInfo:
  """What `load_audio` did to a file (for the build stats)."""
  orig_rate: int
  channels: int
  resampled: bool
  downmixed: bool


def mp3_supported() -> bool:
  """Whether the installed libsndfile decodes MP3 (libsndfile >= 1.1)."""
  return "MP3" in sf.available_formats()


def to_int16(x: np.ndarray) -> np.ndarray:
  """Float audio in [-1, 1] -> int16 PCM (clipped, rounded)."""
  return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def load_audio(path: str, *, sample_rate: int = SAMPLE_RATE,
               max_seconds: float | None = None, min_seconds: float = 0.05,
               ) -> tuple[np.ndarray, AudioInfo]:
  """Reads one audio file as int16 mono at `sample_rate`.

  Stereo is averaged to mono and other rates are resampled with soxr. Raises
  `RecordError` (a counted skip) for missing, corrupt, empty, too short/long, silent or
  non-finite audio, and `AudioDecodeUnavailable` when the whole format (MP3) cannot be
  decoded on this machine.
  """
  name = os.fspath(path)
  if not os.path.exists(name):
    raise RecordError("missing_audio", f"{name}: audio file does not exist")
  if name.lower().endswith(".mp3") and not mp3_supported():
    raise AudioDecodeUnavailable(
        f"{name}: cannot decode MP3 here (libsndfile {sf.__libsndfile_version__} has no "
        f"MPEG support; it needs libsndfile >= 1.1). Convert the clips to WAV/FLAC first, "
        f"e.g. `ffmpeg -i X.mp3 -ar 16000 X.wav`, and point the TSV paths at them")
  try:
    x, sr = sf.read(name, dtype="float32", always_2d=True)
  except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError/TypeError
    raise RecordError("corrupt_audio", f"{name}: cannot decode audio ({e})") from e
  if x.size == 0 or x.shape[0] == 0:
    raise RecordError("empty_audio", f"{name}: audio has no samples")
  channels = x.shape[1]
  x = x.mean(axis=1) if channels > 1 else x[:, 0]
  if not np.all(np.isfinite(x)):
    raise RecordError("nonfinite_audio", f"{name}: audio has NaN/inf samples")
  resampled = sr != sample_rate
  if resampled:
    x = soxr.resample(x, sr, sample_rate, quality="HQ").astype(np.float32)
  seconds = x.shape[0] / sample_rate
  if seconds < min_seconds:
    raise RecordError("too_short_audio", f"{name}: audio is {seconds:.3f} s long "
                      f"(< {min_seconds} s)")
  if max_seconds is not None and seconds > max_seconds:
    raise RecordError("too_long_audio", f"{name}: audio is {seconds:.1f} s long "
                      f"(> {max_seconds} s)")
  pcm = to_int16(x)
  if not np.any(pcm):
    raise RecordError("silent_audio", f"{name}: audio is all zeros")
  return pcm, AudioInfo(orig_rate=int(sr), channels=int(channels), resampled=resampled,
                        downmixed=channels > 1)


# ---- TSV rows -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BadRow:
  """A TSV row that cannot be read (a counted skip, reason `malformed_tsv_row`)."""
  path: str
  line: int
  message: str
  split: str | None = None  # where the row would have gone, when it says

  @property
  def item(self) -> str:
    return f"{os.path.basename(self.path)}:{self.line}"


def read_headed_tsv(path: str) -> tuple[list[dict[str, str]], list[BadRow]]:
  """Rows of a headed TSV (no quoting, as Common Voice / CoVoST write them), and the
  rows whose number of fields differs from the header's (not used, counted)."""
  rows, bad = [], []
  with open(path, encoding="utf-8", newline="") as f:
    header = None
    for ln, line in enumerate(f, 1):
      line = line.rstrip("\n").rstrip("\r")
      if header is None:
        header = line.split("\t")
        continue
      if not line.strip():
        continue
      parts = line.split("\t")
      if len(parts) != len(header):
        split = None  # the `split` field; a last column stays last with a field too many
        if "split" in header:
          i = header.index("split")
          i = len(parts) - 1 if i == len(header) - 1 else i
          split = (parts[i].strip() or None) if len(parts) > i else None
        bad.append(BadRow(path, ln, f"{path}:{ln}: {len(parts)} tab-separated fields, the "
                          f"header has {len(header)} ({line[:80]!r})", split))
        continue
      rows.append(dict(zip(header, parts)))
  return rows, bad


# ---- records ------------------------------------------------------------------------
def check_text_rate(rec: Mapping[str, Any], max_chars_per_second: float | None,
                    sample_rate: int = SAMPLE_RATE):
  """RecordError `text_too_long_for_audio` when the source (or target) text has more than
  `max_chars_per_second` characters per second of its audio (None: no limit)."""
  if not max_chars_per_second:
    return
  for text_key, audio_key in (("src_text", "src_audio"), ("tgt_text", "tgt_audio")):
    n = len(rec[audio_key])
    if n == 0:  # no audio for this side (CoVoST has no target speech)
      continue
    seconds = n / sample_rate
    rate = len(rec[text_key]) / seconds
    if rate > max_chars_per_second:
      raise RecordError(
          "text_too_long_for_audio",
          f"record {rec.get('id')!r}: {text_key} has {len(rec[text_key])} characters for "
          f"{seconds:.2f} s of {audio_key} ({rate:.0f} chars/s > max_chars_per_second="
          f"{max_chars_per_second:g})")


def _f32(v, name, rid) -> np.ndarray:
  a = np.asarray(v, dtype=np.float32).reshape(-1) if v is not None else None
  if a is None:
    raise RecordError("bad_record", f"record {rid!r}: field {name} is missing")
  return a


def validate_record(rec: Mapping[str, Any], *, max_seconds: float | None = None,
                    sample_rate: int = SAMPLE_RATE) -> dict:
  """Checks one record against the schema and returns it in the stored dtypes.

  Raises `RecordError` naming the record and the field for anything that would break a
  consumer: missing fields, wrong audio dtype/rank, empty or over-long source audio,
  timing arrays whose length differs from the words, non-monotone ready times, alignment
  pairs out of range.
  """
  rid = rec.get("id", "<no id>") if isinstance(rec, Mapping) else "<not a dict>"
  if not isinstance(rec, Mapping):
    raise RecordError("bad_record", f"record {rid}: expected a dict, got {type(rec)}")
  missing = [k for k in RECORD_FIELDS if k not in rec]
  if missing:
    raise RecordError("bad_record", f"record {rid!r}: missing fields {missing}")
  out: dict[str, Any] = {}
  for k in STRING_FIELDS:
    if not isinstance(rec[k], str):
      raise RecordError("bad_record", f"record {rid!r}: {k} must be str, got "
                        f"{type(rec[k]).__name__}")
    out[k] = rec[k]
  for k in AUDIO_FIELDS:
    a = np.asarray(rec[k])
    if a.ndim != 1:
      raise RecordError("bad_audio", f"record {rid!r}: {k} has shape {a.shape}, expected "
                        f"1-D int16 samples (mono)")
    if a.dtype != np.int16:
      if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)):
          raise RecordError("nonfinite_audio", f"record {rid!r}: {k} has NaN/inf")
        a = to_int16(a)
      else:
        raise RecordError("bad_audio", f"record {rid!r}: {k} has dtype {a.dtype}, "
                          f"expected int16")
    out[k] = a
  if out["src_audio"].size == 0:
    raise RecordError("empty_audio", f"record {rid!r}: src_audio is empty")
  if max_seconds is not None:
    for k in AUDIO_FIELDS:
      sec = out[k].size / sample_rate
      if sec > max_seconds:
        raise RecordError("too_long_audio", f"record {rid!r}: {k} is {sec:.1f} s long "
                          f"(> {max_seconds} s)")
  for k in WORD_FIELDS:
    words = list(rec[k])
    if not all(isinstance(w, str) for w in words):
      raise RecordError("bad_record", f"record {rid!r}: {k} must be a list of str")
    out[k] = words
  for k, wk in TIMING_FIELDS.items():
    a = _f32(rec[k], k, rid)
    if a.size != len(out[wk]):
      raise RecordError("bad_timing", f"record {rid!r}: {k} has {a.size} values for "
                        f"{len(out[wk])} {wk}")
    if not np.all(np.isfinite(a)):
      raise RecordError("bad_timing", f"record {rid!r}: {k} has NaN/inf")
    out[k] = a
  known = out["tgt_ready_ms"] >= 0
  if known.any() and np.any(np.diff(out["tgt_ready_ms"][known]) < 0):
    raise RecordError("bad_timing", f"record {rid!r}: tgt_ready_ms is not monotone")
  al = np.asarray(rec["alignment"], dtype=np.int64)
  if al.size == 0:
    al = al.reshape(0, 2)
  if al.ndim != 2 or al.shape[1] != 2:
    raise RecordError("bad_alignment", f"record {rid!r}: alignment has shape {al.shape}, "
                      f"expected [k, 2]")
  if al.size and (al.min() < 0 or al[:, 0].max() >= len(out["tgt_words"])
                  or al[:, 1].max() >= len(out["src_words"])):
    raise RecordError("bad_alignment", f"record {rid!r}: alignment (tgt, src) pair out of range "
                      f"of {len(out['tgt_words'])} tgt / {len(out['src_words'])} src words")
  out["alignment"] = al.astype(np.int32)
  out["is_talk"] = bool(rec["is_talk"])
  return out


def untimed_record(*, rid: str, source: str, speaker: str, src_lang: str, tgt_lang: str,
                   src_text: str, tgt_text: str, src_audio: np.ndarray,
                   tgt_audio: np.ndarray | None) -> dict:
  """A record for corpora without word timestamps (timings -1, no alignment)."""
  sw, tw = split_words(src_text, src_lang), split_words(tgt_text, tgt_lang)
  unk = lambda n: np.full((n,), UNKNOWN_MS, np.float32)  # noqa: E731
  return dict(
      id=rid, source=source, speaker=speaker, src_lang=src_lang, tgt_lang=tgt_lang,
      src_text=src_text, tgt_text=tgt_text, src_audio=src_audio,
      tgt_audio=(np.zeros((0,), np.int16) if tgt_audio is None else tgt_audio),
      src_words=sw, src_word_start_ms=unk(len(sw)), src_word_end_ms=unk(len(sw)),
      tgt_words=tw, tgt_word_start_ms=unk(len(tw)), tgt_word_end_ms=unk(len(tw)),
      tgt_ready_ms=unk(len(tw)), alignment=np.zeros((0, 2), np.int32), is_talk=False)


def decode_example(ex: Mapping[str, Any]) -> dict:
  """A record read back from TFDS (bytes, numpy) -> the corpus schema (str, lists)."""
  out = {}
  for k, v in ex.items():
    if k in STRING_FIELDS:
      out[k] = v.decode("utf-8") if isinstance(v, (bytes, np.bytes_)) else str(v)
    elif k in WORD_FIELDS:
      out[k] = [w.decode("utf-8") if isinstance(w, (bytes, np.bytes_)) else str(w)
                for w in np.asarray(v, dtype=object).reshape(-1)]
    elif k == "is_talk":
      out[k] = bool(v)
    else:
      out[k] = v
  return out


# ---- build stats --------------------------------------------------------------------
class BuildStats:
  """Counts of what a build kept and skipped (and why), per split; JSON-serialisable."""

  def __init__(self):
    self.splits: dict[str, dict[str, Any]] = {}

  def _split(self, split: str) -> dict[str, Any]:
    return self.splits.setdefault(split, dict(
        examples=0, skipped=0, skip_reasons=collections.Counter(), skipped_items=[],
        per_source=collections.Counter(), src_seconds=0.0, tgt_seconds=0.0,
        resampled=0, downmixed=0))

  def kept(self, split: str, rec: Mapping[str, Any], sample_rate: int = SAMPLE_RATE):
    s = self._split(split)
    s["examples"] += 1
    s["per_source"][rec["source"]] += 1
    s["src_seconds"] += len(rec["src_audio"]) / sample_rate
    s["tgt_seconds"] += len(rec["tgt_audio"]) / sample_rate

  def audio(self, split: str, info: AudioInfo):
    s = self._split(split)
    s["resampled"] += int(info.resampled)
    s["downmixed"] += int(info.downmixed)

  def skipped(self, split: str, item: str, reason: str, message: str = ""):
    s = self._split(split)
    s["skipped"] += 1
    s["skip_reasons"][reason] += 1
    if len(s["skipped_items"]) < MAX_NAMED_SKIPS:
      s["skipped_items"].append(dict(item=item, reason=reason, message=message))

  def as_dict(self) -> dict[str, Any]:
    out = {}
    for split, s in self.splits.items():
      d = dict(s)
      d["skip_reasons"] = dict(s["skip_reasons"])
      d["per_source"] = dict(s["per_source"])
      d["src_seconds"] = round(s["src_seconds"], 3)
      d["tgt_seconds"] = round(s["tgt_seconds"], 3)
      out[split] = d
    return out

  def per_source_totals(self) -> dict[str, int]:
    tot = collections.Counter()
    for s in self.splits.values():
      tot.update(s["per_source"])
    return dict(tot)


def dir_size_bytes(path: str) -> int:
  """Total size of the files under `path`."""
  total = 0
  for root, _, files in os.walk(path):
    for f in files:
      try:
        total += os.path.getsize(os.path.join(root, f))
      except OSError:
        pass
  return total
