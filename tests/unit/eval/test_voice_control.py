"""Voice-lost control (issue #10): the same speech in another speaker's voice."""

import numpy as np
import pytest

from data_pipelines.speakers import get_speaker
from data_pipelines.synthesis import synthesize
from liveinterp.eval import voice as V

SPEAKERS = ["spk12", "spk15", "spk03", "spk09"]  # m1 low, f1 high, m4, f3
SENTENCES = ["The cat sat on the mat.", "I want to go home now."]


@pytest.fixture(scope="module")
def audio():
  return {(s, j): synthesize(t, "en", get_speaker(s)).audio.astype(np.float32) / 32768.0
          for s in SPEAKERS for j, t in enumerate(SENTENCES)}


def test_control_partners_deterministic_other_speaker():
  ids = ["a", "a", "b", "a", "c"]
  assert V.control_partners(ids) == [2, 2, 3, 4, 0]
  assert V.control_partners(["a", "a"]) == [None, None]
  assert V.control_partners([]) == []


def test_margin_positive_with_voice_and_zero_without(audio):
  ids = SPEAKERS
  partners = V.control_partners(ids)
  sources = [audio[(s, 0)] for s in ids]
  outputs = [audio[(s, 1)] for s in ids]             # sentence 1 in the own voice
  controls = [audio[(ids[p], 1)] for p in partners]  # same content, partner's voice
  r = V.voice_control(outputs, controls, sources, ids)
  assert r["n"] == 4 and r["skipped"] == 0 and r["items"] == [0, 1, 2, 3]
  assert r["margin"] > 0.1 and r["positive_rate"] == 1.0
  assert r["margin"] == pytest.approx(r["own_speaker_cos"] - r["control_cos"])
  assert r["margin_quantiles"]["min"] > 0
  assert len(r["margins"]) == 4
  # an output that ignores the embedding: the "output" is the control itself
  lost = V.voice_control(controls, controls, sources, ids)
  assert lost["margin"] == pytest.approx(0.0, abs=1e-6)
  assert lost["positive_rate"] == 0.0


def test_skipping_and_nan_rules(audio):
  ids = SPEAKERS[:2]
  sources = [audio[(s, 0)] for s in ids]
  outputs = [np.zeros(800, np.float32), audio[(ids[1], 1)]]   # too short / silent
  controls = [audio[(ids[1], 1)], None]                        # no control for item 1
  r = V.voice_control(outputs, controls, sources, ids)
  assert r["n"] == 0 and r["skipped"] == 2 and r["skipped_items"] == [0, 1]
  assert np.isnan(r["margin"]) and np.isnan(r["own_speaker_cos"])
  assert np.isnan(r["positive_rate"]) and np.isnan(r["margin_quantiles"]["median"])
  # a silent control is skipped, not scored
  r = V.voice_control([audio[(ids[0], 1)]], [np.zeros(16000, np.float32)], sources[:1],
                      ids[:1])
  assert r["skipped_items"] == [0]
  bad = audio[(ids[0], 1)].copy()
  bad[10] = np.nan
  with pytest.raises(ValueError, match="output 0"):
    V.voice_control([bad], [audio[(ids[1], 1)]], sources[:1], ids[:1])
  with pytest.raises(ValueError, match="control 0"):
    V.voice_control([audio[(ids[0], 1)]], [bad], sources[:1], ids[:1])
  with pytest.raises(ValueError, match="source 0"):
    V.voice_control([audio[(ids[0], 1)]], [audio[(ids[1], 1)]], [np.zeros(10, np.float32)],
                    ids[:1])
  with pytest.raises(ValueError, match="lengths must match"):
    V.voice_control([audio[(ids[0], 1)]], [], sources[:1], ids[:1])
