"""Where the time penalty lands in the update's per-token rewards (issue #13,
`rl.time_credit`; trainer.score_rollout) and what GAE makes of it, on a constructed
rollout: one speaking turn of 3 speech frames that plays past its deadline, then a wait.

Δ = 500 ms; turn 0 (emitted at 500 ms) speaks 3 frames of 300 ms, [500, 1400] vs
T_1 = 1000: frames add 0, 100 and 300 ms of backlog (400 ms: r_time = −0.8 with the
"increment" credit); turn 1 waits.
"""

import dataclasses

import ml_collections
import numpy as np
import pytest

from configs import base, micro, tiny
from liveinterp.common import token_layout as tl
from liveinterp.rl import gae, rewards, rollout, trainer

LAYOUT = tl.TokenLayout.create(text_vocab_size=8, num_codebooks=2, codebook_size=4,
                               vocab_size=tl.NUM_SPECIAL_TOKENS + 8 + 8)
S = LAYOUT.speech_offset
WORD = LAYOUT.text_offset + 1
# turn 0: <text> w <speech> (c0 c1) x 3 frames <eot>; turn 1: <eot>
TURN0 = np.asarray([tl.TEXT, WORD, tl.SPEECH, S, S + 4, S + 1, S + 5, S + 2, S + 6, tl.EOT])
TURN1 = np.asarray([tl.EOT])
STOP, WAIT = 9, 10              # positions of the two <eot>
CONTINUE = [5, 7]               # first tokens of frames 1 and 2: "continue speaking"
FRAME_STARTS = [3, 5, 7]
L = 12


def micro_rollout():
  tokens = np.full((1, L), tl.PAD, np.int32)
  tokens[0, :11] = np.concatenate([TURN0, TURN1])
  gen = np.zeros((1, L), np.int32)
  gen[0, :11] = 1
  turn_end = np.zeros((1, L), np.int32)
  turn_end[0, [STOP, WAIT]] = 1
  ep = rewards.Episode(chunk_ms=500.0, source_ms=1000.0, text=["we", ""],
                       speech_ms=np.asarray([900.0, 0.0]), n_text_tokens=np.asarray([1, 0]),
                       well_formed=np.asarray([True, True]),
                       emit_ms=np.asarray([500.0, 1000.0]), tgt_lang="en")
  batch = {"tokens": tokens, "gen_mask": gen, "turn_end": turn_end}
  return rollout.Rollout(batch=batch, episodes=[ep], cut_turns=0, turns=2,
                         turn_ids=[[TURN0, TURN1]])


RECORD = {"src_word_end_ms": np.asarray([300.0]), "tgt_words": ["we"],
          "tgt_ready_ms": np.asarray([300.0]), "tgt_text": "we"}
TIME_ONLY = rewards.RewardConfig(w_det=0.0, w_init=0.0, w_qual=0.0, w_time=1.0, w_fmt=0.0)


def placed(credit: str) -> np.ndarray:
  rc = dataclasses.replace(TIME_ONLY, time_credit=credit)
  out, logs = trainer.score_rollout(micro_rollout(), [RECORD], rc, LAYOUT)
  assert logs[0]["reward/time"] == pytest.approx(-0.4)   # mean of (−0.8, 0)
  return out[0]


def test_frame_starts():
  np.testing.assert_array_equal(trainer.speech_frame_starts(TURN0, LAYOUT), FRAME_STARTS)
  assert trainer.speech_frame_starts(TURN1, LAYOUT).size == 0


def test_increment_credit_is_all_on_the_stop_eot():
  r = placed("increment")
  assert r[STOP] == pytest.approx(-0.8)
  assert np.count_nonzero(r) == 1


def test_speech_credit_charges_each_late_frame_not_the_stop():
  r = placed("speech")
  assert r[STOP] == pytest.approx(0.0, abs=1e-7) and r[WAIT] == 0.0
  np.testing.assert_allclose(r[FRAME_STARTS], [0.0, -0.2, -0.6], atol=1e-7)
  assert r.sum() == pytest.approx(-0.8)            # the turn's increment, w_time = 1
  others = np.ones(L, bool)
  others[FRAME_STARTS + [STOP]] = False
  assert np.all(r[others] == 0.0)


def test_speech_credit_keeps_other_rewards_at_the_last_token():
  rc = dataclasses.replace(TIME_ONLY, time_credit="speech", w_fmt=1.0)
  ro = micro_rollout()
  ro.episodes[0].well_formed[:] = False           # r_fmt = −1 on both turns
  r = trainer.score_rollout(ro, [RECORD], rc, LAYOUT)[0][0]
  assert r[STOP] == pytest.approx(-1.0) and r[WAIT] == pytest.approx(-1.0)
  np.testing.assert_allclose(r[FRAME_STARTS], [0.0, -0.2, -0.6], atol=1e-7)


def advantages(credit: str, whiten: bool) -> np.ndarray:
  """GAE (γ = 1, λ = 0.95) with a value head that predicts nothing (V = 0)."""
  ro = micro_rollout()
  mask = ro.batch["gen_mask"].astype(np.float32)
  batch = dict(ro.batch, turn_rewards=placed(credit)[None], old_values=np.zeros((1, L)))
  if whiten:
    c = ml_collections.ConfigDict({"rl": {"gamma": 1.0, "lam": 0.95}})
    adv, _ = trainer.advantages(batch, mask, 0.0, c)
  else:
    adv, _ = gae.gae(batch["turn_rewards"] * mask, batch["old_values"], mask, gamma=1.0,
                     lam=0.95)
  return np.asarray(adv)[0]


@pytest.mark.parametrize("whiten", [False, True])
def test_stop_advantage_against_continue(whiten):
  # increment: the penalty sits on the stop <eot>, continues see it λ-discounted, so
  # stopping looks worse than continuing
  a = advantages("increment", whiten)
  assert a[STOP] < a[CONTINUE].min()
  # speech: each continue pays for the frame it plays; stopping is not charged
  a = advantages("speech", whiten)
  assert a[STOP] > a[CONTINUE].max()


def test_speech_credit_config():
  c = tiny.get_config("rl_time_only_speech")
  assert c.stage == "rl1" and c.rl.time_credit == "speech"
  assert dict(c.rl, time_credit="backlog") == dict(tiny.get_config("rl_time_only").rl)
  assert "rl_time_only_speech" in base.RL_ABLATIONS
  assert rewards.RewardConfig.from_config(c).time_credit == "speech"


def test_speech_credit_needs_speech_actions():
  c = micro.get_config("rl1")
  c.train.init_from = "/somewhere/sft"
  c.rl.time_credit, c.rl.speech_action = "speech", "none"
  with pytest.raises(ValueError, match="rl.time_credit='speech'.*speech_action='none'"):
    trainer.check_config(c)
