"""Stream format: turn grammar, ready words written by the right chunk, wait-k, loss and
audio-slot masks, pretraining tasks, truncation."""

import numpy as np
import pytest

from data_pipelines import stream_format as sfmt
from data_pipelines import tokenizer as tokmod
from data_pipelines.tokenizer import Tokenizer
from tests.unit.data import test_formats_fixtures as fx

WORDS = ["alpha", "beta", "gamma", "delta", "omega"]
CHUNK = 320  # micro chunk_ms: 4 slots of 80 ms
SR = 16000


@pytest.fixture(scope="module")
def tok():
  texts = [" ".join(WORDS)] * 5 + [" ".join(reversed(WORDS))] * 5 + ["uno dos tres"] * 3
  return Tokenizer.train(texts, None, text_vocab_size=64, num_codebooks=2, codebook_size=16,
                         llm_vocab_size=256)


def spec(**kw):
  base = dict(sample_rate=SR, chunk_ms=CHUNK, frame_ms=40, adapter_stack=2, codec_hop=320,
              num_codebooks=2)
  base.update(kw)
  return sfmt.StreamSpec(**base)


def hand_record(ready=(100.0, 700.0, 960.0, 1500.0), src_ms=2000.0):
  """4 target words with known ready times; 3 source words; 2 s of source audio."""
  n_src = int(src_ms * SR / 1000)
  src = (np.arange(n_src) % 200 - 100).astype(np.int16)
  tgt_starts = np.array([0.0, 300.0, 600.0, 900.0], np.float32)
  return dict(
      id="hand-1", source="test", speaker="s0", src_lang="es", tgt_lang="en",
      src_text="uno dos tres", tgt_text="alpha beta gamma delta", src_audio=src,
      tgt_audio=np.ones((int(1.2 * SR),), np.int16), src_words=["uno", "dos", "tres"],
      src_word_start_ms=np.array([50, 500, 1200], np.float32),
      src_word_end_ms=np.array([400, 900, 1700], np.float32),
      tgt_words=WORDS[:4], tgt_word_start_ms=tgt_starts, tgt_word_end_ms=tgt_starts + 250,
      tgt_ready_ms=np.asarray(ready, np.float32), alignment=np.zeros((0, 2), np.int32),
      is_talk=False)


def written_words(ex, tok):
  """chunk -> target text written in that turn."""
  out = {}
  for t, y in sfmt.turns(ex):
    out[t] = tok.decode_text(y)
  return out


