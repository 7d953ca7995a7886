"""Training-free speaker similarity on espeak speakers."""

import numpy as np
import pytest
import soxr

from data_pipelines.speakers import get_speaker
from data_pipelines.synthesis import synthesize
from liveinterp.eval import speaker_similarity as V

# Low-pitch male (m1, pitch 26), mid male (m4), female (f3), high-pitch female (f1, 80).
SPEAKERS = ["spk12", "spk03", "spk09", "spk15"]
SENTENCES = ["The cat sat on the mat.", "I want to go home now."]


@pytest.fixture(scope="module")
def audio():
  """{(speaker, sentence index): float32 16 kHz audio} for 4 speakers x 2 sentences."""
  return {(s, j): synthesize(t, "en", get_speaker(s)).audio.astype(np.float32) / 32768.0
          for s in SPEAKERS for j, t in enumerate(SENTENCES)}


@pytest.fixture(scope="module")
def emb(audio):
  return {k: V.embed(a) for k, a in audio.items()}


def test_embedding_shape_norm_and_rate_independence(audio, emb):
  e = emb[("spk03", 0)]
  assert e.shape == (V.DIM,) and e.dtype == np.float32
  assert np.linalg.norm(e) == pytest.approx(1.0, abs=1e-5)
  e22 = V.embed(soxr.resample(audio[("spk03", 0)], 16000, 22050), 22050)
  assert float(e @ e22) > 0.99


def test_same_speaker_beats_same_sentence(emb):
  low, high = "spk12", "spk15"
  same_spk = float(emb[(low, 0)] @ emb[(low, 1)])
  same_sent = float(emb[(low, 0)] @ emb[(high, 0)])
  assert same_spk > same_sent + 0.3
  # Every speaker: its other sentence is closer than the same sentence by anyone else.
  for s in SPEAKERS:
    others = [float(emb[(s, 0)] @ emb[(t, 0)]) for t in SPEAKERS if t != s]
    assert float(emb[(s, 0)] @ emb[(s, 1)]) > max(others), s


def test_speaker_similarity_identifies_speakers(audio):
  outs = [audio[(s, 1)] for s in SPEAKERS]
  srcs = [audio[(s, 0)] for s in SPEAKERS]
  r = V.speaker_similarity(outs, srcs, SPEAKERS)
  assert r["n"] == 4 and r["skipped"] == 0 and r["n_speakers"] == 4
  assert r["top1_rate"] >= 0.75
  assert r["margin"] > 0.2
  assert r["margin"] == pytest.approx(r["same_speaker_cos"] - r["other_speaker_cos"])
  # Negative control: outputs given to the wrong speakers score below zero margin.
  bad = V.speaker_similarity(outs[1:] + outs[:1], srcs, SPEAKERS)
  assert bad["margin"] < 0 < r["margin"] and bad["top1_rate"] <= 0.25
  # Centering spreads the cosines but keeps the ranking.
  c = V.speaker_similarity(outs, srcs, SPEAKERS, center=True)
  assert c["margin"] > r["margin"] and c["top1_rate"] >= 0.75


def test_top1_averages_over_each_speakers_sources(audio):
  # Two sources per speaker; output i is sentence 1 of speaker i, its own source is
  # sentence 0 of the same speaker, and the speaker's other source is that output.
  spk = [s for s in SPEAKERS[:2] for _ in range(2)]
  srcs = [audio[(s, j)] for s in SPEAKERS[:2] for j in range(2)]
  outs = [audio[(s, 1 - j)] for s in SPEAKERS[:2] for j in range(2)]
  r = V.speaker_similarity(outs, srcs, spk)
  assert r["top1_rate"] == 1.0 and r["n_speakers"] == 2


def test_skips_short_outputs_and_rejects_bad_input(audio):
  src = [audio[(s, 0)] for s in SPEAKERS[:3]]
  good = audio[(SPEAKERS[0], 1)]
  outs = [good, np.zeros(0, np.float32), good[:1600], np.zeros(16000, np.float32)]
  r = V.speaker_similarity(outs, src + [audio[(SPEAKERS[3], 0)]], SPEAKERS)
  assert r["n"] == 1 and r["skipped"] == 3 and r["skipped_items"] == [1, 2, 3]
  assert np.isfinite(r["margin"])

  nan_out = good.copy()
  nan_out[100] = np.nan
  with pytest.raises(ValueError, match=r"output 1 .*non-finite"):
    V.speaker_similarity([good, nan_out], src[:2], SPEAKERS[:2])
  with pytest.raises(ValueError, match=r"source 1 \(speaker spk03\)"):
    V.speaker_similarity([good, good], [src[0], np.zeros(0, np.float32)], SPEAKERS[:2])
  with pytest.raises(ValueError, match="lengths must match"):
    V.speaker_similarity([good], src[:2], SPEAKERS[:2])
  with pytest.raises(V.AudioTooShortError, match="clip"):
    V.embed(np.zeros(100, np.float32), 16000, name="clip")


def test_nan_metrics_when_nothing_to_compare(audio):
  src = [audio[(s, 0)] for s in SPEAKERS[:2]]
  empty = np.zeros(0, np.float32)
  r = V.speaker_similarity([empty, empty], src, SPEAKERS[:2])
  assert r["n"] == 0 and r["skipped_items"] == [0, 1]
  assert all(np.isnan(r[k]) for k in ("same_speaker_cos", "margin", "top1_rate"))
  one = V.speaker_similarity([audio[("spk03", 1)]], [audio[("spk03", 0)]], ["spk03"])
  assert one["same_speaker_cos"] > 0.5 and np.isnan(one["other_speaker_cos"])
  assert np.isnan(one["top1_rate"]) and one["n_speakers"] == 1
