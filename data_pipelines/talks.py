"""Long-form talks: several utterances concatenated with pauses.

A talk record has the same schema as an utterance record (`corpus.EXAMPLE_KEYS`) with
`is_talk=True`: source audio = utt₁ + pause + utt₂ + …, target audio likewise (same
pauses), word times shifted by each utterance's offset in its audio, ready times
shifted by the *source* offset, alignment indices shifted by the word offsets.

Most talks have one speaker. A multi-speaker talk (`TalkConfig.multi_speaker_fraction`
of the talks, or `concat_examples(..., multi_speaker=True)`) alternates two or more
speakers of the same language with different espeak voice variants (consecutive
utterances always differ) and carries two extra keys (`SEGMENT_KEYS`):
  speaker_segments_ms float32[k, 2]: (start_ms, end_ms) of each utterance in the
    *source* audio (end = start + its duration; the pause after it belongs to nobody),
  speaker_segment_names list[str]: the speaker of each span;
its "speaker" is the speakers' names joined by "+" in order of first appearance.
Single-speaker talks and utterances have neither key (their records are exactly what
they were before); `speaker_segments(rec)` returns the spans of any record, with the
default of one span over the whole source audio.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from data_pipelines.speakers import SPEAKERS, Speaker, speaker_for
from data_pipelines.synthesis import SAMPLE_RATE, SynthesisError


@dataclasses.dataclass(frozen=True)
class TalkConfig:
  """pause_ms: (min, max) uniform pause between utterances; a talk closes once its
  source audio reaches min_duration_s (or it has max_utterances); the leftover at the
  end becomes a shorter talk when it has at least min_utterances (or no talk was made).

  multi_speaker_fraction: share of talks (drawn per talk id and seed) whose utterances
  alternate `speakers_per_talk` speakers (module docstring); 0 = every talk has one
  speaker, exactly as before the option existed."""
  pause_ms: tuple[float, float] = (400.0, 1500.0)
  min_duration_s: float = 120.0
  max_utterances: int = 60
  min_utterances: int = 2
  multi_speaker_fraction: float = 0.0
  speakers_per_talk: int = 2

  def __post_init__(self):
    if not 0.0 <= float(self.multi_speaker_fraction) <= 1.0:
      raise ValueError(f"TalkConfig.multi_speaker_fraction={self.multi_speaker_fraction!r}:"
                       " expected a fraction in [0, 1]")
    if int(self.speakers_per_talk) < 2:
      raise ValueError(f"TalkConfig.speakers_per_talk={self.speakers_per_talk!r}: a "
                       "multi-speaker talk needs at least 2 speakers")


SEGMENT_KEYS = ("speaker_segments_ms", "speaker_segment_names")


def speaker_segments(rec: dict, sample_rate: int = SAMPLE_RATE
                     ) -> tuple[np.ndarray, list[str]]:
  """(spans float32[k, 2] of (start_ms, end_ms) in the source audio, speaker names) of
  any record: its `speaker_segments_*` keys (or the JSON string `speaker_segments` of a
  TFDS build, `tfds_builders.liveinterp_corpus`) when present and non-empty, else one span
  over the whole source audio spoken by rec["speaker"] (single-speaker records and
  builds made before the keys existed)."""
  spans = rec.get("speaker_segments_ms")
  names = rec.get("speaker_segment_names")
  stored = rec.get("speaker_segments")  # a TFDS build's JSON string (tfds_builders)
  if isinstance(stored, (bytes, np.bytes_)):
    stored = stored.decode("utf-8")
  if names is None and isinstance(stored, str) and stored:
    try:
      d = json.loads(stored)
      spans, names = d["spans_ms"], d["names"]
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"record {rec.get('id')!r}: unreadable speaker_segments "
                       f"{stored[:80]!r}: {e}") from e
  if spans is not None and names is not None and len(names):
    spans = np.asarray(spans, np.float32).reshape(-1, 2)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    if len(names) != len(spans):
      raise ValueError(f"record {rec.get('id')!r}: speaker_segments_ms has {len(spans)} "
                       f"spans for {len(names)} speaker_segment_names")
    return spans, names
  dur = 1000.0 * len(rec["src_audio"]) / sample_rate
  spk = rec["speaker"]
  spk = spk.decode() if isinstance(spk, bytes) else str(spk)
  return np.asarray([[0.0, dur]], np.float32), [spk]


def speaker_at(spans: np.ndarray, names: Sequence[str], t_ms: float) -> str:
  """The speaker of the last span starting at or before `t_ms` (a pause belongs to the
  speaker before it; before the first span: the first speaker)."""
  starts = np.asarray(spans, np.float64).reshape(-1, 2)[:, 0]
  k = int(np.searchsorted(starts, float(t_ms), side="right")) - 1
  return names[max(k, 0)]


def _joiner(lang: str) -> str:
  return "" if lang == "zh" else " "


def concat_examples(examples: Sequence[dict], pauses_ms: Sequence[float], talk_id: str,
                    multi_speaker: bool = False) -> dict:
  """Concatenates utterance records (one speaker) into one talk record.

  pauses_ms: len(examples) − 1 pauses, inserted between utterances in both audios.
  multi_speaker: allow utterances of several speakers (same languages); the record then
  gets `SEGMENT_KEYS` (module docstring): one span per utterance, or an input's own spans
  when it has several (a multi-speaker talk). Without it, several speakers raise
  ValueError.
  """
  if not examples:
    raise ValueError(f"talk {talk_id}: no utterances")
  if len(pauses_ms) != len(examples) - 1:
    raise ValueError(f"talk {talk_id}: {len(pauses_ms)} pauses for {len(examples)} "
                     "utterances")
  speakers = {e["speaker"] for e in examples}
  if len(speakers) != 1 and not multi_speaker:
    raise ValueError(f"talk {talk_id}: utterances of several speakers {sorted(speakers)}")
  first = examples[0]
  src_lang, tgt_lang = first["src_lang"], first["tgt_lang"]
  for i, e in enumerate(examples):
    if (e["src_lang"], e["tgt_lang"]) != (src_lang, tgt_lang):
      raise ValueError(f"talk {talk_id}: utterance {i} ({e.get('id')}) is "
                       f"{e['src_lang']}->{e['tgt_lang']}, the talk {src_lang}->{tgt_lang}")
  spans, span_names = [], []
  src_audio, tgt_audio = [], []
  src_words, tgt_words = [], []
  times = {k: [] for k in ("src_word_start_ms", "src_word_end_ms", "tgt_word_start_ms",
                           "tgt_word_end_ms", "tgt_ready_ms")}
  aligns = []
  src_off = tgt_off = 0  # samples
  n_src = n_tgt = 0  # words
  for i, e in enumerate(examples):
    if i:
      pause = np.zeros(int(round(pauses_ms[i - 1] * SAMPLE_RATE / 1000)), np.int16)
      src_audio.append(pause)
      tgt_audio.append(pause)
      src_off += len(pause)
      tgt_off += len(pause)
    s_ms, t_ms = 1000.0 * src_off / SAMPLE_RATE, 1000.0 * tgt_off / SAMPLE_RATE
    if multi_speaker:  # the utterance's own spans (several for a multi-speaker input)
      sp, nm = speaker_segments(e)
      spans += [(s_ms + float(a), s_ms + float(b)) for a, b in sp]
      span_names += nm
    src_audio.append(e["src_audio"])
    tgt_audio.append(e["tgt_audio"])
    times["src_word_start_ms"].append(e["src_word_start_ms"] + s_ms)
    times["src_word_end_ms"].append(e["src_word_end_ms"] + s_ms)
    times["tgt_word_start_ms"].append(e["tgt_word_start_ms"] + t_ms)
    times["tgt_word_end_ms"].append(e["tgt_word_end_ms"] + t_ms)
    times["tgt_ready_ms"].append(e["tgt_ready_ms"] + s_ms)
    aligns.append(np.asarray(e["alignment"], np.int32).reshape(-1, 2)
                  + np.asarray([n_tgt, n_src], np.int32))
    src_words += list(e["src_words"])
    tgt_words += list(e["tgt_words"])
    n_src += len(e["src_words"])
    n_tgt += len(e["tgt_words"])
    src_off += len(e["src_audio"])
    tgt_off += len(e["tgt_audio"])
  out = {
    "id": talk_id,
    "source": "+".join(sorted({e["source"] for e in examples})),
    "speaker": ("+".join(dict.fromkeys(span_names)) if multi_speaker
                else first["speaker"]),
    "src_lang": src_lang, "tgt_lang": tgt_lang,
    "src_text": _joiner(src_lang).join(e["src_text"] for e in examples),
    "tgt_text": _joiner(tgt_lang).join(e["tgt_text"] for e in examples),
    "src_audio": np.concatenate(src_audio).astype(np.int16),
    "tgt_audio": np.concatenate(tgt_audio).astype(np.int16),
    "src_words": src_words,
    "tgt_words": tgt_words,
    "alignment": np.concatenate(aligns).astype(np.int32),
    "is_talk": True,
  }
  for k, v in times.items():
    out[k] = np.concatenate(v).astype(np.float32)
  # Ready times of a later utterance never precede an earlier one's, but keep the
  # invariant explicit (monotone over the whole talk).
  out["tgt_ready_ms"] = np.maximum.accumulate(out["tgt_ready_ms"]).astype(np.float32)
  if multi_speaker:
    out["speaker_segments_ms"] = np.asarray(spans, np.float32).reshape(-1, 2)
    out["speaker_segment_names"] = [str(n) for n in span_names]
  return out


def _unit(seed: int, *parts) -> float:
  """Deterministic uniform [0, 1) of (seed, parts) (sha256; independent of call order)."""
  key = "\0".join([str(seed)] + [str(p) for p in parts])
  h = hashlib.sha256(key.encode("utf-8")).digest()
  return int.from_bytes(h[:8], "big") / 2.0 ** 64


def talk_speakers(talk_id: str, seed: int, n: int, first: Speaker,
                  voice_map: Callable[[Speaker], Speaker] | None = None) -> list[Speaker]:
  """`n` speakers of a multi-speaker talk: `first`, then speakers drawn deterministically
  (talk id, seed) among the voices `voice_map` can produce (all `SPEAKERS` by default),
  each with an espeak voice variant none of the others has. ValueError when there are
  fewer than `n` variants to choose from."""
  vm = voice_map or (lambda s: s)
  pool = list({vm(s).name: vm(s) for s in SPEAKERS}.values())
  chosen = [first]
  while len(chosen) < n:
    cands = sorted((s for s in pool if s.variant not in {c.variant for c in chosen}),
                   key=lambda s: s.name)
    if not cands:
      raise ValueError(f"talk {talk_id}: {n} speakers with different voice variants "
                       f"wanted, but the voices available ({sorted(s.name for s in pool)}) "
                       f"have only {len({s.variant for s in pool})} variants")
    chosen.append(cands[int(_unit(seed, talk_id, "speaker", len(chosen)) * len(cands))])
  return chosen


def utterance_speaker(talk_id: str, seed: int, j: int, speakers: Sequence[Speaker],
                      previous: Speaker | None) -> Speaker:
  """Speaker of utterance j of a multi-speaker talk: drawn (talk id, seed, j) among the
  talk's speakers other than the previous utterance's (two speakers: they alternate)."""
  cands = [s for s in speakers if previous is None or s.name != previous.name]
  return cands[int(_unit(seed, talk_id, "utt", j) * len(cands))]


def is_multi_speaker(talk_id: str, seed: int, fraction: float) -> bool:
  """Whether talk `talk_id` has several speakers (a draw of (talk id, seed) < fraction)."""
  return fraction > 0.0 and _unit(seed, talk_id, "multi") < fraction


def make_talks(items: Iterable, synth: Callable[[object, Speaker], dict], talk_prefix: str,
               config: TalkConfig | None = None, seed: int = 0,
               skipped: Callable[[object, Exception], None] | None = None,
               voice_map: Callable[[Speaker], Speaker] | None = None) -> Iterator[dict]:
  """Groups `items` (in order) into talks.

  synth(item, speaker) must return an utterance record; a SynthesisError skips the
  item (reported through `skipped(item, error)`). Talk t is spoken by
  `voice_map(speaker_for(f"{talk_prefix}-{t}", seed))` (voice_map: e.g. the corpus's
  mapping into its first N voices; default identity) and ids are
  "<talk_prefix>-<t:04d>". A talk drawn multi-speaker (`is_multi_speaker` of
  "<talk_prefix>-<t>", `config.multi_speaker_fraction`) gets `config.speakers_per_talk`
  speakers (`talk_speakers`, the first being the one above) and each utterance's
  speaker from `utterance_speaker` (an item skipped by synth does not advance it).
  """
  config = config or TalkConfig()
  vm = voice_map or (lambda s: s)
  rng = np.random.default_rng([seed, 7])
  t, made = 0, 0
  buf: list[dict] = []
  dur_ms = 0.0

  def emit():
    pauses = rng.uniform(*config.pause_ms, size=len(buf) - 1).tolist()
    return concat_examples(buf, pauses, f"{talk_prefix}-{t:04d}", multi_speaker=multi)

  def start(t):
    key = f"{talk_prefix}-{t}"
    first = vm(speaker_for(key, seed))
    if not is_multi_speaker(key, seed, config.multi_speaker_fraction):
      return first, False, [first]
    return first, True, talk_speakers(key, seed, int(config.speakers_per_talk), first, vm)

  speaker, multi, cast = start(t)
  prev = speaker  # speaker of the last utterance in buf
  for item in items:
    if multi:
      speaker = utterance_speaker(f"{talk_prefix}-{t}", seed, len(buf), cast,
                                  prev if buf else None)
    try:
      ex = synth(item, speaker)
    except SynthesisError as e:
      if skipped is not None:
        skipped(item, e)
      continue
    if buf:
      dur_ms += 0.5 * (config.pause_ms[0] + config.pause_ms[1])  # expected pause
    buf.append(ex)
    prev = speaker
    dur_ms += 1000.0 * len(ex["src_audio"]) / SAMPLE_RATE
    if dur_ms >= 1000.0 * config.min_duration_s or len(buf) >= config.max_utterances:
      yield emit()
      made += 1
      t += 1
      buf, dur_ms = [], 0.0
      speaker, multi, cast = start(t)
  if buf and (len(buf) >= config.min_utterances or made == 0):
    yield emit()
