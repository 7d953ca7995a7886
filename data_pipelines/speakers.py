"""Synthetic speakers: an espeak-ng voice variant with fixed pitch, rate and range.

A speaker keeps the same variant, pitch, rate and range in every language; only the
language voice changes (`cmn`, `en-us`, `es`, `de`). So a speaker's Chinese and English
utterances share timbre and prosody settings, which is the supervision the
voice-cloning adapter needs (translation spoken in the source speaker's voice).
"""

from __future__ import annotations

import dataclasses
import hashlib

# espeak-ng language voice per language code of the corpus.
LANG_VOICES = {"zh": "cmn", "en": "en-us", "es": "es", "de": "de"}


@dataclasses.dataclass(frozen=True)
class Speaker:
  """One synthetic speaker.

  name: "spk00"…; variant: espeak voice variant ("m1"…"m7", "f1"…"f5");
  pitch: base pitch 0–100 (espeak default 50); rate: words per minute (default 175);
  pitch_range: intonation range 0–100 (default 50).
  """
  name: str
  variant: str
  pitch: int
  rate: int
  pitch_range: int

  def voice_name(self, lang: str) -> str:
    """espeak voice name for `lang`, e.g. "cmn+f3"."""
    if lang not in LANG_VOICES:
      raise ValueError(f"speaker {self.name}: no espeak voice for language {lang!r}; "
                       f"known: {sorted(LANG_VOICES)}")
    return f"{LANG_VOICES[lang]}+{self.variant}"


# (variant, pitch, rate, range): 12 distinct variants, then 6 more speakers that reuse a
# variant with clearly different pitch and rate. Female variants get higher pitch.
_TABLE = (
  ("m1", 38, 165, 45), ("m2", 44, 180, 55), ("m3", 32, 155, 40), ("m4", 48, 190, 60),
  ("m5", 40, 170, 50), ("m6", 35, 185, 35), ("m7", 46, 160, 65),
  ("f1", 62, 170, 55), ("f2", 68, 180, 60), ("f3", 58, 160, 50), ("f4", 72, 175, 70),
  ("f5", 64, 190, 45),
  ("m1", 26, 195, 30), ("m3", 55, 150, 70), ("m5", 30, 140, 55),
  ("f1", 80, 150, 40), ("f3", 75, 200, 65), ("f5", 52, 155, 75),
)
SPEAKERS = tuple(Speaker(f"spk{i:02d}", v, p, r, g) for i, (v, p, r, g) in enumerate(_TABLE))
SPEAKERS_BY_NAME = {s.name: s for s in SPEAKERS}


def get_speaker(name: str) -> Speaker:
  """The speaker called `name` ("spk03"); KeyError lists the known names."""
  try:
    return SPEAKERS_BY_NAME[name]
  except KeyError:
    raise KeyError(f"unknown speaker {name!r}; known: {sorted(SPEAKERS_BY_NAME)}") from None


def speaker_for(item_id: str, seed: int = 0, num_voices: int | None = None) -> Speaker:
  """Deterministic speaker of an item: sha256(seed, item_id) mod the number of speakers.

  num_voices: pick among the first N of `SPEAKERS` only (a corpus-size knob, e.g. fewer
  voices for the laptop build); None = all of them (the same choice as before the knob).
  """
  n = len(SPEAKERS) if num_voices is None else int(num_voices)
  if not 1 <= n <= len(SPEAKERS):
    raise ValueError(f"num_voices={num_voices!r}: expected 1..{len(SPEAKERS)} or None")
  h = hashlib.sha256(f"{seed}\0{item_id}".encode("utf-8")).digest()
  return SPEAKERS[int.from_bytes(h[:8], "big") % n]