def test_ready_words_are_written_by_the_right_chunk(tok):
  rec = hand_record()
  codes = np.stack([np.arange(60) % 16, (np.arange(60) * 3) % 16], 1)  # 60 frames = 1.2 s
  ex = sfmt.simul_example(rec, tok, spec(), tgt_codes=codes)
  n_chunks = 7  # ceil(2000 / 320)
  got = written_words(ex, tok)
  assert sorted(got) == list(range(n_chunks))
  # ready 100 -> chunk 0 (ends 320); 700 and 960 -> chunk 2 (ends at 960: a word ready
  # exactly at a chunk end is written by that chunk); 1500 -> chunk 4 (ends 1600)
  assert got == {0: "alpha", 1: "", 2: "beta gamma", 3: "", 4: "delta", 5: "", 6: ""}
  # Speech: each word owns the codec frames from its start to the next word's start
  # (50 Hz): alpha 0-15, beta+gamma 15-45, delta 45-60; the turns together hold every
  # frame, in order.
  speech = {t: y[np.asarray(tok.is_speech(y))] for t, y in sfmt.turns(ex)}
  assert [len(speech[t]) // 2 for t in (0, 2, 4)] == [15, 30, 15]
  np.testing.assert_array_equal(
      tok.speech_codes(np.concatenate([speech[t] for t in range(n_chunks)])), codes)
  for t, y in sfmt.turns(ex):
    assert sfmt.check_turn(y, tok) is None, (t, tok.describe(y))
    if t in (1, 3, 5, 6):
      assert y.tolist() == [tokmod.EOT]


def test_loss_and_audio_slot_masks(tok):
  rec = hand_record()
  sp = spec(speech_placeholder="zeros")
  ex = sfmt.simul_example(rec, tok, sp)
  toks, loss, slot, chunk = (ex[k] for k in ("tokens", "loss_mask", "audio_slot_mask",
                                               "chunk_index"))
  assert all(ex[k].dtype == np.int32 for k in sfmt.TOKEN_FIELDS)
  assert toks[:4].tolist() == [tokmod.BOS, tok.task_id("simul"), tok.lang_id("es"),
                               tok.lang_id("en")]
  assert loss[:4].sum() == 0 and np.all(chunk[:4] == -1)
  assert slot.sum() == 7 * 4 and np.all(toks[slot == 1] == tokmod.AUDIO)
  assert np.all(loss[slot == 1] == 0)
  # Everything after the prompt that is not an audio slot is a turn token (or <eos>).
  assert np.all(loss[4:][slot[4:] == 0] == 1) and toks[-1] == tokmod.EOS
  # Slots of chunk t come before the turn of chunk t; chunk index never decreases.
  assert np.all(np.diff(chunk[4:]) >= 0)
  for t in range(7):
    assert np.all(slot[chunk == t][:4] == 1) and slot[chunk == t].sum() == 4
  # Audio: one row per slot of 80 ms = 1280 samples; the source padded to whole slots.
  assert ex["audio"].dtype == np.int16 and ex["audio"].shape == (28, 1280)
  flat = ex["audio"].reshape(-1)
  np.testing.assert_array_equal(flat[:rec["src_audio"].size], rec["src_audio"])
  assert not flat[rec["src_audio"].size:].any()
  np.testing.assert_array_equal(ex["positions"], np.arange(toks.size))
  assert np.all(ex["segment_ids"] == 1)


def test_wait_k_policy(tok):
  rec = hand_record()
  # src words end at 400, 900, 1700 ms. wait-1: tgt word j ready when src word j ended.
  np.testing.assert_array_equal(sfmt.ready_times(rec, "wait_k", 1), [400, 900, 1700, 1700])
  np.testing.assert_array_equal(sfmt.ready_times(rec, "wait_k", 2), [900, 1700, 1700, 1700])
  ex = sfmt.simul_example(rec, tok, spec(), policy="wait_k", k=1)
  # 400 -> chunk 1 (ends 640), 900 -> chunk 2 (960), 1700 -> chunk 5 (1920)
  assert written_words(ex, tok) == {0: "", 1: "alpha", 2: "beta", 3: "", 4: "",
                                    5: "gamma delta", 6: ""}
  ex = sfmt.simul_example(rec, tok, spec(), policy="wait_k", k=3)
  assert written_words(ex, tok)[5] == "alpha beta gamma delta"
  with pytest.raises(ValueError, match="k >= 1"):
    sfmt.wait_k_ready_ms(np.array([1.0]), 2, 0)


def test_turn_grammar_checker(tok):
  s = tok.speech_token_id(0, 1), tok.speech_token_id(1, 2)
  w = tok.encode_text("alpha")
  ok = [[tokmod.EOT], [tokmod.TEXT, *w, tokmod.SPEECH, *s, tokmod.EOT],
        [tokmod.SRC, *tok.encode_text("uno"), tokmod.EOT]]
  for y in ok:
    assert sfmt.check_turn(y, tok) is None
  assert sfmt.check_turn([tokmod.TEXT, *w, tokmod.EOT], tok, speech=False) is None
  bad = {"does not end with <eot>": [tokmod.TEXT, *w],
         "<text> without words": [tokmod.TEXT, tokmod.SPEECH, *s, tokmod.EOT],
         "not followed by <speech>": [tokmod.TEXT, *w, tokmod.EOT],
         "without speech tokens": [tokmod.TEXT, *w, tokmod.SPEECH, tokmod.EOT],
         "whole frames": [tokmod.TEXT, *w, tokmod.SPEECH, s[0], tokmod.EOT],
         "non-speech token": [tokmod.TEXT, *w, tokmod.SPEECH, *s, w[0], tokmod.EOT],
         "expected <text>": [tokmod.SPEECH, *s, tokmod.EOT]}
  for why, y in bad.items():
    assert why in (sfmt.check_turn(y, tok) or ""), why


def test_real_micro_records_follow_the_grammar():
  tok = fx.micro_tokenizer()
  cfg = fx.micro_config()
  src = fx.micro_source("train")
  for placeholder, speech in (("zeros", True), ("none", False)):
    sp = sfmt.StreamSpec.from_config(cfg, speech_placeholder=placeholder, max_len=None)
    for i in range(len(src)):
      rec = src[i]
      ex = sfmt.simul_example(rec, tok, sp)
      ts = sfmt.turns(ex)
      n_chunks = sfmt.num_chunks(len(rec["src_audio"]), sp)
      assert [t for t, _ in ts] == list(range(n_chunks))
      for t, y in ts:
        assert sfmt.check_turn(y, tok, speech=speech) is None, (rec["id"], t)
      # every target word is written exactly once: the turns' text is the whole target
      written = "".join(tok.decode_text(y) for _, y in ts).replace(" ", "")
      assert written == sfmt.join_words(rec["tgt_words"], "en").replace(" ", "")


def test_truncation_keeps_whole_turns(tok):
  rec = hand_record()
  full = sfmt.simul_example(rec, tok, spec(speech_placeholder="zeros"))
  cut = sfmt.simul_example(rec, tok, spec(speech_placeholder="zeros", max_len=60))
  assert cut["tokens"].size <= 60 and cut["tokens"][-1] == tokmod.EOT
  np.testing.assert_array_equal(cut["tokens"], full["tokens"][:cut["tokens"].size])
  kept = len(sfmt.turns(cut))
  assert 0 < kept < 7 and cut["audio"].shape == (kept * 4, 1280)
  with pytest.raises(sfmt.FormatError, match="hand-1.*do not fit"):
    sfmt.simul_example(rec, tok, spec(speech_placeholder="zeros", max_len=8))


def test_src_transcript_turns(tok):
  ex = sfmt.simul_example(hand_record(), tok, spec(src_transcript=True))
  ts = dict(sfmt.turns(ex))
  # src words end at 400 (chunk 1), 900 (chunk 2), 1700 (chunk 5)
  assert ts[1][0] == tokmod.SRC and tok.decode_text(ts[1]) == "uno"
  assert tok.decode_text(ts[5]).startswith("tres")
  assert all(sfmt.check_turn(y, tok, speech=False) is None for y in ts.values())


def test_pretraining_tasks(tok):
  rec = hand_record()
  codes = np.stack([np.arange(60) % 16, np.arange(60) % 7], 1)
  sp = spec()
  asr = sfmt.pretrain_example(rec, tok, sp, "asr")
  n_slots = 25  # ceil(2000 / 80)
  assert asr["audio_slot_mask"].sum() == n_slots and asr["audio"].shape == (n_slots, 1280)
  assert tok.decode_text(asr["tokens"]) == "uno dos tres"
  out = asr["loss_mask"] == 1
  assert asr["tokens"][out][0] == tokmod.TEXT and asr["tokens"][out][-1] == tokmod.EOS
  assert not np.any(asr["audio_slot_mask"][out])
  st = sfmt.pretrain_example(rec, tok, sp, "st")
  assert tok.decode_text(st["tokens"]) == "alpha beta gamma delta"
  assert st["tokens"][:4].tolist() == [tokmod.BOS, tok.task_id("st"), tok.lang_id("es"),
                                       tok.lang_id("en")]
  tts = sfmt.pretrain_example(rec, tok, sp, "tts", tgt_codes=codes)
  assert tts["audio"].shape == (0, 1280) and tts["audio_slot_mask"].sum() == 0
  lossy = tts["tokens"][tts["loss_mask"] == 1]
  assert lossy[0] == tokmod.SPEECH and lossy[-1] == tokmod.EOS
  np.testing.assert_array_equal(tok.speech_codes(lossy[1:-1]), codes)
  assert tok.decode_text(tts["tokens"][tts["loss_mask"] == 0]) == "alpha beta gamma delta"
  s2st = sfmt.pretrain_example(rec, tok, sp, "s2st", tgt_codes=codes)
  body = s2st["tokens"][s2st["loss_mask"] == 1]
  assert body[0] == tokmod.TEXT and tokmod.SPEECH in body.tolist()
  with pytest.raises(sfmt.FormatError, match="hand-1: task tts needs target speech"):
    sfmt.pretrain_example(rec, tok, sp, "tts")
  with pytest.raises(sfmt.FormatError, match="max_len=20"):
    sfmt.pretrain_example(rec, tok, spec(max_len=20), "asr")


def test_untimed_record_is_rejected_for_simul(tok):
  rec = hand_record()
  rec["tgt_ready_ms"] = np.full((4,), -1.0, np.float32)
  with pytest.raises(sfmt.FormatError, match="hand-1: target words have no ready times"):
    sfmt.simul_example(rec, tok, spec())


_TGT_STARTS = np.array([0.0, 300.0, 600.0, 900.0], np.float32)
MALFORMED = {  # field -> a bad value (hand_record: 3 source, 4 target words; 2 s / 1.2 s)
    "tgt_word_start_ms": _TGT_STARTS[:2],           # fewer times than words
    "src_word_end_ms": np.array([400.0, 900.0, 1700.0, 1800.0], np.float32),  # more
    "src_words": ["uno"],                          # words vs their times
    "tgt_words": [],                               # an empty word list
    "tgt_ready_ms": np.array([100.0, 700.0, 960.0, 2500.0], np.float32),  # after src end
    "tgt_word_end_ms": _TGT_STARTS + np.array([250, 250, 250, np.nan], np.float32),
}


@pytest.mark.parametrize("field", sorted(MALFORMED))
@pytest.mark.parametrize("policy", ["alignment", "wait_k"])
def test_malformed_record_is_a_counted_format_error(tok, field, policy):
  """Inconsistent word arrays: a FormatError naming the record and the field (reason
  malformed_record, which the pipelines and the build count), never an IndexError."""
  from data_pipelines import build
  rec = hand_record()
  rec[field] = MALFORMED[field]
  codes = np.zeros((60, 2), np.int32)
  for sp in (spec(), spec(src_transcript=True, max_len=40)):
    with pytest.raises(sfmt.FormatError, match=rf"record hand-1: .*\b{field}\b") as e:
      sfmt.simul_windows(rec, tok, sp, tgt_codes=codes, policy=policy)
    assert e.value.reason == "malformed_record"
  if rec["tgt_words"]:  # the build's speech-per-token stats: the same error
    with pytest.raises(sfmt.FormatError, match=rf"hand-1: .*\b{field}\b"):
      build.turn_speech_ms_per_token(rec, tok, spec(speech_placeholder="zeros"),
                                     policy=policy)
