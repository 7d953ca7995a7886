"""Offline speech recognisers for ASR-BLEU (`quality.asr_bleu`).

Only English has an offline recogniser here: PocketSphinx 5.1.1 with the US-English
acoustic model, dictionary and language model that ship inside its wheel (nothing is
downloaded). It is an *independent* judge (`self_judged=False`), but a weak one: on
espeak speech it gets short, common sentences roughly right and mangles the rest, so
its ASR-BLEU is useful for comparing systems on the same set, not as an absolute score.

Behaviour of `PocketSphinxRecognizer.__call__`:
- float audio at any rate is resampled to 16 kHz (soxr), clipped to [-1, 1] and
  converted to int16; int16 input is taken as is (scaled by 1/32768).
- empty audio, and audio whose loudest 20 ms frame is below `silence_dbfs` (default
  -50 dBFS), returns "" (PocketSphinx otherwise hallucinates words on silence).
- non-finite samples, non-1-D arrays and non-positive rates raise ValueError.
- the feature extractor is re-initialised before every utterance, so a transcript does
  not depend on what was decoded before (PocketSphinx carries its cepstral-mean estimate
  across utterances otherwise).
- the transcript is lowercased; filler tokens (`<sil>`, `[noise]`) and alternate
  pronunciation marks (`word(2)`) are removed.

Its spelling is that of its lexicon (`lexicon_words`): lower-case words, no digits (a
spoken "25" comes out as "twenty five"), apostrophes inside words ("it's", "o'clock"),
a few hyphenated compounds and dotted letters ("a."). ASR-BLEU therefore normalises the
transcripts and the references alike (`quality.asr_normalize`) before scoring.
"""

from __future__ import annotations

import re
import threading

import numpy as np

from liveinterp.common import audio as audio_lib

SAMPLE_RATE = 16000
_FILLER = re.compile(r"<[^>]*>|\[[^\]]*\]|\(\d+\)")


class NoRecognizerError(ValueError):
  """No offline recogniser exists for the requested language."""


def _to_int16_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
  """1-D float (or int16) audio at `sample_rate` -> int16 at 16 kHz; checks the input
  (`common.audio.check_waveform`: errors name the recogniser input)."""
  x = audio_lib.check_waveform(audio, sample_rate, "recogniser input")
  x = audio_lib.resample(x, int(sample_rate), SAMPLE_RATE)
  return (np.clip(x, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def peak_frame_dbfs(x: np.ndarray, sample_rate: int = SAMPLE_RATE,
                    frame_ms: float = 20.0) -> float:
  """RMS level in dBFS of the loudest non-overlapping frame of int16 audio; -inf if
  the audio is empty or digital silence."""
  hop = max(1, int(sample_rate * frame_ms / 1000))
  if x.size == 0:
    return float("-inf")
  n = -(-x.size // hop)
  f = np.zeros(n * hop, np.float64)
  f[:x.size] = x.astype(np.float64) / 32768.0
  rms = np.sqrt(np.mean(f.reshape(n, hop) ** 2, axis=1)).max()
  return float(20.0 * np.log10(rms)) if rms > 0 else float("-inf")


class PocketSphinxRecognizer:
  """English recogniser with the model inside the pocketsphinx wheel (see module doc).

  The decoder is created on the first call and reused; calls are serialised by a lock
  (the decoder is stateful). `silence_dbfs`: loudest-frame level below which the audio
  counts as silence and "" is returned without decoding.
  """
  name = "pocketsphinx-en"
  self_judged = False

  def __init__(self, silence_dbfs: float = -50.0):
    self.silence_dbfs = float(silence_dbfs)
    self._decoder = None
    self._lock = threading.Lock()

  def _get_decoder(self):
    """The decoder, created once (about 0.5 s: loads the wheel's en-us model)."""
    if self._decoder is None:
      from pocketsphinx import Decoder
      self._decoder = Decoder(samprate=SAMPLE_RATE, loglevel="FATAL")
    return self._decoder

  def __call__(self, audio: np.ndarray, sample_rate: int) -> str:
    """Lowercase transcript of `audio` (mono, `sample_rate` Hz); "" for empty/silent."""
    x = _to_int16_16k(audio, sample_rate)
    if x.size == 0 or peak_frame_dbfs(x) < self.silence_dbfs:
      return ""
    with self._lock:
      dec = self._get_decoder()
      dec.reinit_feat()
      dec.start_utt()
      dec.process_raw(x.tobytes(), no_search=False, full_utt=True)
      dec.end_utt()
      hyp = dec.hyp()
      text = hyp.hypstr if hyp is not None else ""
    return " ".join(_FILLER.sub(" ", text).lower().split())


def lexicon_words() -> frozenset[str]:
  """Every word the English recogniser can write: the pronunciation dictionary inside
  the pocketsphinx wheel, alternate-pronunciation marks (`word(2)`) removed."""
  import os
  from pocketsphinx import get_model_path
  path = os.path.join(get_model_path(), "en-us", "cmudict-en-us.dict")
  with open(path, encoding="utf-8") as f:
    return frozenset(_FILLER.sub("", line.split(maxsplit=1)[0]) for line in f if line.strip())


_SHARED: dict[str, PocketSphinxRecognizer] = {}
_SHARED_LOCK = threading.Lock()
OFFLINE_LANGS = ("en",)


def base_language(lang: str) -> str:
  """"en" of "en", "en-US", "EN_gb": the language a recogniser is chosen by."""
  return str(lang).lower().replace("_", "-").split("-")[0]


def get_recognizer(lang: str) -> PocketSphinxRecognizer:
  """The shared offline recogniser for `lang` ("en" or "en-XX"); one per process.

  Raises NoRecognizerError for any other language: ASR-BLEU of zh/es/de speech needs
  the model's own ASR mode (reported as self-judged) instead.
  """
  base = base_language(lang)
  if base not in OFFLINE_LANGS:
    raise NoRecognizerError(
        f"no offline speech recogniser for language {lang!r} (available: "
        f"{', '.join(OFFLINE_LANGS)}); use the model's own ASR mode (self_judged) "
        f"for ASR-BLEU in this language")
  with _SHARED_LOCK:
    if base not in _SHARED:
      _SHARED[base] = PocketSphinxRecognizer()
    return _SHARED[base]
