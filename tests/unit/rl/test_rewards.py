"""RL rewards (liveinterp/rl/rewards.py, DESIGN §4) on constructed turn sequences with
hand-computed values.

Default set-up: Δ = 500 ms, 4 turns (chunk ends T = 500, 1000, 1500, 2000), source
|X| = 1800 ms with words ending at 300, 1200, 1400; reference "we see people" ready at
300, 1200, 1400.
"""

import dataclasses

import ml_collections
import numpy as np
import pytest

from liveinterp.eval import latency
from liveinterp.eval import quality
from liveinterp.rl import rewards as R

DELTA = 500.0


def ref_en(**kw):
  d = dict(src_word_end_ms=[300.0, 1200.0, 1400.0], tgt_words=["we", "see", "people"],
           tgt_ready_ms=[300.0, 1200.0, 1400.0], tgt_text="we see people")
  d.update(kw)
  return R.Reference(**d)


def episode(text, *, speech_ms=None, n_text_tokens=None, well_formed=None, lang="en",
            source_ms=1800.0, chunk_ms=DELTA):
  n = len(text)
  if n_text_tokens is None:
    n_text_tokens = [len(t.split()) if lang == "en" else len(t) for t in text]
  if speech_ms is None:
    speech_ms = [0.0] * n
  if well_formed is None:
    well_formed = [True] * n
  return R.Episode(chunk_ms=chunk_ms, source_ms=source_ms, text=list(text),
                   speech_ms=np.asarray(speech_ms, np.float64),
                   n_text_tokens=np.asarray(n_text_tokens), well_formed=np.asarray(well_formed),
                   emit_ms=(np.arange(n) + 1.0) * chunk_ms, tgt_lang=lang)


def chrf(h, r):
  return quality.sentence_chrf(h, r) / 100.0


RC = R.RewardConfig()


# ---- detection -------------------------------------------------------------------------

def test_det_waiting_through_silence_and_writing_on_new_words():
  ep = episode(["we", "", " see people", ""])
  # turn 0 writes after word@300 (new: 0); turn 1 waits on (500, 1000]: silence (+1);
  # turn 2 writes after words@1200,1400 (0); turn 3 waits on (1500, 2000]: silence (+1).
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["det"], [0, 1, 0, 1])


def test_det_writing_on_silence():
  ep = episode(["we", " see", "", " people"])
  # turn 1 writes though nothing ended in (500, 1000] -> -1; turn 2 waits on
  # (1000, 1500] where two words ended -> 0; turn 3 writes: "since the last write" is
  # since T=1000, words ended in (1000, 2000] -> 0.
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["det"], [0, -1, 0, 0])


def test_det_since_the_last_write_not_the_last_turn():
  # words end at 300 only. Turn 0 waits (new word: 0), turn 1 writes: the interval since
  # the last write (none: since 0) holds word@300 -> 0, turn 2 writes again: -1.
  ref = ref_en(src_word_end_ms=[300.0])
  ep = episode(["", "we", " see"])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref, RC)["det"], [0, 0, -1])
  # a word ending exactly at a chunk end belongs to that chunk: (L, T] is closed at T.
  ref = ref_en(src_word_end_ms=[500.0])
  np.testing.assert_array_equal(R.turn_rewards(episode(["we"]), ref, RC)["det"], [0])
  np.testing.assert_array_equal(R.turn_rewards(episode([""]), ref, RC)["det"], [0])


# ---- initiative ------------------------------------------------------------------------

def test_init_penalises_ready_unwritten_content():
  ep = episode(["", "", "we see people", ""])
  # R = [1, 1, 3, 3], E = [0, 0, 3, 3] -> -(R - E)+ / 3
  np.testing.assert_allclose(R.turn_rewards(ep, ref_en(), RC)["init"],
                             [-1 / 3, -1 / 3, 0, 0])
  ep = episode(["we", "", " see people", ""])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["init"], [0, 0, 0, 0])


