"""Long talks trained whole (issue #10): a SIMUL stream longer than `seq_len` is cut into
windows at turn boundaries, each with the prompt and preceding context (no loss), which
together hold every turn exactly once as a loss target; short records are unchanged."""

import numpy as np
import pytest

from configs import micro
from data_pipelines import pipelines as pl
from data_pipelines import stream_format as sfmt
from data_pipelines import tokenizer as tokmod
from data_pipelines.tokenizer import Tokenizer
from tests.unit.data import test_formats_fixtures as fx

SR = 16000


@pytest.fixture(scope="module")
def records():
  rng = np.random.default_rng(7)
  talk = fx.make_record(rng, 0, "zh", "en", "talk", talk=True)
  short = fx.make_record(rng, 1, "zh", "en", "train")
  return talk, short


@pytest.fixture(scope="module")
def tok(records):
  texts = [t for r in records for t in (r["src_text"], r["tgt_text"])] * 3
  return Tokenizer.train(texts, None, text_vocab_size=64, num_codebooks=2, codebook_size=16,
                         llm_vocab_size=256)


def spec(**kw):
  base = dict(sample_rate=SR, chunk_ms=320, frame_ms=40, adapter_stack=2, codec_hop=320,
              num_codebooks=2, speech_placeholder="none")
  base.update(kw)
  return sfmt.StreamSpec(**base)


def own_turns(ex):
  """chunk -> ids of the turns that carry loss (every token of an own turn does)."""
  loss = np.asarray(ex["loss_mask"])
  out = {}
  for t, y in sfmt.turns(ex):
    idx = np.nonzero((np.asarray(ex["chunk_index"]) == t)
                     & (np.asarray(ex["audio_slot_mask"]) == 0))[0]
    if loss[idx].all():
      out[t] = y
    else:
      assert not loss[idx].any(), f"turn {t} is partly a target"
  return out


@pytest.mark.parametrize("context", [0, 2, 4])
def test_long_talk_windows_cover_every_turn_once(records, tok, context):
  talk, _ = records
  max_len = 64
  full = sfmt.simul_example(talk, tok, spec())  # no max_len: the whole stream
  n = sfmt.num_chunks(len(talk["src_audio"]), spec())
  assert full["tokens"].size > 2 * max_len  # really a long talk
  wins = sfmt.simul_windows(talk, tok, spec(max_len=max_len), context_chunks=context)
  assert len(wins) >= 2
  prompt = sfmt.simul_prompt_ids(tok, "zh", "en")
  full_turns = dict(sfmt.turns(full))
  seen = []
  for i, w in enumerate(wins):
    ex = w.example
    L = ex["tokens"].size
    assert L <= max_len
    assert ex["tokens"][:len(prompt)].tolist() == prompt
    assert not ex["loss_mask"][:len(prompt)].any()
    assert ex["positions"].tolist() == list(range(L))
    # context: the chunks just before the own ones, loss 0 on every token
    assert w.first == max(0, w.own - context) or w.first > max(0, w.own - context)
    ctx = (ex["chunk_index"] >= 0) & (ex["chunk_index"] < w.own)
    assert not ex["loss_mask"][ctx].any()
    assert set(ex["chunk_index"][ctx].tolist()) == set(range(w.first, w.own))
    owned = own_turns(ex)
    assert sorted(owned) == list(range(w.own, w.end))
    for t, y in owned.items():  # the same turn as in the whole stream
      np.testing.assert_array_equal(y, full_turns[t])
    seen += sorted(owned)
    # windows follow each other; only the last one ends the stream
    assert w.own == (wins[i - 1].end if i else 0)
    assert (ex["tokens"][-1] == tokmod.EOS) == (i == len(wins) - 1)
    if i == len(wins) - 1:
      assert ex["loss_mask"][-1] == 1
    # the audio rows are the chunks it covers, cut from the source at its first chunk
    spc = spec().slots_per_chunk
    assert ex["audio"].shape[0] == (w.end - w.first) * spc
    assert int(ex["audio_slot_mask"].sum()) == ex["audio"].shape[0]
    np.testing.assert_array_equal(ex["audio"], full["audio"][w.first * spc:w.end * spc])
    assert w.whole == (len(wins) == 1)
  assert seen == list(range(n))  # every turn a loss target in exactly one window
  if context:
    assert any(w.own - w.first == min(context, w.own) > 0 for w in wins)
  else:
    assert all(w.first == w.own for w in wins)


def test_short_record_is_exactly_todays_single_example(records, tok):
  _, short = records
  sp = spec(max_len=256)
  today = sfmt.simul_example(short, tok, sp)
  assert today["tokens"][-1] == tokmod.EOS  # it fits whole
  wins = sfmt.simul_windows(short, tok, sp, context_chunks=4)
  assert len(wins) == 1 and wins[0].whole
  assert set(wins[0].example) == set(today)
  for k, v in today.items():
    np.testing.assert_array_equal(wins[0].example[k], v, err_msg=k)
    assert np.asarray(wins[0].example[k]).dtype == np.asarray(v).dtype


def test_window_bounds_rule():
  # prompt 4, blocks of 10 tokens, max_len 40: 3 blocks fit after the prompt (34), with
  # <eos> at the end; context 1 leaves room for 2 own blocks
  assert sfmt.window_bounds(4, [10] * 5, 40, 0) == [(0, 0, 3), (3, 3, 5)]
  assert sfmt.window_bounds(4, [10] * 5, 40, 1) == [(0, 0, 3), (2, 3, 5)]
  # context shrinks when it would leave no room for the first own turn
  assert sfmt.window_bounds(4, [10, 10, 25, 10], 40, 2) == [(0, 0, 2), (1, 2, 3),
                                                              (2, 3, 4)]
  with pytest.raises(ValueError, match="turn 2 .* does not fit max_len=40"):
    sfmt.window_bounds(4, [10, 10, 40], 40, 2)


