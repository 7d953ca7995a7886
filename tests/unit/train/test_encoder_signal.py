"""The encoder's own training signal (issue #9): per-frame source-character targets from
the corpus's word times, their pipeline plumbing, and the frame loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import pipelines as pl
from liveinterp.train.stages import stream_lm
from tests.unit.data import test_formats_fixtures as fx


@pytest.fixture(scope="module")
def env():
  return fx.micro_source("train"), fx.micro_tokenizer(), fx.micro_config("pretrain")


def test_char_ids_are_the_single_character_pieces(env):
  _, tok, _ = env
  text = "他住在广州。 She lives in Guangzhou, 2 days."
  ids = tok.char_ids(text)
  chars = [ch for ch in text if ch.isalnum()]
  assert len(ids) == len(chars)
  assert all(tok.is_text(np.asarray([i]))[0] for i in ids)
  known = [(i, ch) for i, ch in zip(ids, chars)
           if tok.decode_text([i]).strip() not in ("", "\u2047")]  # not <unk>
  assert len(known) >= len(chars) // 2
  for i, ch in known:
    assert tok.decode_text([i]).strip() == ch


def test_frame_labels_follow_the_word_times(env):
  _, tok, _ = env
  rec = {"src_words": ["他", "住在", "广州。"],
         "src_word_start_ms": np.asarray([100.0, 300.0, 700.0]),
         "src_word_end_ms": np.asarray([260.0, 620.0, 1100.0])}
  lab = pl.source_frame_labels(rec, tok, 32, 40)
  assert lab.shape == (32,) and lab.dtype == np.int32
  c = dict(zip("他住在广州", tok.char_ids("他住在广州")))
  at = lambda ms: lab[int(ms // 40)]  # noqa: E731  label of the frame holding `ms`
  assert at(20) == 0 and at(250) == 0 and at(660) == 0 and at(1200) == 0  # silences
  assert at(180) == c["他"]
  assert at(380) == c["住"] and at(540) == c["在"]            # a word's span split evenly
  assert at(780) == c["广"] and at(1020) == c["州"]
  assert set(np.unique(lab)) <= {0} | set(c.values())         # punctuation never a target
  # No word times: no target at all (-1), never a silent "all silence".
  assert (pl.source_frame_labels({"src_words": ["他"]}, tok, 8, 40) == -1).all()


def test_pipeline_rows_carry_frame_labels_aligned_with_their_audio(env):
  src, tok, cfg = env
  ds = pl.make_dataset("pretrain", cfg, src, tok, shard=pl.shard_options(0, 1),
                       packing=False, speech_placeholder="zeros", max_audio_slots=96,
                       frame_ms=40, task_weights=dict(asr=1.0, st=0.0, tts=0.0, s2st=0.0))
  b = next(iter(ds))
  per_slot = b["audio"].shape[2] // 640                           # 40 ms frames per slot
  assert b["src_frames"].shape == (b["audio"].shape[0], 96 * per_slot)
  own = np.repeat(b["audio_segment_ids"] > 0, per_slot, axis=1)
  assert (b["src_frames"][~own] == -1).all()                      # past the audio: none
  assert (b["src_frames"][own] >= 0).all()
  assert (b["src_frames"][own] > 0).mean() > 0.3                  # mostly speech
  # Every speech label is a character of the corpus's source transcripts.
  chars = set(tok.char_ids("".join(src[i]["src_text"] for i in range(len(src)))))
  assert set(np.unique(b["src_frames"][own])) - {0} <= chars


def test_frame_loss_is_low_for_the_right_labels_and_ignores_no_target_frames():
  class Head:
    def ctc_logits(self, f):
      return f
  labels = jnp.asarray([[3, 0, 2, -1]])
  good = jnp.asarray(np.eye(5, dtype=np.float32)[[3, 0, 2, 1]][None] * 20.0)
  mask = jnp.asarray([[True, True, True, True]])
  loss, acc = stream_lm.frame_loss(Head(), good, mask, {"src_frames": labels})
  assert float(loss) < 1e-6 and float(acc) == 1.0   # frame 3 (label -1) is ignored
  bad = jnp.roll(good, 1, axis=-1)
  loss_b, acc_b = stream_lm.frame_loss(Head(), bad, mask, {"src_frames": labels})
  assert float(loss_b) > 10 and float(acc_b) == 0.0
  # Frames outside the encoder's mask never count.
  loss_m, _ = stream_lm.frame_loss(Head(), bad, jnp.asarray([[False] * 4]),
                                   {"src_frames": labels})
  assert float(loss_m) == 0.0


def test_tied_frame_loss_scores_each_audio_slot_by_its_last_frame_label():
  class Model:
    def embedding_logits(self, e):
      return e
  labels = jnp.asarray([[9, 3, 9, 0, 9, 2]])          # slots of 2 frames: labels 3, 0, 2
  emb = jnp.asarray(np.eye(5, dtype=np.float32)[[3, 0, 2]][None] * 20.0)
  frames = jnp.zeros((1, 6, 4))
  mask = jnp.ones((1, 6), bool)
  loss, acc = stream_lm.frame_loss(Model(), frames, mask, {"src_frames": labels}, emb)
  assert float(loss) < 1e-6 and float(acc) == 1.0
  loss_b, _ = stream_lm.frame_loss(Model(), frames, mask, {"src_frames": labels},
                                   jnp.roll(emb, 1, axis=1))
  assert float(loss_b) > 10


def test_speech_weight_reweights_speech_targets_and_leaves_lm_loss_plain():
  """`train.speech_weight`: the trained total is the mean cross-entropy with each speech
  target weighted `speech_weight` (text/control 1); lm_loss stays the plain mean."""
  speech_offset, vocab = 6, 10
  tokens = jnp.asarray([[1, 2, 7, 8, 3, 9]])      # targets: 2 text, 7 8 speech, 3 text, 9
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(1, 6, vocab)).astype(np.float32))

  class Model:
    def __call__(self, tokens, audio, slots, **kw):
      return logits, None, jnp.zeros((1, 1, 2)), jnp.ones((1, 1), bool), None

  batch = {"tokens": tokens, "loss_mask": jnp.asarray([[0, 1, 1, 1, 1, 1]]),
           "segment_ids": jnp.ones((1, 6), jnp.int32), "positions": jnp.arange(6)[None],
           "audio_slot_mask": jnp.zeros((1, 6), jnp.int32),
           "audio": jnp.zeros((1, 1, 4), jnp.int16),
           "audio_segment_ids": jnp.zeros((1, 1), jnp.int32)}
  lp = np.asarray(jax.nn.log_softmax(logits[0, :-1]))
  ce = -lp[np.arange(5), np.asarray(tokens[0, 1:])]
  is_speech = np.asarray(tokens[0, 1:]) >= speech_offset
  for w in (1.0, 0.25, 0.0):
    total, aux = stream_lm.loss_fn(Model(), batch, None, speech_offset, speech_weight=w)
    wt = np.where(is_speech, w, 1.0)
    np.testing.assert_allclose(float(total), (ce * wt).sum() / wt.sum(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["lm_loss"]), ce.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["text_loss"]), ce[~is_speech].mean(), rtol=1e-5)
    np.testing.assert_allclose(float(aux["speech_loss"]), ce[is_speech].mean(), rtol=1e-5)
