"""The constant-output floor: the one training target that scores best on the refs."""

import pytest

from liveinterp.eval import quality
from liveinterp.eval.streaming_metrics import constant_baseline


def test_constant_baseline_picks_the_best_single_sentence():
  refs = ["he goes to beijing tomorrow .", "she goes to beijing today .",
          "we meet at three ."]
  cands = ["we meet at three .", "he goes to beijing today .", "zzz", ""]
  out = constant_baseline(cands, refs, "en")
  assert out["sentence"] == "he goes to beijing today ."
  assert out["candidates"] == 3
  for c in ("we meet at three .", "zzz"):
    assert out["chrf"] >= quality.corpus_chrf([c] * 3, refs)
  assert out["bleu"] == pytest.approx(quality.corpus_bleu([out["sentence"]] * 3, refs, "en"))
  with pytest.raises(ValueError, match="no candidate"):
    constant_baseline(["", " "], refs, "en")
