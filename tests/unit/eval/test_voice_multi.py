"""Multi-speaker talks (issue #10): attribution of output segments to speakers."""

import numpy as np
import pytest

from data_pipelines.speakers import get_speaker
from data_pipelines.synthesis import synthesize
from liveinterp.eval import voice as V

A, B = "spk12", "spk15"   # low male m1, high female f1
SENTENCES = ["The cat sat on the mat.", "I want to go home now.", "It is cold today."]


@pytest.fixture(scope="module")
def audio():
  return {(s, j): synthesize(t, "en", get_speaker(s)).audio.astype(np.float32) / 32768.0
          for s in (A, B) for j, t in enumerate(SENTENCES)}


def test_correct_attribution_scores_one_swapped_zero(audio):
  refs = [{A: audio[(A, 0)], B: audio[(B, 0)]}]
  segs = [(audio[(A, 1)], A), (audio[(B, 1)], B), (audio[(A, 2)], A), (audio[(B, 2)], B)]
  r = V.speaker_attribution([segs], refs)
  assert r["accuracy"] == 1.0 and r["margin"] > 0.1
  assert (r["n"], r["skipped"], r["n_segments"], r["talks"]) == (4, 0, 4, 1)
  swapped = [(a, B if s == A else A) for a, s in segs]
  w = V.speaker_attribution([swapped], refs)
  assert w["accuracy"] == 0.0
  assert w["margin"] == pytest.approx(-r["margin"], abs=1e-5)


def test_short_segments_skipped_and_errors(audio):
  refs = [{A: audio[(A, 0)], B: audio[(B, 0)]}]
  short = audio[(A, 1)][:int(0.1 * 16000)]
  r = V.speaker_attribution([[(short, A), (np.zeros(0, np.float32), B),
                              (audio[(B, 1)], B)]], refs)
  assert (r["n"], r["skipped"], r["n_segments"]) == (1, 2, 3) and r["accuracy"] == 1.0
  none = V.speaker_attribution([[(short, A)]], refs)
  assert none["n"] == 0 and np.isnan(none["accuracy"]) and np.isnan(none["margin"])
  with pytest.raises(ValueError, match="segment 0: speaker 'spk99'"):
    V.speaker_attribution([[(audio[(A, 1)], "spk99")]], refs)
  with pytest.raises(ValueError, match="at least two"):
    V.speaker_attribution([[(audio[(A, 1)], A)]], [{A: audio[(A, 0)]}])
  bad = audio[(A, 1)].copy()
  bad[3] = np.inf
  with pytest.raises(ValueError, match="talk 0 segment 0"):
    V.speaker_attribution([[(bad, A)]], refs)