def test_hypothesis_longer_than_reference():
  ep = episode(["we see people and many more words"])
  rw = R.turn_rewards(ep, ref_en(), RC)
  assert rw["init"][0] == 0.0
  # m = min(max(R=1, E=7), |ref|=3) = 3: scored against the whole reference.
  assert rw["qual"][0] == pytest.approx(chrf("we see people and many more words",
                                             "we see people"))
  assert rw["qual"][0] < chrf("we", "we")


def test_zh_target_counts_characters():
  assert R.target_word_count("我们很好。", "zh") == 4
  assert R.target_word_count("我们 很好, 「是」", "zh-CN") == 5
  assert R.target_word_count("私は、学生です。", "ja") == 6
  assert R.target_word_count("we see, people!", "en") == 3
  ref = R.Reference(src_word_end_ms=[300.0, 900.0], tgt_words=["我们", "很好。"],
                    tgt_ready_ms=[300.0, 900.0], tgt_text="我们很好。")
  ep = episode(["我", "们很", "好。"], lang="zh", source_ms=1200.0)
  # units: 2 + 2 characters, |ref| = 4; R = [2, 4, 4], E = [1, 3, 4].
  rw = R.turn_rewards(ep, ref, RC)
  np.testing.assert_allclose(rw["init"], [-0.25, -0.25, 0.0])
  # m = [2, 4, 4]: prefixes "我们", then the whole reference.
  q0 = chrf("我", "我们")
  q1 = chrf("我们很", "我们很好。")
  q2 = chrf("我们很好。", "我们很好。")
  np.testing.assert_allclose(rw["qual"], [q0, q1 - q0, q2 - q1])
  # one delay per character: 1 at 500, 2 at 1000, 1 at 1500 (capped at |X|=1200)
  np.testing.assert_array_equal(R.hypothesis_delays(ep), [500, 1000, 1000, 1500])
  lat = latency.score([500, 1000, 1000, 1500], 1200.0, reference_len=4)
  assert R.episode_rewards(ep, ref, RC)["laal_ms"] == pytest.approx(lat.LAAL)


# ---- quality ---------------------------------------------------------------------------

def test_qual_prefix_gains_hand_computed():
  ep = episode(["we", "", " see people", ""])
  # m = [1, 1, 3, 3]: Q("we", "we"), unchanged, Q(full, full) = 1, unchanged.
  q0 = chrf("we", "we")
  np.testing.assert_allclose(R.turn_rewards(ep, ref_en(), RC)["qual"],
                             [q0, 0.0, 1.0 - q0, 0.0])


def test_qual_gains_telescope_to_final_quality():
  ep = episode(["we", " look", " at persons", ""])
  got = R.turn_rewards(ep, ref_en(), RC)["qual"]
  final = "we look at persons"
  assert got.sum() == pytest.approx(chrf(final, "we see people"))
  # m = [1, 2, 3, 3] (E = [1, 2, 4, 4], R = [1, 1, 3, 3]); the last turn waits with
  # nothing new and gains exactly 0.
  assert got[-1] == 0.0
  rc = dataclasses.replace(RC, quality_metric="bleu")
  got_b = R.turn_rewards(ep, ref_en(), rc)["qual"]
  assert got_b.sum() == pytest.approx(quality.sentence_bleu(final, "we see people") / 100)


def test_empty_hypothesis():
  ep = episode(["", "", "", ""])
  rw = R.turn_rewards(ep, ref_en(), RC)
  np.testing.assert_array_equal(rw["qual"], 0.0)
  epi = R.episode_rewards(ep, ref_en(), RC)
  assert epi["lag"] == -1.0 and epi["seq"] == 0.0 and epi["laal_ms"] == 1800.0
  epi = R.episode_rewards(ep, ref_en(), dataclasses.replace(RC, lag_metric="al",
                                                             seq_metric="bleu"))
  assert epi["lag"] == -1.0 and epi["seq"] == 0.0


# ---- time ------------------------------------------------------------------------------

