"""Speech synthesis with espeak-ng through ctypes (library and voice data from the
`espeakng-loader` wheel: no apt, no binary), with word timestamps from espeak's events.

espeak-ng renders 22050 Hz int16; we resample to 16 kHz with soxr. Each word event gives
the word's character position in the text and its start sample, so word start times come
for free: a unit ends where the next begins and the last one ends where the non-silent
audio ends. English/Spanish/German give one event per word, Mandarin one per character
(a few lexicon words such as 您好 give one event for two characters).
`merge_units_to_words` maps these events onto the pipeline's words
(`text_cleaning.tokenize_words`: jieba words for Chinese) with start/end times.

The espeak library is process-global and not thread-safe: it is initialised once per
process and every synthesis holds `_LOCK`. espeak keeps some state between calls (its
pitch flutter phase), so the same text synthesised twice can differ by a few samples
(< 1 ms of timing); everything random on our side is seeded by the caller's rng.

Optional augmentation (`SynthesisConfig`, seeded by the caller's rng): leading/trailing
silence, a continuous noise floor, and non-speech noise bursts in the padding (speech
that must *not* trigger a translation).
"""

from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import threading
import time
from typing import Sequence

import numpy as np

from data_pipelines.speakers import Speaker
from data_pipelines.text_cleaning import Word, tokenize_words

SAMPLE_RATE = 16000
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4


class SynthesisError(RuntimeError):
  """Synthesis failed or produced unusable audio; the message names the text/voice."""


class _EspeakEvent(ctypes.Structure):
  """`espeak_EVENT` from speak_lib.h (the `id` union is 8 bytes)."""
  _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint),
              ("text_position", ctypes.c_int), ("length", ctypes.c_int),
              ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
              ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_EspeakEvent))


