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


def test_simul_scores_length_ratio_counts_left_out_content():
  """length_ratio = hypothesis words / reference words over the corpus (the signature of a
  policy that buys latency by skipping content, issue #13's lag-only ablation)."""
  import numpy as np
  from liveinterp.eval.streaming_metrics import simul_scores
  from liveinterp.inference.session import Segment, StreamResult

  def result(*texts):
    segs = [Segment(chunk=i, emit_ms=640.0 * (i + 1), ready_ms=640.0 * (i + 1),
                    compute_ms=1.0, text=t, src="", text_ids=[], speech_tokens=0,
                    audio_ms=0.0) for i, t in enumerate(texts)]
    return StreamResult(segments=segs, text=" ".join(texts), source_ms=2560.0,
                        compute_ms=[1.0] * 4)
  records = [dict(tgt_lang="en", tgt_text=t, src_audio=np.zeros(40960, np.int16),
                  src_word_start_ms=np.asarray([100.0]))
             for t in ("we meet at three .", "he goes to beijing today .")]
  full = simul_scores([result("we meet", "at three ."), result("he goes to beijing today .")],
                      records, 16000)
  cut = simul_scores([result("we meet"), result("he goes .")], records, 16000)
  assert full["length_ratio"] == 1.0
  assert cut["length_ratio"] == pytest.approx(5 / 11)  # "we meet" + "he goes ." of 5 + 6 words
  assert cut["bleu"] < full["bleu"]
  # Per-utterance outputs for paired comparisons: the texts, references and LAAL whose
  # mean is the corpus LAAL.
  u = full["utterances"]
  assert u["ids"] == ["0", "1"] and u["hyps"] == ["we meet at three .",
                                                  "he goes to beijing today ."]
  assert u["refs"] == [r["tgt_text"] for r in records]
  assert np.mean(u["laal"]) == pytest.approx(full["text_latency"]["LAAL"])
  assert u["laal"][0] > u["laal"][1]  # written over two chunks vs all in the first
