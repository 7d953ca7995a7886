"""What the evaluation streams besides the records' own source audio: audio controls
(zeroed or swapped source: does the model translate what it hears?) and two-speaker
talks built from the records (does the voice follow the speaker?)."""

from __future__ import annotations

import numpy as np

from data_pipelines import talks as talks_lib

AUDIO_VARIANTS = ("real", "zero", "swap")


def source_waves(records, audio: str = "real") -> list[np.ndarray]:
  """Each record's source audio as float32 in [-1, 1], or a control of it:

  - "zero": silence of the same length (the model hears only the stream's timing);
  - "swap": the next record's audio (last -> first), cut or zero-padded to this record's
    own length (same timing, other content).

  A model that translates what it hears scores far lower on the controls than on the
  real audio; one that replays memorised text from timing alone does not.
  """
  if audio not in AUDIO_VARIANTS:
    raise ValueError(f"audio={audio!r}: expected one of {AUDIO_VARIANTS}")
  waves = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
  if audio == "zero":
    return [np.zeros_like(w) for w in waves]
  if audio == "swap":
    out = []
    for i, w in enumerate(waves):
      other = waves[(i + 1) % len(waves)][:w.size]
      out.append(np.pad(other, (0, w.size - other.size)))
    return out
  return waves


def two_speaker_talks(records, n_talks: int, pause_ms: float = 800.0) -> list[dict]:
  """Up to `n_talks` two-speaker talks built from `records` (no synthesis): talk k =
  record i + pause + record j, i the first unused record and j the next unused record of
  another speaker (`talks.concat_examples(..., multi_speaker=True)`: word and ready times
  shifted, per-utterance speaker spans recorded). Fewer talks when the records run out
  of speaker pairs."""
  used, out = set(), []
  for i, r in enumerate(records):
    if len(out) >= n_talks:
      break
    if i in used:
      continue
    j = next((j for j in range(i + 1, len(records)) if j not in used
              and str(records[j]["speaker"]) != str(r["speaker"])), None)
    if j is None:
      continue
    used.update((i, j))
    recs = [dict(r, is_talk=False), dict(records[j], is_talk=False)]
    out.append(talks_lib.concat_examples(recs, [pause_ms], f"voice-multi-{len(out):02d}",
                                         multi_speaker=True))
  return out