class _Espeak:
  """The process-wide espeak-ng engine (create through `_engine()` only)."""

  def __init__(self):
    import espeakng_loader
    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                      ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                 ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                 ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    # espeak-ng draws random numbers while rendering: seed them from the utterance.
    # (Other internal state, e.g. the pitch flutter phase, carries over between calls,
    # so repeated syntheses of one text still differ by a few samples.)
    self._set_seed = getattr(lib, "espeak_ng_SetRandSeed", None)
    if self._set_seed is not None:
      self._set_seed.argtypes = [ctypes.c_long]
      self._set_seed.restype = None
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0,
                                 espeakng_loader.get_data_path().encode(), 0)
    if rate <= 0:
      raise SynthesisError(f"espeak_Initialize failed (returned {rate}); data path "
                           f"{espeakng_loader.get_data_path()}")
    self.lib = lib
    self.native_rate = rate
    self._chunks: list[np.ndarray] = []
    self._events: list[tuple[int, int, int]] = []
    self._callback = _CALLBACK(self._on_audio)  # keep a reference: C holds the pointer
    lib.espeak_SetSynthCallback(self._callback)

  def _on_audio(self, wav, n, events) -> int:
    if n > 0 and wav:
      self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
    if events:
      i = 0
      while events[i].type != _EVENT_LIST_TERMINATED:
        e = events[i]
        if e.type == _EVENT_WORD:
          self._events.append((e.text_position, e.length, e.sample))
        i += 1
    return 0

  def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int
            ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Native-rate int16 audio and word events (1-based char pos, length, sample)."""
    if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
      raise SynthesisError(f"espeak has no voice {voice!r}")
    for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                         (_PARAM_RANGE, pitch_range)):
      self.lib.espeak_SetParameter(param, int(value), 0)
    self._chunks, self._events = [], []
    data = text.encode("utf-8")
    if self._set_seed is not None:
      key = f"{voice}\0{rate}\0{pitch}\0{pitch_range}\0{text}".encode("utf-8")
      self._set_seed(int.from_bytes(hashlib.sha256(key).digest()[:4], "big"))
    err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0,
                                _ESPEAK_CHARS_UTF8, None, None)
    self.lib.espeak_Synchronize()
    if err != 0:
      raise SynthesisError(f"espeak_Synth returned {err} for voice {voice!r}, "
                           f"text {text[:60]!r}")
    audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
    return audio, list(self._events)


_LOCK = threading.Lock()
_ENGINE: _Espeak | None = None


def _engine() -> _Espeak:
  """The espeak engine, initialised once per process (call with `_LOCK` held)."""
  global _ENGINE
  if _ENGINE is None:
    _ENGINE = _Espeak()
  return _ENGINE


@dataclasses.dataclass(frozen=True)
class SynthesisConfig:
  """Padding and noise added around the synthesised speech (all seeded by the caller).

  lead_silence_ms, trail_silence_ms: (min, max) uniform range of padding.
  noise_dbfs: RMS level of a continuous Gaussian noise floor, None for none.
  noise_segment_prob: probability of one non-speech noise burst in the leading or
    trailing padding (placed only where the padding is long enough).
  noise_segment_ms: (min, max) burst length; noise_segment_dbfs: its RMS level.
  silence_db: frames this far below the peak count as silence (speech start/end).
  """
  lead_silence_ms: tuple[float, float] = (0.0, 0.0)
  trail_silence_ms: tuple[float, float] = (0.0, 0.0)
  noise_dbfs: float | None = None
  noise_segment_prob: float = 0.0
  noise_segment_ms: tuple[float, float] = (150.0, 400.0)
  noise_segment_dbfs: float = -30.0
  silence_db: float = -40.0


@dataclasses.dataclass
class Utterance:
  """Synthesised speech of one text with espeak's word units.

  audio: int16[N] at `sample_rate` (16 kHz), padding included.
  units: text of each word event (Mandarin: mostly one character each).
  unit_char_start: int32[u] 0-based character offset of each unit in the text.
  unit_start_ms, unit_end_ms: float32[u] unit times in `audio`.
  speech_start_ms, speech_end_ms: the non-silent part of the speech in `audio`.
  lead_ms: leading padding added before the speech.
  noise_segments_ms: (start, end) of inserted non-speech noise bursts.
  """
  audio: np.ndarray
  sample_rate: int
  units: list[str]
  unit_char_start: np.ndarray
  unit_start_ms: np.ndarray
  unit_end_ms: np.ndarray
  speech_start_ms: float
  speech_end_ms: float
  lead_ms: float
  noise_segments_ms: list[tuple[float, float]]

  @property
  def duration_ms(self) -> float:
    return 1000.0 * len(self.audio) / self.sample_rate


def _speech_bounds(x: np.ndarray, sample_rate: int, silence_db: float
                   ) -> tuple[float, float] | None:
  """(start_ms, end_ms) of the frames within `silence_db` of the peak; None if silent."""
  hop = sample_rate // 100  # 10 ms frames
  n = len(x) // hop
  if n == 0:
    return None
  frames = x[:n * hop].reshape(n, hop)
  rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
  peak = rms.max()
  if not np.isfinite(peak) or peak < 1e-4:
    return None
  active = np.nonzero(rms >= peak * 10.0 ** (silence_db / 20.0))[0]
  return 10.0 * active[0], 10.0 * (active[-1] + 1)


def _resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
  import soxr
  if src_rate == dst_rate:
    return x
  return soxr.resample(x, src_rate, dst_rate, quality="HQ").astype(np.float32)


def _noise_burst(n: int, rng: np.random.Generator, dbfs: float) -> np.ndarray:
  """Band-limited noise with a smooth envelope (sounds like a cough/rustle, no words)."""
  white = rng.standard_normal(n + 8).astype(np.float32)
  k = int(rng.integers(2, 8))
  colored = np.convolve(white, np.ones(k, np.float32) / k, mode="same")[:n]
  env = np.sqrt(np.clip(np.sin(np.linspace(0.0, np.pi, n, dtype=np.float32)), 0.0, None))
  y = colored * env
  rms = float(np.sqrt(np.mean(y ** 2))) or 1.0
  return y * (10.0 ** (dbfs / 20.0) / rms)


def synthesize(text: str, lang: str, speaker: Speaker,
               config: SynthesisConfig | None = None,
               rng: np.random.Generator | None = None) -> Utterance:
  """Speaks `text` in `lang` with `speaker`'s voice; 16 kHz int16 with unit times.

  Raises SynthesisError on empty text, an unknown voice, or audio that is empty,
  silent or not finite (the message names the text and voice).
  """
  config = config or SynthesisConfig()
  if not text or not text.strip():
    raise SynthesisError(f"empty text for speaker {speaker.name} ({lang})")
  voice = speaker.voice_name(lang)
  with _LOCK:
    eng = _engine()
    raw, events = eng.synth(text, voice, speaker.rate, speaker.pitch, speaker.pitch_range)
    native = eng.native_rate
  x = _resample(raw.astype(np.float32) / 32768.0, native, SAMPLE_RATE)
  if x.size == 0 or not np.all(np.isfinite(x)):
    raise SynthesisError(f"{voice}: empty or non-finite audio for {text[:60]!r}")
  bounds = _speech_bounds(x, SAMPLE_RATE, config.silence_db)
  if bounds is None:
    raise SynthesisError(f"{voice}: silent audio for {text[:60]!r}")
  speech_start, speech_end = bounds

  # Units: one per distinct character position, in time order.
  units, char_start, start_ms = [], [], []
  for pos, length, sample in sorted(events, key=lambda e: (e[2], e[0])):
    c = pos - 1
    if char_start and c == char_start[-1]:
      continue
    if not 0 <= c < len(text):
      continue
    units.append(text[c:c + max(1, length)])
    char_start.append(c)
    start_ms.append(1000.0 * sample / native)
  starts = np.maximum.accumulate(np.asarray(start_ms, np.float64)) if start_ms else \
      np.zeros(0)
  ends = np.append(starts[1:], max(speech_end, starts[-1] if len(starts) else 0.0))

  # Padding and noise.
  rng = rng if rng is not None else np.random.default_rng(0)
  lead = float(rng.uniform(*config.lead_silence_ms)) if config.lead_silence_ms[1] > 0 \
      else 0.0
  trail = float(rng.uniform(*config.trail_silence_ms)) if config.trail_silence_ms[1] > 0 \
      else 0.0
  n_lead = int(round(lead * SAMPLE_RATE / 1000))
  n_trail = int(round(trail * SAMPLE_RATE / 1000))
  y = np.concatenate([np.zeros(n_lead, np.float32), x, np.zeros(n_trail, np.float32)])
  lead = 1000.0 * n_lead / SAMPLE_RATE
  segments: list[tuple[float, float]] = []
  if config.noise_segment_prob > 0 and rng.uniform() < config.noise_segment_prob:
    seg_ms = float(rng.uniform(*config.noise_segment_ms))
    n_seg = int(seg_ms * SAMPLE_RATE / 1000)
    margin = SAMPLE_RATE // 20  # 50 ms away from the speech
    places = []
    if n_lead >= n_seg + margin:
      places.append(int(rng.integers(0, n_lead - n_seg - margin + 1)))
    if n_trail >= n_seg + margin:
      lo = n_lead + len(x) + margin
      places.append(int(rng.integers(lo, lo + n_trail - n_seg - margin + 1)))
    if places:
      at = places[int(rng.integers(0, len(places)))]
      y[at:at + n_seg] += _noise_burst(n_seg, rng, config.noise_segment_dbfs)
      segments.append((1000.0 * at / SAMPLE_RATE, 1000.0 * (at + n_seg) / SAMPLE_RATE))
  if config.noise_dbfs is not None:
    y += rng.standard_normal(len(y)).astype(np.float32) * 10.0 ** (config.noise_dbfs / 20)
  audio = np.clip(np.round(y * 32767.0), -32768, 32767).astype(np.int16)
  return Utterance(
    audio=audio, sample_rate=SAMPLE_RATE, units=units,
    unit_char_start=np.asarray(char_start, np.int32),
    unit_start_ms=(starts + lead).astype(np.float32),
    unit_end_ms=(ends + lead).astype(np.float32),
    speech_start_ms=speech_start + lead, speech_end_ms=speech_end + lead, lead_ms=lead,
    noise_segments_ms=segments)


def merge_units_to_words(text: str, words: Sequence[Word], unit_char_start: np.ndarray,
                         unit_start_ms: np.ndarray, speech_start_ms: float,
                         speech_end_ms: float) -> tuple[np.ndarray, np.ndarray]:
  """Start/end times (float32[n] ms) of `words` from espeak's units.

  A word starts at its earliest unit whose character lies in the word's span (so the
  per-character Mandarin units merge into jieba words). Words that got no unit (espeak
  merged them into a neighbour's event) are interpolated by character offset between
  the neighbouring anchors (speech start/end at the edges). Starts are made
  non-decreasing; a word ends where the next begins, the last at `speech_end_ms`.
  """
  n = len(words)
  if n == 0:
    return np.zeros(0, np.float32), np.zeros(0, np.float32)
  anchor = np.full(n, np.nan)
  w_starts = np.asarray([w.start for w in words])
  w_ends = np.asarray([w.end for w in words])
  for c, t in zip(np.asarray(unit_char_start), np.asarray(unit_start_ms)):
    i = int(np.searchsorted(w_ends, c, side="right"))  # first word ending after c
    if i < n and w_starts[i] <= c:
      anchor[i] = t if np.isnan(anchor[i]) else min(anchor[i], t)
  known = np.nonzero(~np.isnan(anchor))[0]
  xs = np.concatenate([[0.0], w_starts[known].astype(np.float64), [float(len(text))]])
  ys = np.concatenate([[speech_start_ms], anchor[known], [speech_end_ms]])
  ys = np.maximum.accumulate(ys)
  starts = np.where(np.isnan(anchor), np.interp(w_starts, xs, ys), anchor)
  starts = np.maximum.accumulate(starts)
  ends = np.append(starts[1:], max(speech_end_ms, starts[-1]))
  return starts.astype(np.float32), ends.astype(np.float32)


def word_times(text: str, lang: str, utt: Utterance
               ) -> tuple[list[str], np.ndarray, np.ndarray]:
  """(words, start_ms f32[n], end_ms f32[n]) of `text` spoken in `utt`, with the words
  of `tokenize_words` (jieba words for Chinese)."""
  words = tokenize_words(text, lang)
  starts, ends = merge_units_to_words(text, words, utt.unit_char_start, utt.unit_start_ms,
                                      utt.speech_start_ms, utt.speech_end_ms)
  return [w.text for w in words], starts, ends


def measure_speed(texts: Sequence[str], lang: str, speaker: Speaker) -> dict:
  """Synthesises `texts` once and returns audio seconds, wall seconds and × real time."""
  t0 = time.perf_counter()
  audio_s = 0.0
  for t in texts:
    audio_s += synthesize(t, lang, speaker).duration_ms / 1000.0
  wall = time.perf_counter() - t0
  return {"audio_s": audio_s, "wall_s": wall, "x_real_time": audio_s / max(wall, 1e-9)}