def test_time_backlog_accumulates_and_is_clipped():
  ep = episode(["we", " see", " people", ""], speech_ms=[900, 900, 900, 0])
  # ends: 1400, 2300, 3200, 3200 vs T_{t+1} = 1000, 1500, 2000, 2500
  # backlog 400, 800, 1200, 700 (the last, a wait turn, still carries the backlog)
  np.testing.assert_allclose(R.turn_rewards(ep, ref_en(), RC)["time"],
                             [-0.8, -1.6, -2.4, -1.4])
  rc = dataclasses.replace(RC, max_backlog_ms=1000.0)
  np.testing.assert_allclose(R.turn_rewards(ep, ref_en(), rc)["time"],
                             [-0.8, -1.6, -2.0, -1.4])


def test_time_segments_start_no_earlier_than_written():
  ep = episode(["we", "", " see people", ""], speech_ms=[1200, 0, 800, 0])
  # ends: 1700, 1700, 2500, 2500; backlog 700, 200, 500, 0
  np.testing.assert_allclose(R.turn_rewards(ep, ref_en(), RC)["time"],
                             [-1.4, -0.4, -1.0, 0.0])
  ep = episode(["we", "", " see people", ""], speech_ms=[300, 0, 400, 0])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["time"], 0.0)


# time_credit="increment" (issue #13): the backlog a turn's own speech adds, at that turn

INC = dataclasses.replace(RC, time_credit="increment")


def times(ep, rc):
  return R.turn_rewards(ep, ref_en(), rc)["time"]


def test_time_increment_wait_under_backlog_gets_zero():
  ep = episode(["we", "", "", ""], speech_ms=[1800, 0, 0, 0])
  # end 2300 vs T_{t+1} = 1000, 1500, 2000, 2500: backlog 1300, 800, 300, 0
  np.testing.assert_allclose(times(ep, RC), [-2.6, -1.6, -0.6, 0.0])
  np.testing.assert_array_equal(times(ep, INC), [-2.6, 0.0, 0.0, 0.0])


def test_time_increment_first_speaking_turn_equals_backlog():
  ep = episode(["", "we", "", ""], speech_ms=[0, 900, 0, 0])
  # turn 1: 1000 + 900 = 1900 vs T_2 = 1500 -> 400; turn 2: 1900 < 2000
  np.testing.assert_allclose(times(ep, RC), [0.0, -0.8, 0.0, 0.0])
  np.testing.assert_allclose(times(ep, INC), times(ep, RC))


def test_time_increment_back_to_back_speaking_turns():
  ep = episode(["we", " see", " people", ""], speech_ms=[900, 900, 900, 0])
  # b = 400, 800, 1200, 700 (test above); b_t − max(b_{t−1} − Δ, 0):
  # 400, 800 − 0, 1200 − 300, 700 − 700
  np.testing.assert_allclose(times(ep, INC), [-0.8, -1.6, -1.8, 0.0])
  b = R.speech_backlog_ms(ep, 1e9)
  want = b - np.maximum(np.concatenate([[0.0], b[:-1]]) - DELTA, 0.0)
  np.testing.assert_allclose(R.backlog_increment_ms(ep, 1e9), want)


def test_time_increment_one_long_turn_and_max_clip():
  ep = episode(["we see people", "", "", ""], speech_ms=[5000, 0, 0, 0])
  # end 5500: unclipped backlog 4500, 4000, 3500, 3000, clipped at 2000 ms = 4 Δ
  np.testing.assert_allclose(times(ep, RC), [-4.0] * 4)
  np.testing.assert_allclose(times(ep, INC), [-4.0, 0.0, 0.0, 0.0])
  rc = dataclasses.replace(INC, max_backlog_ms=1000.0)
  np.testing.assert_allclose(times(ep, rc), [-2.0, 0.0, 0.0, 0.0])
  # a second turn adding 300 ms under the clipped backlog still pays its 300 ms
  ep = episode(["we see", " people", "", ""], speech_ms=[5000, 300, 0, 0])
  np.testing.assert_allclose(times(ep, INC), [-4.0, -0.6, 0.0, 0.0])


