"""Length buckets of the speech-token encoder (liveinterp/train/speech_tokens._bucket)."""

from liveinterp.train import speech_tokens

HOP = 320


def _frames(n_frames: int) -> int:
  return speech_tokens._bucket(n_frames * HOP - 7, HOP) // HOP  # pylint: disable=protected-access


def test_buckets_hold_the_utterance_with_little_padding_and_few_shapes():
  sizes = range(1, 4097)
  padded = [_frames(n) for n in sizes]
  for n, p in zip(sizes, padded):
    assert p >= n  # the whole utterance fits
    if n <= 256:
      assert p % 32 == 0 and p - n < 32  # multiples of 32 frames
    else:
      assert p / n <= 1.25, (n, p)  # 4 lengths per octave
  assert padded == sorted(padded)
  # Shapes (= encoder compiles): 8 up to 256 frames, then 4 per octave.
  assert len(set(padded)) == 8 + 4 * 4
  assert _frames(100) == 128 and _frames(257) == 320 and _frames(513) == 640
