"""Sampling (greedy, temperature, top-p, masks) against numpy, and the turn grammar."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import grammar, sampling
from tests.unit.inference import grammar_ref

V = 12


def _np_dist(logits, temperature, top_p, mask=None):
  """float64 reference of the filtered sampling distribution."""
  x = np.asarray(logits, np.float64).copy()
  if mask is not None:
    x[~mask] = -np.inf
  x = x / temperature
  p = np.exp(x - x.max())
  p /= p.sum()
  order = np.argsort(-p, kind="stable")
  keep, mass = [], 0.0
  for i in order:
    keep.append(i)
    mass += p[i]
    if mass >= top_p:
      break
  q = np.zeros_like(p)
  q[keep] = p[keep]
  return q / q.sum()


def test_greedy_is_masked_argmax():
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((5, V)).astype(np.float32)
  mask = rng.random((5, V)) < 0.4
  mask[:, 0] = False
  mask[0] = False                                  # a row with nothing allowed -> PAD
  mask[1] = np.arange(V) == 7
  got = np.asarray(sampling.sample(jnp.asarray(logits), mask_bv=jnp.asarray(mask)))
  want = np.where(mask, logits, -np.inf).argmax(-1)
  want[0] = sampling.PAD
  np.testing.assert_array_equal(got, want)
  assert got[1] == 7
  np.testing.assert_array_equal(np.asarray(sampling.sample(jnp.asarray(logits))),
                                logits.argmax(-1))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.3, 0.6),
                                               (1.0, 0.05)])
def test_filtered_distribution_matches_numpy(temperature, top_p):
  rng = np.random.default_rng(1)
  logits = rng.standard_normal((4, V)).astype(np.float32) * 2
  mask = rng.random((4, V)) < 0.7
  mask[:, 3] = True
  got = np.exp(np.asarray(sampling.filtered_log_probs(
      jnp.asarray(logits), temperature, top_p, jnp.asarray(mask))))
  for b in range(4):
    np.testing.assert_allclose(got[b], _np_dist(logits[b], temperature, top_p, mask[b]),
                               atol=1e-6)


def test_sample_frequencies_follow_the_distribution():
  logits = np.asarray([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 1.5, 0.2], np.float32)
  n = 40000
  for temperature, top_p in ((1.0, 1.0), (0.8, 0.7)):
    ids = np.asarray(jax.jit(lambda k, t=temperature, p=top_p: sampling.sample(
        jnp.broadcast_to(jnp.asarray(logits), (n, logits.size)), k, temperature=t,
        top_p=p))(jax.random.key(3)))
    freq = np.bincount(ids, minlength=logits.size) / n
    want = _np_dist(logits, temperature, top_p)
    assert np.all(freq[want == 0] == 0), (freq, want)   # nothing outside the nucleus
    np.testing.assert_allclose(freq, want, atol=0.012)


def test_bad_parameters_are_rejected():
  x = jnp.zeros((1, V))
  with pytest.raises(ValueError, match="temperature"):
    sampling.sample(x, jax.random.key(0), temperature=-1.0)
  with pytest.raises(ValueError, match="top_p"):
    sampling.sample(x, jax.random.key(0), temperature=1.0, top_p=0.0)
  with pytest.raises(ValueError, match="PRNG key"):
    sampling.sample(x, None, temperature=1.0)


def test_token_log_probs():
  rng = np.random.default_rng(2)
  logits = rng.standard_normal((3, V)).astype(np.float32)
  ids = np.asarray([0, 5, 11])
  ref = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(np.asarray(sampling.token_log_probs(jnp.asarray(logits),
                                                                 jnp.asarray(ids))),
                             ref[np.arange(3), ids], rtol=1e-5)


# ---- turn grammar --------------------------------------------------------------------
LAYOUT = token_layout.TokenLayout(vocab_size=60, text_offset=32, num_text=10, speech_offset=42,
                              num_codebooks=2, codebook_size=8)


def _ref_mask(prefix, m, allow_src):
  return grammar_ref.allowed_mask(prefix, m, LAYOUT, allow_src)


@pytest.mark.parametrize("allow_src", [False, True])
def test_grammar_mask_matches_reference_along_random_turns(allow_src):
  m = 11
  gram = grammar.TurnGrammar(LAYOUT, m, allow_src=allow_src)
  for prefix in grammar_ref.random_walks(gram, LAYOUT,
                                         lambda p: _ref_mask(p, m, allow_src), 4 + allow_src):
    assert prefix[-1] == sampling.EOT                      # budget forces the close
    assert grammar_ref.min_close(prefix, LAYOUT, allow_src) == 0


def test_grammar_rejects_too_small_budget():
  with pytest.raises(ValueError, match="max_turn_tokens"):
    grammar.TurnGrammar(LAYOUT, grammar.min_content_turn(2) - 1)
