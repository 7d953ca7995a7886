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


def _sentences(n, seed):
  rng = np.random.default_rng(seed)
  vocab = "the a cat dog sat ran on under mat table red big small old new".split()
  return [" ".join(rng.choice(vocab, size=int(rng.integers(4, 10)))) for _ in range(n)]


def test_paired_bootstrap_point_is_the_corpus_difference_and_interval_behaves():
  """The difference on the full set equals the two corpus scores' difference (the summed
  sentence statistics reproduce sacrebleu's corpus BLEU/chrF); a system against itself
  has the interval [0, 0]; a clearly better system's interval excludes 0; the same seed
  gives the same interval."""
  refs = _sentences(60, 0)
  good = [r if i % 4 else _sentences(1, 100 + i)[0] for i, r in enumerate(refs)]
  bad = _sentences(60, 1)
  got = Q.paired_bootstrap(good, bad, refs, n_boot=300)
  assert got["bleu"]["delta"] == pytest.approx(Q.corpus_bleu(good, refs) -
                                               Q.corpus_bleu(bad, refs))
  assert got["chrf"]["delta"] == pytest.approx(Q.corpus_chrf(good, refs) -
                                               Q.corpus_chrf(bad, refs))
  for m in ("bleu", "chrf"):
    assert 0 < got[m]["lo"] <= got[m]["delta"] <= got[m]["hi"]
  same = Q.paired_bootstrap(good, good, refs, n_boot=50)
  assert same["bleu"] == {"delta": 0.0, "lo": 0.0, "hi": 0.0}
  assert Q.paired_bootstrap(good, bad, refs, n_boot=300) == got
  # Two systems that differ on one utterance in 60: the interval holds 0.
  near = list(good)
  near[3] = bad[3]
  close = Q.paired_bootstrap(good, near, refs, n_boot=300)["bleu"]
  assert close["lo"] <= 0.0 <= close["hi"]
  with pytest.raises(ValueError, match="same, non-empty"):
    Q.paired_bootstrap(good[:5], bad, refs)


def test_paired_bootstrap_ratio():
  a, b = np.full(50, 900.0), np.full(50, 1000.0)
  assert Q.paired_bootstrap_ratio(a, b) == pytest.approx(
      {"delta": -10.0, "lo": -10.0, "hi": -10.0})
  rng = np.random.default_rng(0)
  b = rng.uniform(800, 1600, 80)
  a = b * 0.9 + rng.normal(0, 30, 80)
  r = Q.paired_bootstrap_ratio(a, b)
  assert r["lo"] < r["delta"] < r["hi"] < 0 and r["delta"] == pytest.approx(
      100 * (a.mean() / b.mean() - 1))
