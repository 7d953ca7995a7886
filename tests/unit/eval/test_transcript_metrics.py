"""Quality and latency of the live source transcript (issue #10): `quality.word_error_rate`
and `latency.transcript_lags`, against hand-counted examples."""

import math

import pytest

from liveinterp.eval import latency, quality


def test_word_error_rate_counts_edits_over_reference_words():
  # "b"->"x" substituted, "d" deleted: 2 edits / 4 reference words.
  assert quality.word_error_rate(["a b c"], ["a x c d"], "en") == pytest.approx(0.5)
  # Corpus-level: (2 + 1 inserted) / (4 + 2).
  assert quality.word_error_rate(["a b c", "e f g"], ["a x c d", "e f"], "en") == \
      pytest.approx(3 / 6)
  # Normalised first: case and punctuation are no errors.
  assert quality.word_error_rate(["Hello, World!"], ["hello world"], "en") == 0.0
  # Chinese counts characters.
  assert quality.word_error_rate(["你好世"], ["你好，世界。"], "zh") == pytest.approx(1 / 4)
  assert quality.word_error_rate([""], ["你好"], "zh") == 1.0
  assert math.isnan(quality.word_error_rate(["x"], [""], "en"))
  with pytest.raises(ValueError, match="2 transcripts for 1"):
    quality.word_error_rate(["a", "b"], ["a"], "en")


def test_transcript_lags_match_words_in_order():
  out = latency.transcript_lags([640.0, 640.0, 1920.0], [300.0, 500.0, 1100.0, 1500.0])
  assert out["mean_lag_ms"] == pytest.approx((340 + 140 + 820) / 3)
  assert out["max_lag_ms"] == pytest.approx(820.0)
  assert (out["matched"], out["transcript_words"], out["source_words"]) == (3, 3, 4)
  empty = latency.transcript_lags([], [100.0])
  assert math.isnan(empty["mean_lag_ms"]) and empty["matched"] == 0
  with pytest.raises(ValueError, match="finite"):
    latency.transcript_lags([float("nan")], [1.0])
