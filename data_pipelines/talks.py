"""Long-form talks: several utterances of one speaker concatenated with pauses.

A talk record has the same schema as an utterance record (`corpus.EXAMPLE_KEYS`) with
`is_talk=True`: source audio = utt₁ + pause + utt₂ + …, target audio likewise (same
pauses), word times shifted by each utterance's offset in its audio, ready times
shifted by the *source* offset, alignment indices shifted by the word offsets.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from data_pipelines.speakers import Speaker, speaker_for
from data_pipelines.synthesis import SAMPLE_RATE, SynthesisError


@dataclasses.dataclass(frozen=True)
class TalkConfig:
  """pause_ms: (min, max) uniform pause between utterances; a talk closes once its
  source audio reaches min_duration_s (or it has max_utterances); the leftover at the
  end becomes a shorter talk when it has at least min_utterances (or no talk was made)."""
  pause_ms: tuple[float, float] = (400.0, 1500.0)
  min_duration_s: float = 120.0
  max_utterances: int = 60
  min_utterances: int = 2


def _joiner(lang: str) -> str:
  return "" if lang == "zh" else " "


def concat_examples(examples: Sequence[dict], pauses_ms: Sequence[float], talk_id: str
                    ) -> dict:
  """Concatenates utterance records (one speaker) into one talk record.

  pauses_ms: len(examples) − 1 pauses, inserted between utterances in both audios.
  """
  if not examples:
    raise ValueError(f"talk {talk_id}: no utterances")
  if len(pauses_ms) != len(examples) - 1:
    raise ValueError(f"talk {talk_id}: {len(pauses_ms)} pauses for {len(examples)} "
                     "utterances")
  speakers = {e["speaker"] for e in examples}
  if len(speakers) != 1:
    raise ValueError(f"talk {talk_id}: utterances of several speakers {sorted(speakers)}")
  first = examples[0]
  src_lang, tgt_lang = first["src_lang"], first["tgt_lang"]
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
    "speaker": first["speaker"],
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
  return out


def make_talks(items: Iterable, synth: Callable[[object, Speaker], dict], talk_prefix: str,
               config: TalkConfig | None = None, seed: int = 0,
               skipped: Callable[[object, Exception], None] | None = None
               ) -> Iterator[dict]:
  """Groups `items` (in order) into talks, each spoken by one speaker.

  synth(item, speaker) must return an utterance record; a SynthesisError skips the
  item (reported through `skipped(item, error)`). Talk t is spoken by
  `speaker_for(f"{talk_prefix}-{t}", seed)` and ids are "<talk_prefix>-<t:04d>".
  """
  config = config or TalkConfig()
  rng = np.random.default_rng([seed, 7])
  t, made = 0, 0
  buf: list[dict] = []
  dur_ms = 0.0

  def emit():
    pauses = rng.uniform(*config.pause_ms, size=len(buf) - 1).tolist()
    return concat_examples(buf, pauses, f"{talk_prefix}-{t:04d}")

  speaker = speaker_for(f"{talk_prefix}-{t}", seed)
  for item in items:
    try:
      ex = synth(item, speaker)
    except SynthesisError as e:
      if skipped is not None:
        skipped(item, e)
      continue
    if buf:
      dur_ms += 0.5 * (config.pause_ms[0] + config.pause_ms[1])  # expected pause
    buf.append(ex)
    dur_ms += 1000.0 * len(ex["src_audio"]) / SAMPLE_RATE
    if dur_ms >= 1000.0 * config.min_duration_s or len(buf) >= config.max_utterances:
      yield emit()
      made += 1
      t += 1
      buf, dur_ms = [], 0.0
      speaker = speaker_for(f"{talk_prefix}-{t}", seed)
  if buf and (len(buf) >= config.min_utterances or made == 0):
    yield emit()
