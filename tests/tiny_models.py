"""A tiny NNX token model with logical axes, shared by trainer tests."""

import jax
import optax
from flax import nnx

from liveinterp.common import axes, sharding
from liveinterp.layers.embeddings import Embed
from liveinterp.layers.linears import Dense
from liveinterp.layers.normalizations import RMSNorm


class TinyLM(nnx.Module):
  def __init__(self, vocab, dim, hidden, rngs):
    self.embed = Embed(vocab, dim, rngs=rngs)
    self.norm = RMSNorm(dim, rngs=rngs)
    self.up = Dense(dim, hidden, kernel_axes=(axes.EMBED, axes.MLP), rngs=rngs)
    self.down = Dense(hidden, dim, kernel_axes=(axes.MLP, axes.EMBED), rngs=rngs)

  def __call__(self, ids):
    x = self.embed(ids)
    x = sharding.shard_logical(x, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED))
    h = jax.nn.gelu(self.up(self.norm(x)))
    h = sharding.shard_logical(h, (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP))
    return self.embed.attend(x + self.down(h))


def lm_loss(model, batch, rng):
  del rng
  logits = model(batch["inputs"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()
  return loss, {"accuracy": (logits.argmax(-1) == batch["targets"]).mean()}
