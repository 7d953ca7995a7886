"""Log-probabilities of what was sampled (issue #10, "Training = inference").

Tokens are drawn after the grammar mask, temperature and top-p; PPO ratios and KL need
the log-probability under *that* distribution (`logprob_sampled`), kept apart from the
raw model's (`logprob_raw` = log softmax of the unmasked logits).

1. `sample_with_log_probs` on one small logits vector: the empirical frequency of many
   seeded draws matches the returned probabilities (chi-square), and they equal a float64
   numpy reference of mask -> temperature -> top-p.
2. The streaming decoder (sampling hot, grammar, top-p): every token's `logprob_sampled`
   equals the reference distribution at that token (from the returned logits and the
   reference grammar mask), `logprob_raw` equals log softmax of the logits; greedy
   decoding gives `logprob_sampled == 0`.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib
from liveinterp.inference import sampling
from tests.unit.inference import grammar_ref
from tests.unit.inference.conftest import TURN_TOKENS
from tests.unit.inference.test_sampling import _np_dist  # float64 reference

# A fixed small logits vector: a mask removes the two most probable ids, top-p then
# drops the tail of what remains.
LOGITS = np.asarray([3.0, 1.2, 0.9, 2.5, 0.4, -0.3, 1.0, 0.1, -2.0, 0.6], np.float32)
MASK = np.asarray([False, True, True, False, True, True, True, True, True, True])
TEMPERATURE, TOP_P = 0.7, 0.8


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max() - np.log(np.exp(x - x.max()).sum())


def test_sampled_frequencies_match_returned_probabilities():
  n = 20000
  logits = jnp.broadcast_to(jnp.asarray(LOGITS), (n, LOGITS.size))
  mask = jnp.broadcast_to(jnp.asarray(MASK), (n, LOGITS.size))

  # logits and mask are arguments, not closed-over constants: XLA would otherwise fold the
  # top-p sort over the [n, V] constant at compile time (28 s instead of < 1 s).
  @jax.jit
  def draw(key, logits, mask):
    ids, logp = sampling.sample_with_log_probs(logits, key, temperature=TEMPERATURE,
                                               top_p=TOP_P, mask_bv=mask)
    return (ids, sampling.log_prob_of(logp, ids),
            sampling.token_log_probs(logits, ids), logp[0])

  ids, lp_sampled, lp_raw, logp = jax.device_get(draw(jax.random.key(7), logits, mask))
  want = _np_dist(LOGITS, TEMPERATURE, TOP_P, MASK)
  # Returned distribution == reference; each draw's log-prob is read from it.
  np.testing.assert_allclose(np.exp(logp), want, atol=1e-6)
  np.testing.assert_allclose(lp_sampled, np.log(want[ids]), atol=1e-5)
  # Raw log-prob: log softmax of the unmasked logits at temperature 1.
  np.testing.assert_allclose(lp_raw, _log_softmax(LOGITS)[ids], atol=1e-5)
  assert np.all(want[ids] > 0)                       # nothing outside the support
  # Empirical frequency vs the returned probabilities of the drawn ids (chi-square over
  # the support; 99.9% quantile of chi2 with <= 6 dof is 22.5).
  p_returned = np.zeros(LOGITS.size)
  p_returned[ids] = np.exp(lp_sampled)
  support = p_returned > 0
  counts = np.bincount(ids, minlength=LOGITS.size)
  expected = n * p_returned[support]
  chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
  assert chi2 < 22.5, (chi2, counts, expected)
  # The raw probabilities are not the sampling ones (the test would catch a mix-up).
  assert np.abs(np.exp(lp_raw) - np.exp(lp_sampled)).max() > 0.1


def test_greedy_and_masked_rows():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((3, 8)).astype(np.float32)
  mask = np.ones((3, 8), bool)
  mask[1, :] = False                                 # nothing allowed -> PAD, -inf
  mask[2, np.argmax(logits[2])] = False
  ids, logp = sampling.sample_with_log_probs(jnp.asarray(logits), mask_bv=jnp.asarray(mask))
  ids, lp = np.asarray(ids), np.asarray(sampling.log_prob_of(logp, ids))
  np.testing.assert_array_equal(ids, [np.argmax(logits[0]), sampling.PAD,
                                      np.argmax(np.where(mask[2], logits[2], -np.inf))])
  np.testing.assert_array_equal(lp, [0.0, -np.inf, 0.0])    # greedy: a point mass
  np.testing.assert_array_equal(np.asarray(sampling.sample(jnp.asarray(logits),
                                                           mask_bv=jnp.asarray(mask))), ids)
  # All-masked rows are -inf (not NaN) in the filtered distribution too.
  filt = np.asarray(sampling.filtered_log_probs(jnp.asarray(logits), 1.0, 0.9,
                                                jnp.asarray(mask)))
  assert np.all(filt[1] == -np.inf) and not np.isnan(filt).any()


# ---- through the streaming decoder -------------------------------------------------------
B, N_CHUNKS = 2, 4
HOT, NUCLEUS = 3.0, 0.9


@pytest.fixture(scope="module")
def hot_decoder(cfg, models):
  """Sampling hot (so the random model writes content turns), grammar, top-p; text
  side only (no codec), logits returned."""
  model, codec, speaker = models
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg, temperature=HOT,
      top_p=NUCLEUS, grammar=True, max_turn_tokens=TURN_TOKENS,
      speaker_window_ms=cfg.stream.chunk_ms, return_logits=True, decode_speech=False)


def _run(decoder, seed):
  rng = np.random.default_rng(seed)
  audio = (0.1 * rng.standard_normal((N_CHUNKS, B, decoder.chunk_samples))).astype(
      np.float32)
  state, outs = decoder.init_stream(B, seed), []
  for t in range(N_CHUNKS):
    state, out = decoder.step(state, audio[t])
    outs.append(jax.device_get(out))
  return outs


def test_decoder_returns_sampled_and_raw_log_probs(hot_decoder):
  layout = hot_decoder.layout
  outs = _run(hot_decoder, 1)
  checked, differ = 0, 0
  for o in outs:
    for b in range(B):
      turn = [int(x) for x in o.tokens[b, :o.n_tokens[b]]]
      for i, tok in enumerate(turn):
        allowed = grammar_ref.allowed_mask(turn[:i], TURN_TOKENS, layout, allow_src=False)
        q = _np_dist(o.logits[b, i], HOT, NUCLEUS, allowed)
        assert q[tok] > 0, (turn, i)
        np.testing.assert_allclose(o.logprob_sampled[b, i], np.log(q[tok]), atol=1e-4,
                                   err_msg=f"row {b} token {i}")
        raw = _log_softmax(o.logits[b, i])[tok]
        np.testing.assert_allclose(o.logprob_raw[b, i], raw, atol=1e-4)
        np.testing.assert_array_equal(o.log_probs[b, i], o.logprob_raw[b, i])  # old name
        differ += abs(np.log(q[tok]) - raw) > 0.1
        checked += 1
      assert not o.logprob_sampled[b, len(turn):].any()       # zero after the turn
  assert checked > 2 * N_CHUNKS and differ > checked // 2, (checked, differ)


def test_greedy_decoder_samples_with_probability_one(decoder):
  rng = np.random.default_rng(3)
  state = decoder.init_stream(B, 0)
  state, o = decoder.step(state, (0.1 * rng.standard_normal(
      (B, decoder.chunk_samples))).astype(np.float32))
  o = jax.device_get(o)
  for b in range(B):
    n = int(o.n_tokens[b])
    assert n >= 1
    np.testing.assert_array_equal(o.logprob_sampled[b, :n], 0.0)
    np.testing.assert_allclose(o.logprob_raw[b, :n], [
        _log_softmax(o.logits[b, i])[o.tokens[b, i]] for i in range(n)], atol=1e-4)