def test_time_increment_emit_after_chunk_end():
  # computation-aware timing: turn 1 is emitted at 1300 (after its chunk end 1000, before
  # T_2 = 1500), the wait turn 2 at 2600 and turn 3 at 2700 (after T_3 = 2000, T_4 = 2500)
  ep = dataclasses.replace(
      episode(["we", " see", "", " people"], speech_ms=[800, 600, 0, 300]),
      emit_ms=np.asarray([500.0, 1300.0, 2600.0, 2700.0]))
  # segments [500, 1300], [1300, 1900], -, [2700, 3000]; backlog 300, 400, 600, 500
  np.testing.assert_allclose(times(ep, RC), [-0.6, -0.8, -1.2, -1.0])
  inc = times(ep, INC)
  assert np.all(inc <= 0.0)
  # turn 1: b_t − max(b_{t−1} − Δ, 0) = 400 (emit <= T_2); the wait turn: 0 (its late
  # emission is no speech of its own); turn 3: its 300 ms, not the 200 ms of lateness
  # already there at its start
  np.testing.assert_allclose(inc, [-0.6, -0.8, 0.0, -0.6])


def test_time_reward_bad_credit():
  with pytest.raises(ValueError, match="credit"):
    R.time_reward(episode(["we"]), 2000.0, "turn")


# time_credit="speech" (issue #13): the increment spread over the speech frames causing it

SPEECH = dataclasses.replace(RC, time_credit="speech", w_time=0.5)


def frames_of(ep, frame_ms=100.0):
  return np.round(ep.speech_ms / frame_ms).astype(int)


def test_time_speech_frames_sum_to_the_increment():
  ep = episode(["we", " see", " people", ""], speech_ms=[900, 900, 900, 0])
  per = R.speech_frame_backlog_ms(ep, frames_of(ep), 1e9)
  assert [len(p) for p in per] == [9, 9, 9, 0]
  np.testing.assert_allclose([p.sum() for p in per], R.backlog_increment_ms(ep, 1e9))
  # turn 0 plays [500, 1400] vs T_1 = 1000: its last 4 frames are over, 100 ms each
  np.testing.assert_allclose(per[0], [0.0] * 5 + [100.0] * 4)
  # turn 1 plays [1400, 2300] vs T_2 = 1500: 1400-1500 is in time, then 8 frames late
  np.testing.assert_allclose(per[1], [0.0] + [100.0] * 8)
  # the per-turn value is the increment's; the frame rewards sum to w_time times it
  np.testing.assert_allclose(times(ep, SPEECH), times(ep, INC))
  frame_rew = R.speech_time_rewards(ep, frames_of(ep), SPEECH)
  np.testing.assert_allclose([f.sum() for f in frame_rew], 0.5 * times(ep, INC))
  assert all(np.all(f <= 0.0) for f in frame_rew)


def test_time_speech_frames_split_a_straddling_frame():
  # 3 frames of 300 ms at [500, 1400] vs T_1 = 1000: the middle one straddles (100 ms)
  ep = episode(["we", "", "", ""], speech_ms=[900, 0, 0, 0])
  np.testing.assert_allclose(R.speech_frame_backlog_ms(ep, [3, 0, 0, 0], 1e9)[0],
                             [0.0, 100.0, 300.0])


def test_time_speech_frames_zero_without_backlog():
  ep = episode(["we", "", " see people", ""], speech_ms=[300, 0, 400, 0])
  per = R.speech_frame_backlog_ms(ep, frames_of(ep), 2000.0)
  assert [len(p) for p in per] == [3, 0, 4, 0]
  assert all(np.all(p == 0.0) for p in per)


def test_time_speech_frames_clip_spread_alike():
  ep = episode(["we see people", "", "", ""], speech_ms=[5000, 0, 0, 0])
  per = R.speech_frame_backlog_ms(ep, [50, 0, 0, 0], 1000.0)[0]
  # 4500 ms over T_1 = 1000 (the last 45 frames), clipped to 1000: each 1000/45
  np.testing.assert_allclose(per, [0.0] * 5 + [1000.0 / 45] * 45)


