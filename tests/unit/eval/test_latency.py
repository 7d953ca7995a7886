"""Latency metrics pinned on hand-computed cases (SimulEval definitions)."""

import math

import numpy as np
import pytest

from liveinterp.eval import latency as L


def test_al_by_hand_and_tau_cutoff():
  # |X| = 1000 ms, 4 words: rate = 250 ms/word.
  d = [300, 500, 1000, 1000]
  # τ = 3 (first d >= |X| is the 3rd): (300-0 + 500-250 + 1000-500) / 3 = 350
  assert L.average_lagging(d, 1000) == pytest.approx(350.0)
  # Words after τ do not count: appending more delays at |X| changes only the rate.
  d2 = [300, 500, 1000, 1000, 1000]  # rate 200: (300 + 300 + 600)/3
  assert L.average_lagging(d2, 1000) == pytest.approx(400.0)


def test_laal_uses_the_longer_of_hypothesis_and_reference():
  d = [300, 500, 1000, 1000]
  # reference 8 words: rate 125: (300 + 375 + 750)/3 = 475
  assert L.length_adaptive_average_lagging(d, 1000, 8) == pytest.approx(475.0)
  # reference shorter than hypothesis: LAAL == AL
  assert L.length_adaptive_average_lagging(d, 1000, 2) == pytest.approx(350.0)


def test_first_delay_past_source_end():
  assert L.average_lagging([1500, 1600], 1000) == 1500.0


def test_ap_dal_offsets():
  d = [200, 200, 900]
  assert L.average_proportion(d, 1000) == pytest.approx(1300 / 3000)
  # rate 1000/3: d' = 200, max(200, 533.3)=533.3, max(900, 866.7)=900
  want = np.mean([200 - 0, 533.3333333 - 333.3333333, 900 - 666.6666667])
  assert L.differentiable_average_lagging(d, 1000) == pytest.approx(want)
  s = L.score(d, 1000, reference_len=3)
  assert s.StartOffset == 200 and s.EndOffset == -100


def test_speech_playback_queue():
  # seg 0 written at 500, lasts 800 -> plays 500..1300; seg 1 written at 1000 must wait.
  delays, spans = L.speech_delays([500, 1000], [800, 300], [[0, 400], [0, 100]])
  assert spans == [(500, 1300), (1300, 1600)]
  assert delays == [500, 900, 1300, 1400]


def test_computation_aware_emissions():
  out = L.computation_aware_emissions([640, 1280, 1920], [100, 700, 50])
  np.testing.assert_allclose(out, [740, 1980, 2030])


def test_flal_per_sentence():
  # two sentences of 2 and 2 reference words starting at 0 and 2000 ms; 4 output words
  lags = L.first_word_lags([500, 800, 2600, 2700], [0, 2000], [2, 2])
  assert lags == [500, 600]
  s = L.score([500, 800, 2600, 2700], 4000, 4, [0, 2000], [2, 2])
  assert s.FLAL == 550


def test_empty_and_bad_inputs():
  # An empty output is scored at the worst latency and flagged, not skipped (issue #10).
  empty = L.score([], 1000, 3)
  assert empty.empty and empty.AL == empty.LAAL == empty.StartOffset == 1000
  assert math.isnan(L.average_lagging([], 1000))
  agg = L.corpus_scores([empty, L.score([100], 1000, 1)])
  assert agg["episodes_without_output"] == 1 and agg["AL"] == 550
  assert L.corpus_scores([empty, L.score([100], 1000, 1)], skip_empty=True)["AL"] == 100
  # legacy None (no source duration known): counted, not in the means
  agg = L.corpus_scores([None, L.score([100], 1000, 1)])
  assert agg["episodes_without_output"] == 1 and agg["AL"] == 100
  with pytest.raises(ValueError, match="non-decreasing"):
    L.average_lagging([500, 100], 1000)
  with pytest.raises(ValueError, match="source_ms"):
    L.average_lagging([1], 0)
  with pytest.raises(ValueError, match="finite"):
    L.average_lagging([float("nan")], 100)
