"""Multi-speaker talks (issue #10): attribution of output segments to speakers."""

import numpy as np
import pytest

from data_pipelines.speakers import get_speaker
from data_pipelines.synthesis import synthesize
from liveinterp.eval import speaker_similarity as V

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


# ---- eval.inputs / streaming_metrics: two-speaker talks from records, segment attribution -------------------
def _records():
  from data_pipelines.corpus import Pair, make_example
  from data_pipelines.synthesis import SynthesisConfig
  pairs = [Pair("t:1", "toy", "zh", "en", "我有三个苹果。", "I have three apples."),
           Pair("t:2", "toy", "zh", "en", "今天天气很好。", "The weather is nice today."),
           Pair("t:3", "toy", "zh", "en", "老师，您好！", "Hello, teacher!")]
  al = np.asarray([[0, 0], [1, 1]], np.int32)
  spk = [get_speaker(A), get_speaker(A), get_speaker(B)]
  return [make_example(p, al, s, seed=0, synth_config=SynthesisConfig())
          for p, s in zip(pairs, spk)]


def _result(parts, sr=16000):
  """A StreamResult-like object: segments (audio, emit_ms) played back to back."""
  from types import SimpleNamespace
  segs = [SimpleNamespace(audio_ms=1000.0 * len(a) / sr, emit_ms=t) for a, t in parts]
  segs.insert(1, SimpleNamespace(audio_ms=0.0, emit_ms=parts[0][1] + 80))  # text only
  return SimpleNamespace(segments=segs, speech=np.concatenate([a for a, _ in parts]),
                         sample_rate=sr)


def test_two_speaker_talks_and_voice_multi(audio):
  from data_pipelines import talks
  from liveinterp.eval import inputs, streaming_metrics as sm
  recs = _records()
  made = inputs.two_speaker_talks(recs, 4)
  assert len(made) == 1  # records 0 and 2 (different speakers); record 1 is left alone
  talk = made[0]
  spans, names = talks.speaker_segments(talk)
  assert names == [A, B] and talk["speaker"] == f"{A}+{B}"
  n0 = len(recs[0]["src_audio"])
  assert spans[0, 1] == pytest.approx(1000.0 * n0 / 16000)
  assert spans[1, 0] == pytest.approx(spans[0, 1] + 800.0, abs=0.1)
  # word / ready times of the second utterance are shifted into its span
  k = len(recs[0]["src_words"])
  assert talk["src_word_start_ms"][k] >= spans[1, 0]
  assert np.all(talk["tgt_ready_ms"][len(recs[0]["tgt_words"]):] >= spans[1, 0])

  a_out, b_out = audio[(A, 1)], audio[(B, 1)]
  t_a = float(spans[0, 1]) + 100.0            # in the pause after A: A's words
  t_guard = float(spans[1, 0]) + 200.0        # just after the change: ambiguous
  t_b = float(spans[1, 1])                    # end of B's span
  good = sm.voice_multi([_result([(a_out, t_a), (audio[(A, 2)], t_guard),
                                        (b_out, t_b)])], [talk], 16000)
  assert good["accuracy"] == 1.0 and good["margin"] > 0.1
  assert (good["n"], good["ambiguous"], good["raw_segments"], good["talks"]) == (2, 1, 3, 1)
  swapped = sm.voice_multi([_result([(b_out, t_a), (a_out, t_b)])], [talk], 16000)
  assert swapped["accuracy"] == 0.0 and swapped["margin"] < -0.1
  # merging: two short pieces of A's speech (each too short alone) become one segment
  short = [(a_out[:3200], t_a), (a_out[3200:6400], t_a + 80), (a_out[6400:], t_a + 160)]
  merged = sm.voice_multi([_result(short)], [talk], 16000)
  assert merged["n"] == 1 and merged["accuracy"] == 1.0
  apart = sm.voice_multi([_result(short[:2])], [talk], 16000, merge=False)
  assert apart["n"] == 0 and apart["skipped"] == 2


def test_report_markdown_and_payload_carry_voice_control_and_multi():
  import copy
  from liveinterp.eval import report as report_lib
  from tests.unit.eval.test_publish_table import REPORT
  r = copy.deepcopy(REPORT)
  r.update(chunk_ms=320, policies={}, examples_text=[])
  r["simul"].update(empty_outputs=0, text_latency_ca={})
  r["codec"]["items"] = 4
  r["voice"] = {"margin": 0.1, "same_speaker_cos": 0.6, "other_speaker_cos": 0.5,
                "top1_rate": 0.5, "n": 4, "skipped": 0, "control_codes": "codec re-encoding",
                "control": {"own_speaker_cos": 0.61, "control_cos": 0.42, "margin": 0.19,
                            "margin_quantiles": {"min": -0.1, "p25": 0.05, "median": 0.2,
                                                 "p75": 0.3, "max": 0.5},
                            "positive_rate": 0.75, "n": 4, "skipped": 1},
                "control_resynth": {"margin": 0.15}}
  r["voice_multi"] = {"accuracy": 0.875, "margin": 0.12, "n": 8, "skipped": 3,
                      "talks": 4, "ambiguous": 2, "raw_segments": 13, "guard_ms": 1000.0}
  md = report_lib.markdown(r)
  assert "Voice-lost control" in md and "margin 0.19" in md and "median 0.2" in md
  assert "positive 0.75" in md and "resynthesised own voice margin 0.15" in md
  assert "two-speaker talks (4 talks)" in md and "0.875 of the time" in md
  assert "3 too short" in md
  p = report_lib.publish_payload(r)
  assert p["speaker_control_margin"] == 0.19 and p["voice_multi_accuracy"] == 0.875
  # a report without them (text-only, older runs) still renders
  bare = copy.deepcopy(r)
  del bare["voice_multi"], bare["voice"]["control"]
  assert "Voice-lost" not in report_lib.markdown(bare)
  assert report_lib.publish_payload(bare)["speaker_control_margin"] is None
