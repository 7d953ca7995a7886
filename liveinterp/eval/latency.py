"""Simultaneous-translation latency, SimulEval 1.1.4 definitions, in milliseconds of source.

`delays[i]` is the amount of source audio (ms) consumed when output word i was emitted
(text) or started playing (speech); computation-aware variants use the wall-clock time
at which it was ready instead (SimulEval's `elapsed`). `source_ms` = |X|, the source
duration. |Y| is the hypothesis length, |Y*| the reference length.

Each function below equals SimulEval's scorer of the same name on one instance
(`simuleval.evaluator.scorers.latency_scorer`, default `use_ref_len=True`;
tests/unit/eval/test_latency_simuleval.py checks them scorer against scorer):

- AL   (Ma et al. 2019): mean over i <= τ of d_i − (i−1)·|X|/n, τ = first i with
       d_i >= |X|; n = |Y*| when a reference length is given, else |Y|. (If d_1 > |X|,
       AL = d_1.) An under-generating hypothesis therefore does not look faster.
- LAAL (Papi et al. 2022): AL with n = max(|Y|, |Y*|), so neither over- nor
       under-generation lowers the lag.
- AP   : Σ d_i / (|X|·n), n as for AL (so AP can exceed 1 when |Y| > |Y*|).
- DAL  (Cherry & Foster 2019): d'_1 = d_1, d'_i = max(d_i, d'_{i−1} + |X|/|Y|);
       mean of d'_i − (i−1)·|X|/|Y| (always the hypothesis length, as SimulEval).
- StartOffset = d_1; EndOffset = d_|Y| − |X| (speech: end of the last played sample − |X|,
       `score(..., output_end_ms=)`).
- FLAL : first-word lag — per source sentence, delay of the first output word attributed
       to it minus the sentence's start; averaged (see `first_word_lags`). Not in SimulEval.

Rules `score` adds on top of the per-function definitions:

- **A delay never exceeds the source duration**: SimulEval's delay is the source consumed
  (`len_sample_to_ms(step)`, capped at the last sample), so a word written after the last,
  zero-padded chunk is delayed by |X|, not by `chunks × chunk_ms` (`cap_delays`). This
  holds for emission delays only; computation-aware times (`simuleval_elapsed`) and
  speech playback onsets may exceed |X| and are not capped (`cap_to_source=False`).
- **An empty output is counted, not skipped** (SimulEval skips it with a warning): it
  scores the worst latency — as if everything came at the end of the source: AL = LAAL =
  DAL = StartOffset = |X|, AP = 1, EndOffset = 0 — and is flagged `empty=True`;
  `corpus_scores` counts those and can also give SimulEval's skip-empty means.

Speech output (`speech_delays`): segments play back to back; segment k starts at
max(time written, end of the previous segment); a word's delay is when it starts playing
— SimulEval's `*_SpeechAlign_BOW` delays, with word onsets from the audio
(`audible_word_offsets`: leading silence skipped) instead of a forced aligner. For the
computation-aware variant, "written" is the ready time: a segment can't play before it
was computed.

Computation-aware times, two models:
- `simuleval_elapsed` (SimulEval's, the one its `*_CA` columns use): source consumed +
  all compute so far, since SimulEval feeds the source as fast as the agent reads it:
  elapsed_t = min(T_t, |X|) + Σ_{k<=t} c_k.
- `computation_aware_emissions` (a live stream): chunk t is processed when it has arrived
  *and* the previous chunk is done: finish_t = max(min(T_t, |X|), finish_{t−1}) + c_t.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import numpy as np

METRICS = ("AL", "LAAL", "AP", "DAL", "StartOffset", "EndOffset", "FLAL")


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


def _target_len(d: np.ndarray, target_len: int | None) -> int:
  """SimulEval's `get_delays_lengths`: the reference length when there is one, else |Y|.
  A reference length <= 0 counts as none (SimulEval would divide by zero)."""
  return d.size if target_len is None or target_len <= 0 else int(target_len)


def cap_delays(delays, source_ms: float) -> np.ndarray:
  """Emission delays capped at |X| (SimulEval: the source consumed never exceeds |X|)."""
  return np.minimum(_check(delays, source_ms), float(source_ms))


def average_lagging(delays, source_ms: float, target_len: int | None = None) -> float:
  """AL. `target_len`: the reference length |Y*| (SimulEval's default `use_ref_len`);
  None (no reference) uses the hypothesis length |Y|. NaN for no delays."""
  d = _check(delays, source_ms)
  if d.size == 0:
    return float("nan")
  if d[0] > source_ms:
    return float(d[0])
  rate = source_ms / _target_len(d, target_len)  # ms of source per target word
  total, tau = 0.0, 0
  for i, di in enumerate(d):
    total += di - i * rate
    tau = i + 1
    if di >= source_ms:
      break
  return float(total / tau)


def length_adaptive_average_lagging(delays, source_ms: float,
                                    reference_len: int | None = None) -> float:
  """LAAL: AL with max(|Y|, |Y*|) target words (|Y| alone without a reference)."""
  n = len(delays)
  ref = reference_len if reference_len is not None and reference_len > 0 else n
  return average_lagging(delays, source_ms, max(n, int(ref)))


def average_proportion(delays, source_ms: float, target_len: int | None = None) -> float:
  """AP = Σ d_i / (|X|·n), n = `target_len` (reference length) or |Y| when None."""
  d = _check(delays, source_ms)
  if d.size == 0:
    return float("nan")
  return float(d.sum() / (source_ms * _target_len(d, target_len)))


def differentiable_average_lagging(delays, source_ms: float) -> float:
  """DAL (hypothesis length only, as in SimulEval)."""
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

  Segment k is written (becomes playable) at write_ms[k] — its emission time, or its
  ready time for the computation-aware variant — lasts durations_ms[k], and its words
  start at word_offsets_ms[k] (ms from the segment's start, `audible_word_offsets`).
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


def audible_word_offsets(audio, sample_rate: int, n_words: int, *, frame_ms: float = 10.0,
                         silence_db: float = -40.0) -> list[float]:
  """Where each of `n_words` words starts in a speech segment, in ms from its start.

  Frames (`frame_ms`) whose RMS is within `silence_db` of the segment's loudest frame are
  voiced. The first word starts at the first voiced frame (leading silence is not heard
  as speech); the others are spread over the voiced frames in proportion to voiced time
  (pauses hold no word onsets). A silent segment falls back to an even split.
  """
  x = np.asarray(audio, np.float64).reshape(-1)
  if n_words <= 0:
    return []
  hop = max(1, int(round(frame_ms * sample_rate / 1000)))
  n_frames = -(-x.size // hop)
  if n_frames == 0:
    return [0.0] * n_words
  frames = np.pad(x, (0, n_frames * hop - x.size)).reshape(n_frames, hop)
  rms = np.sqrt(np.mean(frames ** 2, axis=1))
  peak = rms.max()
  if peak <= 0:
    dur = 1000.0 * x.size / sample_rate
    return [dur * k / n_words for k in range(n_words)]
  voiced = np.nonzero(20 * np.log10(np.maximum(rms, 1e-12) / peak) >= silence_db)[0]
  pick = voiced[(np.arange(n_words) * voiced.size) // n_words]
  return [float(f * hop * 1000.0 / sample_rate) for f in pick]


def _chunk_times(chunk_end_ms, compute_ms, source_ms):
  """(chunk ends capped at `source_ms` when given, per-chunk compute) as float64."""
  t = np.asarray(chunk_end_ms, np.float64)
  c = np.asarray(compute_ms, np.float64)
  if t.shape != c.shape:
    raise ValueError("chunk_end_ms and compute_ms differ in length")
  if source_ms is not None:
    t = np.minimum(t, float(source_ms))
  return t, c


def computation_aware_emissions(chunk_end_ms: Sequence[float], compute_ms: Sequence[float],
                                source_ms: float | None = None) -> np.ndarray:
  """Live-stream ready time (ms from stream start) of each chunk's output:
  finish_t = max(T_t, finish_{t−1}) + c_t, T_t = chunk end capped at `source_ms` when
  given (a zero-padded last chunk has arrived when the source ends)."""
  t, c = _chunk_times(chunk_end_ms, compute_ms, source_ms)
  out = np.empty_like(t)
  prev = 0.0
  for i in range(t.size):
    prev = max(t[i], prev) + c[i]
    out[i] = prev
  return out


def simuleval_elapsed(chunk_end_ms: Sequence[float], compute_ms: Sequence[float],
                      source_ms: float | None = None) -> np.ndarray:
  """SimulEval's computation-aware time of each chunk's output (`Instance.elapsed`):
  source consumed (chunk end, capped at `source_ms`) + wall-clock since the stream began,
  which in SimulEval's as-fast-as-possible feeding is all compute so far: Σ_{k<=t} c_k."""
  t, c = _chunk_times(chunk_end_ms, compute_ms, source_ms)
  return t + np.cumsum(c)


@dataclasses.dataclass
class LatencyScores:
  AL: float
  LAAL: float
  AP: float
  DAL: float
  StartOffset: float
  EndOffset: float
  FLAL: float
  empty: bool = False  # no output: the metrics are the worst case (`empty_output_scores`)

  def as_dict(self, prefix: str = "") -> dict[str, float]:
    """The metrics (not the `empty` flag), keys prefixed."""
    return {prefix + k: getattr(self, k) for k in METRICS}


def empty_output_scores(source_ms: float,
                        sentence_starts_ms: Sequence[float] | None = None) -> LatencyScores:
  """Worst latency for an episode with no output: as if it all came at the end of the
  source (every delay = |X|), flagged `empty`. FLAL: |X| − each sentence's start."""
  if source_ms <= 0:
    raise ValueError(f"source_ms={source_ms}: must be positive")
  src = float(source_ms)
  starts = [0.0] if sentence_starts_ms is None or not len(sentence_starts_ms) else \
      sentence_starts_ms
  flal = float(np.mean([max(src - float(s), 0.0) for s in starts]))
  return LatencyScores(AL=src, LAAL=src, AP=1.0, DAL=src, StartOffset=src, EndOffset=0.0,
                       FLAL=flal, empty=True)


def score(delays, source_ms: float, reference_len: int | None = None,
          sentence_starts_ms: Sequence[float] | None = None,
          sentence_ref_lens: Sequence[int] | None = None, *, use_ref_len: bool = True,
          cap_to_source: bool = True, output_end_ms: float | None = None) -> LatencyScores:
  """All metrics for one episode, as SimulEval scores one instance.

  reference_len: |Y*| in words (None: no reference). use_ref_len: SimulEval's
    `use_ref_len` (AL and AP use |Y*|, LAAL max(|Y|, |Y*|); False = its
    `--no-use-ref-len`: all three use |Y|).
  cap_to_source: cap delays at |X| (`cap_delays`) — right for emission delays; pass False
    for computation-aware times and speech playback onsets, which may exceed |X|.
  output_end_ms: speech output: end of the last played sample; EndOffset is measured
    from it (SimulEval's speech EndOffset) instead of from the last delay.
  No output (empty `delays`): `empty_output_scores` (worst latency, `empty=True`).
  """
  d = _check(delays, source_ms)
  if d.size == 0:
    return empty_output_scores(source_ms, sentence_starts_ms)
  if cap_to_source:
    d = np.minimum(d, float(source_ms))
  n_ref = reference_len if use_ref_len else None
  starts = [0.0] if sentence_starts_ms is None else sentence_starts_ms
  if sentence_ref_lens is not None:
    lens = sentence_ref_lens
  else:
    lens = [reference_len if reference_len and reference_len > 0 else d.size]
  flal = first_word_lags(d, starts, lens)
  end = float(d[-1]) if output_end_ms is None else float(output_end_ms)
  return LatencyScores(
      AL=average_lagging(d, source_ms, n_ref),
      LAAL=length_adaptive_average_lagging(d, source_ms, n_ref),
      AP=average_proportion(d, source_ms, n_ref), DAL=differentiable_average_lagging(d, source_ms),
      StartOffset=float(d[0]), EndOffset=end - float(source_ms),
      FLAL=float(np.mean(flal)) if flal else float("nan"))


def corpus_scores(episodes: Iterable[LatencyScores | None], *,
                  skip_empty: bool = False) -> dict[str, float]:
  """Mean of each metric over the episodes, and how many had no output.

  Episodes without output count at their worst latency (`score` gives them
  `empty_output_scores`); `skip_empty=True` leaves them out of the means, as SimulEval's
  scorers do. A None (legacy: no output, no source duration) is counted in
  `episodes_without_output` but cannot be scored, so it is never in the means.
  """
  episodes = list(episodes)
  kept = [e for e in episodes if e is not None and not (skip_empty and e.empty)]
  out = {"episodes": len(episodes),
         "episodes_without_output": sum(e is None or e.empty for e in episodes)}
  if kept:
    for k in METRICS:
      vals = np.asarray([getattr(e, k) for e in kept], np.float64)
      out[k] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else float("nan")
  return out


def transcript_lags(word_times_ms: Sequence[float],
                    source_word_end_ms: Sequence[float]) -> dict:
  """Latency of a live source transcript (the `<src>` words of the decoder's turns,
  `session.StreamResult.source_words`): transcript word i is matched to source word i
  (in order, up to the shorter of the two; a transcript that skips or inserts words
  shifts the match, so read it alongside its WER) and lags by `word_times_ms[i] -
  source_word_end_ms[i]`: how long after the word was spoken it was written (emission
  times) or ready (computation-aware ready times). Returns mean/max lag (ms, NaN when
  nothing matched) and the counts."""
  t = np.asarray(word_times_ms, np.float64).reshape(-1)
  ends = np.asarray(source_word_end_ms, np.float64).reshape(-1)
  if not (np.all(np.isfinite(t)) and np.all(np.isfinite(ends))):
    raise ValueError("transcript_lags: word times and source word ends must be finite")
  n = min(t.size, ends.size)
  lags = t[:n] - ends[:n]
  return {"mean_lag_ms": float(lags.mean()) if n else float("nan"),
          "max_lag_ms": float(lags.max()) if n else float("nan"),
          "matched": int(n), "transcript_words": int(t.size), "source_words": int(ends.size)}