def test_a_turn_longer_than_seq_len_is_a_format_error(records, tok):
  talk, _ = records
  with pytest.raises(sfmt.FormatError, match=talk["id"]) as err:
    sfmt.simul_windows(talk, tok, spec(max_len=8))  # prompt 4 + 4 slots + <eot> > 8
  assert err.value.reason == "first_turn_too_long"  # as simul_example (build counts it)
  # a later turn that cannot fit: hundreds of words ready at the end of the talk
  long_end = dict(talk, tgt_words=list(talk["tgt_words"]) * 20)
  long_end["tgt_ready_ms"] = np.concatenate(
      [talk["tgt_ready_ms"], np.full((len(long_end["tgt_words"]) - len(talk["tgt_words"]),),
                                     talk["tgt_ready_ms"][-1], np.float32)])
  for k in ("tgt_word_start_ms", "tgt_word_end_ms"):  # one time per word (a valid record)
    long_end[k] = np.tile(talk[k], 20)
  with pytest.raises(sfmt.FormatError, match="does not fit max_len=64") as err:
    sfmt.simul_windows(long_end, tok, spec(max_len=64))
  assert err.value.reason == "turn_too_long"


def test_pipeline_yields_every_window_and_no_partial_ctc_target(records, tok):
  talk, short = records
  cfg = micro.get_config("sft")
  cfg.data.seq_len = 96
  sp = sfmt.StreamSpec.from_config(cfg)
  n_win = len(sfmt.simul_windows(talk, tok, sp, context_chunks=4))
  assert n_win >= 2
  drops = pl.DropCounts()
  ds = pl.stream_dataset([talk, short], cfg, tok, "sft", batch_size=1, num_epochs=1,
                         shuffle=False, packing=False, max_audio_slots=96,
                         max_src_tokens=64, shard=pl.shard_options(0, 1),
                         context_chunks=4, drops=drops, read_threads=1)
  rows = [{k: v[0] for k, v in b.items()} for b in ds]
  assert len(rows) == n_win + 1 and not drops
  src_len = [int(r["src_len"]) for r in rows]
  assert src_len[:n_win] == [0] * n_win  # a window never has the whole source
  assert src_len[n_win] == len(tok.encode_text(short["src_text"])) > 0
  today = sfmt.simul_example(short, tok, sp)
  L = today["tokens"].size
  np.testing.assert_array_equal(rows[n_win]["tokens"][:L], today["tokens"])
  np.testing.assert_array_equal(rows[n_win]["loss_mask"][:L], today["loss_mask"])


@pytest.mark.parametrize("bad", [-1, -8])  # ml_collections refuses non-ints itself
def test_bad_window_context_chunks_is_named(bad):
  cfg = micro.get_config("sft")
  cfg.data.window_context_chunks = bad
  with pytest.raises(ValueError, match=r"data\.window_context_chunks=.*integer >= 0"):
    pl.window_context_chunks(cfg)


def test_window_frame_labels_are_the_sources_at_its_chunks(records, tok):
  """The per-frame source labels (frame loss) of a window are those of its stretch of the
  source, not of the talk's beginning."""
  talk, _ = records
  sp = spec(max_len=64)
  t = pl.StreamTransform(tok, sp, "sft", frame_ms=40, context_chunks=2)
  exs = t.random_map(talk, np.random.default_rng(0))
  wins = sfmt.simul_windows(talk, tok, sp, context_chunks=2)
  assert len(exs) == len(wins) >= 2
  per_chunk = sp.chunk_ms // 40
  full = pl.source_frame_labels(talk, tok, wins[-1].end * per_chunk, 40)
  assert (full > 0).any()
  for ex, w in zip(exs, wins):
    np.testing.assert_array_equal(ex["src_frames"],
                                  full[w.first * per_chunk:w.end * per_chunk])
    assert ex["src_ids"].size == 0


def test_the_build_counts_the_drops_the_windowed_pipeline_makes(records, tok):
  """`build.compute_length_stats` counts SFT drops with `simul_windows`, as the pipeline
  formats them: a long talk that fits as windows is kept, one whose later turn cannot fit
  any window is dropped as turn_too_long (simul_example alone would call both too long)."""
  from data_pipelines import build
  talk, short = records
  cfg = micro.get_config("sft")
  cfg.data.seq_len = 96
  cfg.codec.num_codebooks, cfg.codec.codebook_size = 2, 16  # the fixture tokenizer's
  sp = sfmt.StreamSpec.from_config(cfg)
  assert len(sfmt.simul_windows(talk, tok, sp, context_chunks=4)) >= 2
  words = list(talk["tgt_words"])
  words[-1] = " ".join([words[-1]] * 120)  # the last turn's text alone exceeds seq_len
  long_end = dict(talk, id="talk-long-end", tgt_words=words)
  drops = build.compute_length_stats([talk, short, long_end], tok, cfg)["sft_drops"]
  d = drops["without_speech"]  # (with speech, micro's codec turns are > 96 tokens)
  assert d["records"] == 3 and d["dropped"] == 1
  assert d["reasons"] == {"turn_too_long": 1}
  assert "talk-long-end" in d["first"]["turn_too_long"]