def test_time_speech_frames_bad_counts_named():
  ep = episode(["we", "", "", ""], speech_ms=[900, 0, 0, 0])
  with pytest.raises(ValueError, match="turn 0 has 0 frames"):
    R.speech_frame_backlog_ms(ep, [0, 0, 0, 0], 2000.0)
  with pytest.raises(ValueError, match="3 frame counts for 4 turns"):
    R.speech_frame_backlog_ms(ep, [3, 0, 0], 2000.0)


# ---- format ----------------------------------------------------------------------------

def test_fmt_malformed_turn():
  ep = episode(["we", "", " see people", ""], well_formed=[True, False, True, True])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["fmt"], [0, -1, 0, 0])


def test_fmt_speech_length_bounds():
  text = ["we see", " people", "", " we", " see"]
  speech = [200.0, 400.0, 0.0, 10.0, 0.0]   # per token: 100, 400, wait, 10, 0
  ep = episode(text, speech_ms=speech, n_text_tokens=[2, 1, 0, 1, 1], source_ms=2500.0)
  with_bounds = dataclasses.replace(RC, speech_ms_per_token=(50.0, 150.0))
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), with_bounds)["fmt"],
                                [0, -1, 0, -1, -1])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), RC)["fmt"], 0.0)
  # a text turn without speech is out of bounds even when lo = 0
  zero_lo = dataclasses.replace(RC, speech_ms_per_token=(0.0, 150.0))
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), zero_lo)["fmt"],
                                [0, -1, 0, 0, -1])
  # the bounds are inclusive
  ep = episode(["we see", " people"], speech_ms=[100.0, 150.0], n_text_tokens=[2, 1])
  np.testing.assert_array_equal(R.turn_rewards(ep, ref_en(), with_bounds)["fmt"], [0, 0])


# ---- episode rewards -------------------------------------------------------------------

def test_lag_matches_eval_latency():
  ep = episode(["we", "", " see people", ""])
  # delays 500, 1500, 1500; |ref| = 3, |X| = 1800 -> rate 600:
  # LAAL = AL = (500 + (1500 - 600) + (1500 - 1200)) / 3
  d = R.hypothesis_delays(ep)
  np.testing.assert_array_equal(d, [500, 1500, 1500])
  epi = R.episode_rewards(ep, ref_en(), RC)
  assert epi["laal_ms"] == pytest.approx(1700 / 3)
  assert epi["lag"] == pytest.approx(-(1700 / 3) / 1800)
  assert epi["laal_ms"] == latency.length_adaptive_average_lagging(d, 1800.0, 3)
  # a longer hypothesis: LAAL uses max(|Y|, |Y*|) = 5, AL |Y*| = 3; a word written after
  # the source ended is delayed by |X| (2000 -> 1800).
  ep = episode(["we", " see", "", " people and more"])
  d = R.hypothesis_delays(ep)
  np.testing.assert_array_equal(d, [500, 1000, 2000, 2000, 2000])
  lat = latency.score(d, 1800.0, reference_len=3)
  epi = R.episode_rewards(ep, ref_en(), RC)
  assert epi["laal_ms"] == lat.LAAL and epi["al_ms"] == lat.AL and lat.LAAL != lat.AL
  assert epi["lag"] == -lat.LAAL / 1800
  epi_al = R.episode_rewards(ep, ref_en(), dataclasses.replace(RC, lag_metric="al"))
  assert epi_al["lag"] == -lat.AL / 1800


def test_seq_quality():
  ep = episode(["we", " look", " at persons", ""])
  epi = R.episode_rewards(ep, ref_en(), RC)
  assert epi["seq"] == pytest.approx(chrf("we look at persons", "we see people"))
  epi = R.episode_rewards(ep, ref_en(), dataclasses.replace(RC, seq_metric="bleu"))
  assert epi["seq"] == pytest.approx(
      quality.sentence_bleu("we look at persons", "we see people") / 100)
  assert R.episode_rewards(episode(["we see people"]), ref_en(), RC)["seq"] == 1.0


