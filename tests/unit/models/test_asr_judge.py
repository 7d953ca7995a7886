"""The ASR-BLEU judge's pieces on constructed inputs: greedy CTC decoding, the frame
labels made from word times (a valid CTC path of the words), the examples left out and
why, the model's shapes, and the CTC loss of a perfect frame path."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import micro
from liveinterp.models import asr_judge
from liveinterp.train.stages import asr_judge as stage


def _collapse(frames):
  """CTC's many-to-one map: repeats merged, blanks (0) and ignored (-1) frames dropped."""
  out, prev = [], 0
  for k in frames:
    k = max(int(k), 0)
    if k != prev and k:
      out.append(k)
    prev = k
  return out


def test_greedy_words_merges_repeats_drops_blanks_and_stops_at_the_valid_frames():
  vocab = ["a", "b", "c"]
  ids = np.array([0, 1, 1, 0, 1, 2, 2, 0, 3])
  assert asr_judge.greedy_words(ids, 8, vocab) == ["a", "a", "b"]
  assert asr_judge.greedy_words(ids, 9, vocab) == ["a", "a", "b", "c"]
  assert asr_judge.greedy_words(ids, 0, vocab) == []


def _rec(words, starts, ends, n_ms=2000, text=None):
  sr = 16000
  return {"tgt_words": words, "tgt_word_start_ms": np.asarray(starts, np.float32),
          "tgt_word_end_ms": np.asarray(ends, np.float32),
          "tgt_text": text if text is not None else " ".join(words), "tgt_lang": "en",
          "tgt_audio": np.ones(sr * n_ms // 1000, np.int16)}


def _cfg():
  c = micro.get_config("asr_judge")
  c.judge.max_seconds = 2.0
  return c


def _index(*words):
  return {w: k + 1 for k, w in enumerate(sorted(set(words)))}


def test_frame_labels_are_a_ctc_path_of_the_words():
  """Equal neighbours with touching spans get a blank between them; a word shorter
  than a frame still gets one; "25" splits into "twenty five" over its span."""
  index = _index("the", "cat", "twenty", "five", "a")
  rec = _rec(["The", "the", "cat", "a", "25."], [100, 300, 500, 800, 810],
             [300, 500, 800, 810, 1200])
  ex, why = stage.make_example(rec, _cfg(), index)
  assert why is None
  labels = ex["labels"][:ex["label_lengths"]].tolist()
  assert labels == [index[w] for w in ["the", "the", "cat", "a", "twenty", "five"]]
  assert _collapse(ex["frame_labels"]) == labels
  fms = asr_judge.frame_ms(_cfg())
  five = np.flatnonzero(ex["frame_labels"] == index["five"])
  assert (five.min() + 0.5) * fms >= 1005  # the second half of "25."'s span
  # the CTC loss of logits that follow the frame path is ~0 (the labels are reachable)
  t = ex["frame_labels"].size
  logits = 30.0 * jax.nn.one_hot(np.maximum(ex["frame_labels"], 0), 1 + len(index))
  pad = (ex["frame_labels"] < 0).astype(np.float32)
  lab = ex["labels"][None]
  lpad = (np.arange(lab.shape[1]) >= ex["label_lengths"]).astype(np.float32)[None]
  loss = optax.ctc_loss(jnp.asarray(logits)[None], jnp.asarray(pad)[None], lab, lpad)
  assert t > 0 and float(loss[0]) < 1e-3


@pytest.mark.parametrize("rec,index,why", [
    (_rec(["the", "dog"], [0, 300], [300, 600]), _index("the"), "unknown_word"),
    (_rec(["the", "dog"], [0], [300]), _index("the", "dog"), "bad_word_times"),
    (_rec(["the", "dog"], [0, 300], [300, 600], text="the cat"), _index("the", "dog", "cat"),
     "bad_word_times"),
    # 8 words in 100 ms: 2 encoder frames of 40 ms cannot emit them
    (_rec(["a"] * 8, np.arange(8) * 10, np.arange(8) * 10 + 10, n_ms=100), _index("a"),
     "too_fast_for_ctc"),
], ids=["unknown_word", "times_count", "times_vs_text", "too_fast"])
def test_examples_left_out_name_why(rec, index, why):
  assert stage.make_example(rec, _cfg(), index) == (None, why)


def test_scan_counts_what_it_leaves_out_and_caps_the_clips():
  c = _cfg()
  recs = [_rec(["the", "dog"], [0, 300], [300, 600]),
          _rec(["the"], [0], [300], n_ms=3000),            # longer than max_seconds
          _rec([], [], [], text="..."),                     # no words after normalising
          _rec(["a", "cat"], [0, 300], [300, 600])]
  usable, vocab, drops = stage.scan(recs, c)
  assert usable == [0, 3] and vocab == ["a", "cat", "dog", "the"]
  assert dict(drops) == {"too_long": 1, "no_words": 1}
  c.judge.train_examples = 1
  assert stage.scan(recs, c)[0] == [0]
  # make_example's reasons are counted by the scan too (the training data never drops)
  c.judge.train_examples = 0
  bad = recs + [_rec(["the", "dog"], [0], [300])]
  assert stage.scan(bad, c)[2]["bad_word_times"] == 1


def test_model_shapes_and_padding_mask():
  c = micro.get_config("asr_judge")
  model = asr_judge.CTCJudge(c, 7, rngs=nnx.Rngs(0))
  x = np.zeros((2, 16000), np.float32)
  mask = np.arange(16000)[None] < np.array([[16000], [8000]])
  logits, fmask = model(jnp.asarray(x), jnp.asarray(mask))
  assert logits.shape[0] == 2 and logits.shape[2] == 8 and logits.dtype == jnp.float32
  frames = 16000 // (16000 * c.audio.hop_ms // 1000) // 4
  assert abs(logits.shape[1] - frames) <= 1
  assert int(fmask[0].sum()) > int(fmask[1].sum()) > 0
  with pytest.raises(ValueError, match="num_words=0"):
    asr_judge.CTCJudge(c, 0, rngs=nnx.Rngs(0))


def test_no_judge_in_a_directory_is_named(tmp_path):
  assert not asr_judge.trained_for(str(tmp_path), "en")
  with pytest.raises(FileNotFoundError, match="no trained ASR judge"):
    asr_judge.JudgeRecognizer.from_dir(str(tmp_path))
