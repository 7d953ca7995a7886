"""`demo` stage: the LLM on generated token data (a seeded sparse Markov chain).

It exercises the whole training path (mesh, sharded state, compiled step, progress,
TensorBoard, checkpoints, resume) before any corpus exists. The chain has a known entropy
rate, so the loss has a floor to compare with: `eval/loss` approaching
`eval/entropy_floor` means the model learned the chain's transitions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from liveinterp.models.llm import LLM
from liveinterp.train import loop


class MarkovChain:
  """Tokens 1..n_states; each state moves to one of `fanout` successors (seeded)."""

  def __init__(self, n_states: int, fanout: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.n = n_states
    self.succ = rng.integers(1, n_states + 1, (n_states + 1, fanout))
    w = rng.dirichlet(np.full(fanout, 0.7), n_states + 1)
    self.probs = w
    self.entropy = float(-(w * np.log(w)).sum(-1)[1:].mean())  # stationary ≈ uniform

  def sample(self, rng: np.random.Generator, batch: int, length: int) -> np.ndarray:
    out = np.empty((batch, length), np.int32)
    out[:, 0] = rng.integers(1, self.n + 1, batch)
    for t in range(1, length):
      prev = out[:, t - 1]
      u = rng.random(batch)[:, None]
      choice = (u > np.cumsum(self.probs[prev], -1)).sum(-1).clip(0, self.succ.shape[1] - 1)
      out[:, t] = self.succ[prev, choice]
    return out


def _loss_fn(model, batch, rng):
  del rng
  logits, _ = model(batch["inputs"])
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
  acc = (logits.argmax(-1) == batch["targets"]).astype(jnp.float32)
  return ce.mean(), {"accuracy": acc.mean()}


def build(config) -> loop.Stage:
  n_states = min(512, config.llm.vocab_size - 1)
  chain = MarkovChain(n_states, seed=config.seed)
  local_batch = config.train.batch_size // jax.process_count()
  length = config.data.seq_len + 1

  def make_data(start: int):
    step = start
    lo = jax.process_index() * local_batch
    while True:
      # The global batch is f(seed, step) and each process takes its rows: resuming at
      # `start` is exact, and any process count sees the same global batch.
      rng = np.random.default_rng([config.seed, step])
      ids = chain.sample(rng, config.train.batch_size, length)[lo:lo + local_batch]
      yield {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
      step += 1

  eval_ids = chain.sample(np.random.default_rng([config.seed, 2**31 - 1]), 16, length)
  eval_step = jax.jit(lambda m, x, y: _loss_fn(m, {"inputs": x, "targets": y}, None))

  def eval_fn(model, step):
    del step
    loss, aux = eval_step(model, jnp.asarray(eval_ids[:, :-1]), jnp.asarray(eval_ids[:, 1:]))
    return {"eval/loss": float(loss), "eval/accuracy": float(aux["accuracy"]),
            "eval/entropy_floor": chain.entropy}

  return loop.Stage("demo", lambda rngs: LLM(config, rngs=rngs), _loss_fn, make_data,
                    eval_fn=eval_fn)