def test_score_episode_weights_and_multi_turn():
  ep = episode(["we", " see", " people", ""], speech_ms=[900, 900, 900, 0],
               well_formed=[True, True, False, True])
  ref = ref_en()
  rc1 = R.RewardConfig(w_det=0.5, w_init=2.0, w_qual=3.0, w_time=0.25, w_fmt=4.0,
                       w_lag=5.0, w_seq=7.0)
  parts = R.turn_rewards(ep, ref, rc1)
  epi = R.episode_rewards(ep, ref, rc1)
  want = (0.5 * parts["det"] + 2.0 * parts["init"] + 3.0 * parts["qual"]
          + 0.25 * parts["time"] + 4.0 * parts["fmt"])
  r1, m1 = R.score_episode(ep, ref, rc1)
  np.testing.assert_allclose(r1, want)
  rc2 = dataclasses.replace(rc1, multi_turn=True)
  r2, m2 = R.score_episode(ep, ref, rc2)
  np.testing.assert_allclose(r2[:-1], r1[:-1])
  assert r2[-1] == pytest.approx(r1[-1] + 5.0 * epi["lag"] + 7.0 * epi["seq"])
  for m, r in ((m1, r1), (m2, r2)):
    assert m["reward/total"] == pytest.approx(r.sum())
    assert m["reward/lag"] == epi["lag"] and m["reward/seq"] == epi["seq"]
    for c in R.TURN_COMPONENTS:
      assert m[f"reward/{c}"] == pytest.approx(parts[c].mean())
  assert m1["reward/fmt"] == -0.25


# ---- config and inputs -----------------------------------------------------------------

def test_reward_config_from_config():
  cfg = ml_collections.ConfigDict(dict(rl=dict(
      w_det=0.2, w_time=0.5, multi_turn=True, lag_metric="al", seq_metric="bleu",
      max_backlog_ms=1000.0, speech_ms_per_token=[40.0, 200.0], kl_beta=0.1,
      time_credit="increment")))
  rc = R.RewardConfig.from_config(cfg)
  assert rc == R.RewardConfig(w_det=0.2, w_time=0.5, multi_turn=True, lag_metric="al",
                              seq_metric="bleu", max_backlog_ms=1000.0,
                              time_credit="increment",
                              speech_ms_per_token=(40.0, 200.0))
  assert R.RewardConfig.from_config(ml_collections.ConfigDict()) == R.RewardConfig()
  assert R.RewardConfig.from_config({"rl": {"w_fmt": 0.0}}).w_fmt == 0.0


@pytest.mark.parametrize("field,value", [
    ("w_det", float("nan")), ("w_seq", float("inf")), ("w_time", -1.0), ("w_qual", "1"),
    ("lag_metric", "dal"), ("seq_metric", "ter"), ("quality_metric", "comet"),
    ("max_backlog_ms", 0.0), ("multi_turn", 1), ("time_credit", "segment"), ("speech_ms_per_token", (200.0, 40.0)),
    ("speech_ms_per_token", (float("nan"), 1.0)), ("speech_ms_per_token", (1.0,))])
def test_reward_config_bad_values(field, value):
  cfg = ml_collections.ConfigDict(dict(rl={field: value}))
  with pytest.raises(ValueError, match=rf"rl\.{field}="):
    R.RewardConfig.from_config(cfg)
  with pytest.raises(ValueError, match=field):
    R.RewardConfig(**{field: value})


def test_reference_from_record_and_checks():
  from tests.unit.data import test_formats_fixtures as fx
  rec = fx.make_record(np.random.default_rng(0), 0, "zh", "en", "train")
  ref = R.Reference.from_record(rec)
  assert ref.tgt_words == list(rec["tgt_words"]) and ref.tgt_text == rec["tgt_text"]
  np.testing.assert_array_equal(ref.tgt_ready_ms, rec["tgt_ready_ms"])
  np.testing.assert_array_equal(ref.src_word_end_ms, rec["src_word_end_ms"])
  with pytest.raises(ValueError, match="ready times"):
    ref_en(tgt_ready_ms=[300.0, 1200.0])
  with pytest.raises(ValueError, match="timed corpus"):
    ref_en(tgt_ready_ms=[-1.0, -1.0, -1.0])
  with pytest.raises(ValueError, match="speech_ms"):
    episode(["a", "b"], speech_ms=[0.0])
