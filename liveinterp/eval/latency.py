"""Simultaneous-translation latency, SimulEval definitions, in milliseconds of source.

`delays[i]` is the amount of source audio (ms) consumed when output word i was emitted
(text) or started playing (speech). `source_ms` is the source duration.

- AL   (Ma et al. 2019): mean over i <= τ of d_i − (i−1)·|X|/|Y|, τ = first i with
       d_i >= |X| (the cut-off: words emitted after the whole source are counted once).
- LAAL (Papi et al. 2022): AL with |Y| replaced by max(|Y|, |Y*|) (reference length), so
       an over-long hypothesis cannot lower its lag.
- AP   : Σ d_i / (|X|·|Y|).
- DAL  (Cherry & Foster 2019): d'_1 = d_1, d'_i = max(d_i, d'_{i−1} + |X|/|Y|);
       mean of d'_i − (i−1)·|X|/|Y|.
- StartOffset = d_1; EndOffset = d_|Y| − |X|.
- FLAL : first-word lag — per source sentence, delay of the first output word attributed
       to it minus the sentence's start; averaged (see `first_word_lags`).

Speech output (`speech_delays`): segments play back to back; segment k starts at
max(time written, end of the previous segment); a word's delay is when it starts playing.
Computation-aware delays (`computation_aware_emissions`): chunk t is processed when it has
arrived *and* the previous chunk is done: finish_t = max(T_t, finish_{t−1}) + c_t.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np


def _check(delays: Sequence[float], source_ms: float) -> np.ndarray:
  d = np.asarray(delays, np.float64)
  if source_ms <= 0:
    raise ValueError(f"source_ms={source_ms}: must be positive")
  if d.ndim != 1:
    raise ValueError(f"delays must be 1-D, got shape {d.shape}")
  if d.size and (np.any(~np.isfinite(d)) or np.any(d < 0)):
    raise ValueError("delays must be finite and >= 0")
  if d.size > 1 and np.any(np.diff(d) < 0):
    raise ValueError("delays must be non-decreasing (emission order)")
  return d


def average_lagging(delays, source_ms: float, target_len: int | None = None) -> float:
  """AL; `target_len` defaults to the hypothesis length (LAAL passes max(|Y|, |Y*|))."""
  d = _check(delays, source_ms)
  if d.size == 0:
    return float("nan")
  if d[0] > source_ms:
    return float(d[0])
  rate = source_ms / (d.size if target_len is None else target_len)  # ms per target word
  total, tau = 0.0, 0
  for i, di in enumerate(d):
    total += di - i * rate
    tau = i + 1
    if di >= source_ms:
      break
  return float(total / tau)


def length_adaptive_average_lagging(delays, source_ms: float, reference_len: int) -> float:
  return average_lagging(delays, source_ms, max(len(delays), int(reference_len)))


def average_proportion(delays, source_ms: float) -> float:
  d = _check(delays, source_ms)
  return float(d.sum() / (source_ms * d.size)) if d.size else float("nan")


def differentiable_average_lagging(delays, source_ms: float) -> float:
  d = _check(delays, source_ms)
  if d.size == 0:
    return float("nan")
  rate = source_ms / d.size
  dp = np.empty_like(d)
  dp[0] = d[0]
  for i in range(1, d.size):
    dp[i] = max(d[i], dp[i - 1] + rate)
  return float(np.mean(dp - np.arange(d.size) * rate))


def first_word_lags(delays, sentence_starts_ms: Sequence[float],
                    sentence_ref_lens: Sequence[int]) -> list[float]:
  """FLAL per source sentence.

  Output words are attributed to sentences by position: with reference sentence lengths
  n_k (N in all) and M output words, word j belongs to the sentence k whose cumulative
  share [Σ_{<k} n / N, Σ_{≤k} n / N) contains j / M. The lag of sentence k is the delay
  of its first attributed word minus its start; sentences with no word are skipped.
  """
  d = np.asarray(delays, np.float64)
  starts = np.asarray(sentence_starts_ms, np.float64)
  lens = np.asarray(sentence_ref_lens, np.float64)
  if starts.shape != lens.shape:
    raise ValueError("sentence_starts_ms and sentence_ref_lens differ in length")
  if d.size == 0 or lens.sum() <= 0:
    return []
  bounds = np.cumsum(lens) / lens.sum()
  owner = np.searchsorted(bounds, np.arange(d.size) / d.size, side="right")
  lags = []
  for k in range(len(starts)):
    idx = np.nonzero(owner == k)[0]
    if idx.size:
      lags.append(float(d[idx[0]] - starts[k]))
  return lags


def speech_delays(write_ms: Sequence[float], durations_ms: Sequence[float],
                  word_offsets_ms: Sequence[Sequence[float]]):
  """Playback queue: returns (per-word delays, per-segment (start, end)).

  Segment k is written (becomes playable) at write_ms[k], lasts durations_ms[k], and its
  words start at word_offsets_ms[k] (ms from the segment's start).
  """
  if not len(write_ms) == len(durations_ms) == len(word_offsets_ms):
    raise ValueError("write_ms, durations_ms and word_offsets_ms differ in length")
  delays, spans, end = [], [], 0.0
  for w, dur, offs in zip(write_ms, durations_ms, word_offsets_ms):
    if dur < 0:
      raise ValueError(f"negative segment duration {dur}")
    start = max(float(w), end)
    end = start + float(dur)
    spans.append((start, end))
    delays.extend(start + float(o) for o in offs)
  return delays, spans


def computation_aware_emissions(chunk_end_ms: Sequence[float],
                                compute_ms: Sequence[float]) -> np.ndarray:
  """Wall-clock time (ms from stream start) at which each chunk's output is ready."""
  t = np.asarray(chunk_end_ms, np.float64)
  c = np.asarray(compute_ms, np.float64)
  if t.shape != c.shape:
    raise ValueError("chunk_end_ms and compute_ms differ in length")
  out = np.empty_like(t)
  prev = 0.0
  for i in range(t.size):
    prev = max(t[i], prev) + c[i]
    out[i] = prev
  return out


@dataclasses.dataclass
class LatencyScores:
  AL: float
  LAAL: float
  AP: float
  DAL: float
  StartOffset: float
  EndOffset: float
  FLAL: float

  def as_dict(self, prefix: str = "") -> dict[str, float]:
    return {prefix + k: v for k, v in dataclasses.asdict(self).items()}


def score(delays, source_ms: float, reference_len: int,
          sentence_starts_ms: Sequence[float] | None = None,
          sentence_ref_lens: Sequence[int] | None = None) -> LatencyScores | None:
  """All metrics for one episode; None when nothing was emitted (counted by callers)."""
  d = _check(delays, source_ms)
  if d.size == 0:
    return None
  starts = [0.0] if sentence_starts_ms is None else sentence_starts_ms
  lens = [reference_len] if sentence_ref_lens is None else sentence_ref_lens
  flal = first_word_lags(d, starts, lens)
  return LatencyScores(
      AL=average_lagging(d, source_ms), LAAL=length_adaptive_average_lagging(d, source_ms,
                                                                           reference_len),
      AP=average_proportion(d, source_ms), DAL=differentiable_average_lagging(d, source_ms),
      StartOffset=float(d[0]), EndOffset=float(d[-1] - source_ms),
      FLAL=float(np.mean(flal)) if flal else float("nan"))


def corpus_scores(episodes: list[LatencyScores | None]) -> dict[str, float]:
  """Mean of each metric over scored episodes, plus how many had no output."""
  scored = [e for e in episodes if e is not None]
  out = {"episodes": len(episodes), "episodes_without_output": len(episodes) - len(scored)}
  if scored:
    for k in dataclasses.asdict(scored[0]):
      vals = np.asarray([getattr(e, k) for e in scored], np.float64)
      out[k] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
  return out
