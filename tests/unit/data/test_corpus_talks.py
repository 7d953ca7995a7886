"""Long-form talks: concatenation with pauses, shifted times and alignment."""

import numpy as np
import pytest

from data_pipelines import speakers, talks
from data_pipelines.corpus import EXAMPLE_KEYS, Pair, make_example
from data_pipelines.synthesis import SynthesisConfig, SynthesisError

PAIRS = [
  Pair("t:1", "toy", "zh", "en", "老师，您好！", "Hello, teacher!"),
  Pair("t:2", "toy", "zh", "en", "我有三个苹果。", "I have three apples."),
  Pair("t:3", "toy", "zh", "en", "今天天气很好。", "The weather is nice today."),
]


def _example(p, spk):
  a = np.array([[k, min(k, 1)] for k in range(2)], np.int32)
  return make_example(p, a, spk, seed=0, synth_config=SynthesisConfig())


def test_concat_shifts_times_and_duration():
  spk = speakers.SPEAKERS[2]
  exs = [_example(p, spk) for p in PAIRS]
  pauses = [500.0, 1000.0]
  talk = talks.concat_examples(exs, pauses, "talk-x")
  assert set(talk) == set(EXAMPLE_KEYS) and talk["is_talk"] is True
  n_src = sum(len(e["src_audio"]) for e in exs)
  assert len(talk["src_audio"]) == n_src + 1500 * 16
  assert len(talk["tgt_audio"]) == sum(len(e["tgt_audio"]) for e in exs) + 1500 * 16
  assert talk["src_audio"].dtype == np.int16
  off1 = len(exs[0]["src_audio"]) / 16.0 + 500.0  # ms where utterance 2 starts
  n0 = len(exs[0]["src_words"])
  np.testing.assert_allclose(talk["src_word_start_ms"][n0:n0 + len(exs[1]["src_words"])],
                             exs[1]["src_word_start_ms"] + off1, rtol=1e-6)
  m0 = len(exs[0]["tgt_words"])
  toff1 = len(exs[0]["tgt_audio"]) / 16.0 + 500.0
  np.testing.assert_allclose(talk["tgt_word_end_ms"][m0:m0 + len(exs[1]["tgt_words"])],
                             exs[1]["tgt_word_end_ms"] + toff1, rtol=1e-6)
  np.testing.assert_allclose(talk["tgt_ready_ms"][m0:m0 + len(exs[1]["tgt_words"])],
                             exs[1]["tgt_ready_ms"] + off1, rtol=1e-6)
  assert talk["src_words"] == sum((e["src_words"] for e in exs), [])
  np.testing.assert_array_equal(talk["alignment"][2:4], exs[1]["alignment"] + [m0, n0])
  assert np.all(np.diff(talk["tgt_ready_ms"]) >= 0)
  assert np.all(np.diff(talk["src_word_start_ms"]) >= 0)
  assert talk["src_text"] == "".join(p.src_text for p in PAIRS)
  assert talk["tgt_text"] == " ".join(p.tgt_text for p in PAIRS)
  with pytest.raises(ValueError, match="pauses"):
    talks.concat_examples(exs, [1.0], "bad")


def test_make_talks_groups_by_duration_one_speaker_per_talk():
  skipped = []

  def synth(p, spk):
    if p.id == "t:2":
      raise SynthesisError("t:2: silent audio")
    return _example(p, spk)

  cfg = talks.TalkConfig(pause_ms=(200.0, 300.0), min_duration_s=0.5, min_utterances=1)
  out = list(talks.make_talks(PAIRS, synth, "talk-test", cfg, seed=3,
                              skipped=lambda p, e: skipped.append(p.id)))
  assert skipped == ["t:2"]
  assert len(out) == 2  # each utterance already exceeds 0.5 s
  assert [t["id"] for t in out] == ["talk-test-0000", "talk-test-0001"]
  assert out[0]["speaker"] == speakers.speaker_for("talk-test-0", 3).name
  with pytest.raises(ValueError, match="several speakers"):
    talks.concat_examples([_example(PAIRS[0], speakers.SPEAKERS[0]),
                           _example(PAIRS[1], speakers.SPEAKERS[1])], [100.0], "x")
