"""benchmarks/latency_bound.py: the reference schedules the issue #13 goal is set against,
on hand-built records whose delays are known (640 ms chunks)."""

import numpy as np
import pytest

from benchmarks import latency_bound as lb
from data_pipelines import alignment
from liveinterp.eval import streaming_metrics as sm

SR, CHUNK = 16000, 640.0


def _record(src_end_ms, links, n_tgt, seconds=3.2):
  """Source words ending at `src_end_ms`; target word t aligned to source words
  `links[t]` (empty: unaligned)."""
  al = np.asarray([(t, s) for t, ss in enumerate(links) for s in ss], np.int32)
  ends = np.asarray(src_end_ms, np.float32)
  n = int(seconds * SR)
  return {"src_audio": np.zeros(n, np.int16), "src_word_start_ms": ends - 100.0,
          "src_word_end_ms": ends, "tgt_words": [f"w{t}" for t in range(n_tgt)],
          "tgt_text": " ".join(f"w{t}" for t in range(n_tgt)), "tgt_lang": "en",
          "alignment": al,
          "tgt_ready_ms": alignment.ready_times(al, n_tgt, ends, n / SR * 1000.0)}


# Reordered: target word 0 needs the last source word (ends 3000 ms, chunk 4), words 1-2
# the first two (500, 1000 ms: chunks 0, 1).
REORDERED = _record([500.0, 1000.0, 3000.0], [[2], [0], [1]], 3)


def test_own_ready_times_skip_the_monotone_wait():
  np.testing.assert_allclose(REORDERED["tgt_ready_ms"], [3000, 3000, 3000])
  np.testing.assert_allclose(lb.own_ready_ms(REORDERED), [3000, 500, 1000])


def test_schedules_of_a_reordered_record():
  pol = lb.policies([REORDERED], CHUNK, SR)
  np.testing.assert_allclose(pol["alignment"][0], [3200, 3200, 3200])  # chunk 4 ends
  np.testing.assert_allclose(pol["source order"][0], [640, 1280, 3200])
  for runs in pol["anticipate 100% by one chunk"][0]:  # every word one chunk earlier
    np.testing.assert_allclose(runs, [2560, 2560, 2560])


def test_alignment_row_is_the_evaluations_reference_policy():
  """Same delays, same scorer as liveinterp.evaluate's 'reference targets, alignment
  policy' row (streaming_metrics.oracle_delays), so the benchmark's check against the
  RL table's row compares like with like."""
  recs = [REORDERED, _record([300.0, 900.0, 1500.0, 2100.0], [[0], [1], [], [2, 3]], 4)]
  got = lb.measure(recs, CHUNK, SR)
  delays = [sm.oracle_delays(r, "alignment", int(CHUNK)) for r in recs]
  assert got["alignment"] == pytest.approx(lb.laal(delays, sm.record_timing(recs, SR)))
  # A monotone (already source-ordered) record gains nothing from reordering.
  mono = recs[1]
  pol = lb.policies([mono], CHUNK, SR)
  np.testing.assert_allclose(pol["alignment"][0], pol["source order"][0])
  # Reordering and guessing only lower the latency; more guessing lowers it more.
  order = ["alignment"] + [f"anticipate {p:.0%} by one chunk" for p in lb.SHARES]
  vals = [got[k] for k in order]
  assert all(a >= b for a, b in zip(vals, vals[1:])), dict(zip(order, vals))
  assert got["source order"] < got["alignment"]
