"""Word alignment (eflomal + symmetrisation, diagonal fallback) and ready times."""

import numpy as np
import pytest

from data_pipelines import alignment

# A tiny hand-made de→en corpus (with reorderings) and its gold links (src, tgt).
_MONO = {(0, 0), (1, 1), (2, 2), (3, 3)}
_PERFECT = {(0, 0), (1, 1), (2, 3), (3, 4), (4, 2)}  # ich habe das buch gelesen
_BASE = [
  ("das haus ist klein", "the house is small", _MONO),
  ("das haus ist groß", "the house is big", _MONO),
  ("das buch ist klein", "the book is small", _MONO),
  ("ein buch ist groß", "a book is big", _MONO),
  ("ich habe das buch gelesen", "i have read the book", _PERFECT),
  ("ich habe das haus gesehen", "i have seen the house", _PERFECT),
  ("du hast ein buch gelesen", "you have read a book", _PERFECT),
  ("ich sehe das haus", "i see the house", _MONO),
  ("wir haben es gelesen", "we have read it", {(0, 0), (1, 1), (2, 3), (3, 2)}),
  ("er hat den brief gelesen", "he has read the letter", _PERFECT),
  ("wir haben es gesehen", "we have seen it", {(0, 0), (1, 1), (2, 3), (3, 2)}),
  ("er hat den brief gesehen", "he has seen the letter", _PERFECT),
  ("sie hat gelesen", "she has read", {(0, 0), (1, 1), (2, 2)}),
  ("ich habe gelesen", "i have read", {(0, 0), (1, 1), (2, 2)}),
]
CORPUS = _BASE * 6


def _recall(aligns):
  """Fraction of gold (src, tgt) links found; alignments are (tgt, src) rows."""
  hit = total = 0
  for a, (_, _, gold) in zip(aligns, CORPUS):
    got = {(int(s), int(t)) for t, s in a}
    hit += len(gold & got)
    total += len(gold)
  return hit / total


def test_eflomal_aligns_tiny_corpus_and_ready_times():
  src = [s.split() for s, _, _ in CORPUS]
  tgt = [t.split() for _, t, _ in CORPUS]
  try:
    alignment.run_eflomal(src[:2], tgt[:2])
  except Exception as e:  # noqa: BLE001 — e.g. the wheel's binary needs AVX-512
    pytest.skip(f"eflomal cannot run on this machine: {e}")
  aligns, stats = alignment.align_corpus(src, tgt)
  assert stats["method"] == "eflomal+grow-diag-final-and"
  assert stats["fallback_reason"] is None and stats["sentences"] == len(CORPUS)
  assert stats["links"] == sum(len(a) for a in aligns)
  # eflomal samples (seeded from /dev/urandom, no seed option): single-run recall was
  # 0.75–0.95 over 150 runs, the monotone diagonal gets 0.68 and a swapped
  # (src, tgt) order far less. The median of three runs keeps the test from flaking.
  recalls = [_recall(aligns)] + [_recall(alignment.align_corpus(src, tgt)[0])
                                 for _ in range(2)]
  assert sorted(recalls)[1] > 0.72
  diag, _ = alignment.align_corpus(src, tgt, use_eflomal=False)
  assert _recall(diag) < 0.7
  # ready times against made-up source word end times, for every sentence
  for a, s_words, t_words in zip(aligns, src, tgt):
    src_end = 250.0 * (1 + np.arange(len(s_words), dtype=np.float32))
    r = alignment.ready_times(a, len(t_words), src_end, src_end[-1] + 100.0)
    assert r.dtype == np.float32 and r.shape == (len(t_words),)
    assert np.all(np.diff(r) >= 0)
    for k in range(len(t_words)):
      aligned_src = a[a[:, 0] == k, 1]
      if len(aligned_src):
        assert r[k] >= src_end[aligned_src].max()
      assert r[k] in set(src_end.tolist()) | {src_end[-1] + 100.0}


def test_ready_time_waits_for_reordered_source_word():
  # ich habe das buch gelesen / i have read the book: "read" ← "gelesen"
  a = np.array([[0, 0], [1, 1], [2, 4], [3, 2], [4, 3]], np.int32)
  src_end = np.array([300.0, 600.0, 800.0, 1100.0, 1600.0], np.float32)
  r = alignment.ready_times(a, 5, src_end, 1700.0)
  np.testing.assert_allclose(r, [300.0, 600.0, 1600.0, 1600.0, 1600.0])


def test_ready_times_unaligned_nearest_neighbour_and_monotone():
  src_end = np.array([100.0, 200.0, 300.0, 400.0])
  # tgt 0 → src 1; tgt 1 unaligned (neighbours 0 and 2, tie → later); tgt 2 → src 3;
  # tgt 3 → src 0 (earlier than tgt 2: running max); tgt 4 unaligned (nearest = 3)
  a = np.array([[0, 1], [2, 3], [3, 0]], np.int32)
  r = alignment.ready_times(a, 5, src_end, 450.0)
  np.testing.assert_allclose(r, [200.0, 400.0, 400.0, 400.0, 400.0])
  np.testing.assert_allclose(alignment.ready_times(np.zeros((0, 2), np.int32), 3, src_end,
                                                   450.0), [450.0] * 3)
  with pytest.raises(ValueError, match="out of range"):
    alignment.ready_times(np.array([[0, 9]]), 2, src_end, 450.0)


def test_symmetrize_methods():
  fwd = {(0, 0), (1, 1), (2, 1), (5, 0)}
  rev = {(0, 0), (1, 1), (1, 2)}
  assert alignment.symmetrize(fwd, rev, "intersection") == {(0, 0), (1, 1)}
  assert alignment.symmetrize(fwd, rev, "union") == fwd | rev
  gd = alignment.symmetrize(fwd, rev, "grow-diag")
  assert gd == {(0, 0), (1, 1), (2, 1), (1, 2)}
  assert alignment.symmetrize(fwd, rev, "grow-diag-final") == gd | {(5, 0)}
  assert alignment.symmetrize(fwd, rev, "grow-diag-final-and") == gd
  with pytest.raises(ValueError, match="unknown"):
    alignment.symmetrize(fwd, rev, "bogus")


def test_diagonal_fallback_when_eflomal_fails(monkeypatch):
  def boom(*a, **k):
    raise RuntimeError("no eflomal binary")
  monkeypatch.setattr(alignment, "run_eflomal", boom)
  src = [["a", "b", "c"], ["x"]]
  tgt = [["1", "2", "3", "4", "5", "6"], ["y", "z"]]
  aligns, stats = alignment.align_corpus(src, tgt)
  assert stats["method"] == "diagonal" and "no eflomal binary" in stats["fallback_reason"]
  assert stats["diagonal_sentences"] == 2
  np.testing.assert_array_equal(aligns[0], [[0, 0], [1, 0], [2, 1], [3, 1], [4, 2], [5, 2]])
  np.testing.assert_array_equal(aligns[1], [[0, 0], [1, 0]])
  r = alignment.ready_times(aligns[0], 6, np.array([10.0, 20.0, 30.0]), 40.0)
  assert np.all(np.diff(r) >= 0) and r[-1] == 30.0
  _, stats = alignment.align_corpus(src, tgt, use_eflomal=False)
  assert stats["fallback_reason"] == "eflomal disabled"
