"""Quality metrics: sacrebleu values, zh tokenisation, ASR-BLEU through a recogniser."""

import numpy as np
import pytest

from liveinterp.eval import quality as Q


def test_bleu_and_chrf_perfect_and_zero():
  refs = ["the cat sat on the mat", "hello world again"]
  assert Q.corpus_bleu(refs, refs) == pytest.approx(100.0)
  assert Q.corpus_chrf(refs, refs) == pytest.approx(100.0)
  assert Q.corpus_bleu(["zzz qqq", "xx yy"], refs) < 1.0


def test_chinese_tokenisation_matters():
  ref = ["我们今天去公园散步"]
  hyp = ["我们今天去公园跑步"]
  zh = Q.corpus_bleu(hyp, ref, lang="zh")
  assert 30 < zh < 100           # character-level overlap is credited
  assert Q.corpus_bleu(hyp, ref, lang="en") == 0.0  # one "word" each: no match


def test_sentence_chrf_prefix_grows():
  ref = "the quick brown fox jumps over the lazy dog"
  a, b = Q.sentence_chrf("the quick", ref), Q.sentence_chrf("the quick brown fox", ref)
  assert 0 < a < b < 100
  assert Q.sentence_chrf("", ref) == 0.0


def test_asr_bleu_labels_the_recogniser():
  class Fake:
    name, self_judged = "fake", True

    def __call__(self, audio, sr):
      return "the cat sat on the mat today" if audio.mean() > 0 else "nothing"

  out = Q.asr_bleu([np.ones(10), -np.ones(10)], ["the cat sat on the mat today"] * 2, Fake())
  assert out["self_judged"] and out["recognizer"] == "fake"
  assert out["transcripts"] == ["the cat sat on the mat today", "nothing"]
  assert 0 < out["asr_bleu"] < 100


def test_length_mismatch_is_an_error():
  with pytest.raises(ValueError, match="1 hypotheses vs 2 references"):
    Q.corpus_bleu(["a"], ["a", "b"])
