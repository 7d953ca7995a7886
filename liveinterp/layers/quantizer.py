"""Vector quantizers for the speech codec: VQ (one or several product codebooks) and RVQ.

Building block is `Codebook`: nearest code by L2 distance (computed in float32), lookup,
and the in-place statistics update (EMA codebook with Laplace-smoothed cluster sizes,
usage counters, dead-code restart from random batch vectors).

`VectorQuantizer` splits the latent into `num_codebooks` equal slices, one codebook each
(`num_codebooks=1` is classic VQ-VAE); `ResidualVectorQuantizer` quantizes the latent, then
the residual left by the first codebook, and so on. Both return codes `[B, T, Q]`, and both
apply the straight-through estimator to the *whole* quantized latent
(`z + stop_gradient(z_q - z)`), so the gradient of the output w.r.t. the input is exactly
the identity (stage-wise straight-through in RVQ would scale it by Q).

Codebook update (`update=` at construction):
- `'ema'` (default): the codebook is *state*, not a parameter: it lives in a
  `CodebookStats` variable together with the EMA statistics, so
  `nnx.Optimizer(model, tx, wrt=nnx.Param)` (and `nnx.split(model, nnx.Param, ...)`) leave
  it to `update=True` forward passes:
    N_k <- d N_k + (1 - d) n_k,   M_k <- d M_k + (1 - d) sum_{i: c_i = k} z_i,
    e_k <- M_k / N~_k,  N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j.
- `'loss'`: the codebook is an `nnx.Param` trained by the codebook loss
  `|| sg(z) - e_c ||^2` (VQ-VAE). An `update=True` pass only counts usage and restarts
  dead codes by assigning the Param in place: that persists with `nnx.value_and_grad` +
  `nnx.Optimizer`, but a functional step that rebuilds params from the optimizer state
  drops it (use 'ema' there, the default).

In a functional train step that merges `model_state` inside `jax.value_and_grad`, merge
with `nnx.merge(graphdef, params, model_state, copy=True)`: NNX refuses to update
Variables created at an outer trace level.

The commitment loss `|| z - sg(e_c) ||^2` is returned unweighted and weighted by
`commitment` inside `loss`. All losses are means over valid positions (and channels).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes
from liveinterp.layers import initializers as inits

UPDATES = ("ema", "loss")


class CodebookStats(nnx.Variable):
  """Quantizer state that the optimizer must not touch.

  EMA codebook and its statistics (cluster sizes, embedding sums) and the per-code count
  of update steps since the code was last used. Split it from the parameters with
  `nnx.split(model, nnx.Param, CodebookStats, ...)` or `nnx.state(model, CodebookStats)`.
  """


def _stat(value: jax.Array, logical_axes: Sequence[str | None]) -> CodebookStats:
  """A `CodebookStats` variable annotated with logical axis names (like `inits.param`).

  Sharded as it is created under a mesh; with no mesh the names are kept as metadata.
  """
  if len(logical_axes) != value.ndim:
    raise ValueError(f"_stat: {len(logical_axes)} logical axes for shape {value.shape}")
  mesh = jax.sharding.get_abstract_mesh()
  eager = nnx.using_eager_sharding() and mesh is not None and not mesh.empty
  return CodebookStats(value, out_sharding=tuple(logical_axes), eager_sharding=eager)


def _masked_mean_sq(a_btd: jax.Array, mask_bt: jax.Array) -> jax.Array:
  """Mean of a^2 over valid positions [B, T] and channels D (float32 scalar)."""
  sq = jnp.square(a_btd.astype(jnp.float32)) * mask_bt[..., None]
  denom = jnp.maximum(jnp.sum(mask_bt), 1.0) * a_btd.shape[-1]
  return jnp.sum(sq) / denom


class Codebook(nnx.Module):
  """One codebook of `codebook_size` (K) codes of width `dim` (D).

  Args:
    dim: code width D.
    codebook_size: number of codes K.
    update: `'ema'` or `'loss'` (see module docstring).
    ema_decay: EMA decay d in (0, 1) (used when `update='ema'`).
    epsilon: Laplace smoothing of the EMA cluster sizes.
    dead_after: a code unused for this many consecutive `update=True` steps is replaced
      by a random vector of the current batch (when a key is given); 0 disables restarts.
    init_std: standard deviation of the initial codes.
  """

  def __init__(self, dim: int, codebook_size: int, *, update: str = "ema",
               ema_decay: float = 0.99, epsilon: float = 1e-5, dead_after: int = 100,
               init_std: float = 1.0, param_dtype="float32", rngs: nnx.Rngs):
    if update not in UPDATES:
      raise ValueError(f"Codebook update={update!r}: expected one of {UPDATES}")
    if not 0.0 < ema_decay < 1.0:
      raise ValueError(f"Codebook ema_decay={ema_decay}: must be in (0, 1)")
    self.dim = dim
    self.codebook_size = codebook_size
    self.update = update
    self.ema_decay = float(ema_decay)
    self.epsilon = float(epsilon)
    self.dead_after = int(dead_after)
    kd_axes = (axes.CODEBOOK, axes.EMBED)
    shape = (codebook_size, dim)
    if update == "loss":
      self.embedding = inits.param(rngs, inits.normal(init_std), shape, kd_axes, param_dtype)
    else:
      # The EMA codebook is state kept in float32 (it is an average, not a weight).
      init = inits.normal(init_std)(rngs.params(), shape, jnp.float32)
      self.embedding = _stat(init, kd_axes)
      self.cluster_size = _stat(jnp.ones((codebook_size,), jnp.float32), (axes.CODEBOOK,))
      self.embed_sum = _stat(init, kd_axes)
    self.unused_steps = _stat(jnp.zeros((codebook_size,), jnp.int32), (axes.CODEBOOK,))

  # ---- pure pieces ------------------------------------------------------------------
  def codes_of(self, z_btd: jax.Array) -> jax.Array:
    """Nearest code (squared L2, float32) of every vector: [B, T, D] -> int32 [B, T]."""
    z = jax.lax.stop_gradient(z_btd).astype(jnp.float32)
    e_kd = jax.lax.stop_gradient(self.embedding[...]).astype(jnp.float32)
    # ||z||^2 is the same for every code, so it does not change the argmin.
    dist_btk = (jnp.sum(jnp.square(e_kd), axis=-1)
                - 2.0 * jnp.einsum("btd,kd->btk", z, e_kd))
    return jnp.argmin(dist_btk, axis=-1).astype(jnp.int32)

  def lookup(self, codes_bt: jax.Array) -> jax.Array:
    """Code vectors of `codes` [B, T] -> float32 [B, T, D] (differentiable in 'loss')."""
    return jnp.take(self.embedding[...].astype(jnp.float32), codes_bt, axis=0)

  # ---- state update -----------------------------------------------------------------
  def update_stats(self, z_btd: jax.Array, codes_bt: jax.Array, mask_bt: jax.Array,
                   key: jax.Array | None = None) -> None:
    """EMA step (in 'ema'), usage counting and dead-code restart, in place.

    Args:
      z_btd: the vectors that were quantized [B, T, D] (gradients are stopped).
      codes_bt: their codes [B, T].
      mask_bt: 1.0 for valid positions, 0.0 for padding [B, T].
      key: PRNG key for dead-code restart; None skips restarts.
    """
    k = self.codebook_size
    z = jax.lax.stop_gradient(z_btd).astype(jnp.float32)
    mask = mask_bt.astype(jnp.float32)
    onehot_btk = jax.nn.one_hot(codes_bt, k, dtype=jnp.float32) * mask[..., None]
    counts_k = jnp.sum(onehot_btk, axis=(0, 1))
    if self.update == "ema":
      d = self.ema_decay
      sums_kd = jnp.einsum("btk,btd->kd", onehot_btk, z)
      cluster = d * self.cluster_size[...] + (1.0 - d) * counts_k
      embed_sum = d * self.embed_sum[...] + (1.0 - d) * sums_kd
      total = jnp.sum(cluster)
      smoothed = (cluster + self.epsilon) / (total + k * self.epsilon) * total
      embedding = embed_sum / smoothed[:, None]
    else:
      embedding = self.embedding[...]
    unused = jnp.where(counts_k > 0, 0, self.unused_steps[...] + 1)
    restart = key is not None and self.dead_after > 0

    if restart:
      any_valid = jnp.sum(mask) > 0
      dead_k = (unused >= self.dead_after) & any_valid
      flat_nd = z.reshape(-1, z.shape[-1])
      logits_n = jnp.where(mask.reshape(-1) > 0, 0.0, -jnp.inf)
      pick_k = jax.random.categorical(key, logits_n, shape=(k,))
      fresh_kd = flat_nd[pick_k]
      embedding = jnp.where(dead_k[:, None], fresh_kd.astype(embedding.dtype), embedding)
      if self.update == "ema":
        cluster = jnp.where(dead_k, 1.0, cluster)
        embed_sum = jnp.where(dead_k[:, None], fresh_kd, embed_sum)
      unused = jnp.where(dead_k, 0, unused)

    if self.update == "ema":
      self.cluster_size[...] = cluster
      self.embed_sum[...] = embed_sum
    if self.update == "ema" or restart:  # a 'loss' codebook (a Param) changes on restart only
      self.embedding[...] = embedding
    self.unused_steps[...] = unused.astype(jnp.int32)


def _perplexity(codes_bt: jax.Array, mask_bt: jax.Array, k: int) -> jax.Array:
  """exp(entropy) of the batch code histogram: K when all codes are used evenly."""
  hist = jnp.sum(jax.nn.one_hot(codes_bt, k, dtype=jnp.float32) * mask_bt[..., None],
                 axis=(0, 1))
  p = hist / jnp.maximum(jnp.sum(hist), 1.0)
  return jnp.exp(-jnp.sum(p * jnp.log(jnp.maximum(p, 1e-10))))


class _MultiCodebookQuantizer(nnx.Module):
  """Shared construction and bookkeeping of the product and residual quantizers."""

  residual: bool = False

  def __init__(self, dim: int, codebook_size: int, num_codebooks: int = 1, *,
               commitment: float = 0.25, update: str = "ema", ema_decay: float = 0.99,
               epsilon: float = 1e-5, dead_after: int = 100, init_std: float = 1.0,
               param_dtype="float32", rngs: nnx.Rngs):
    if num_codebooks < 1:
      raise ValueError(f"num_codebooks={num_codebooks}: must be >= 1")
    if not self.residual and dim % num_codebooks:
      raise ValueError(f"VectorQuantizer: num_codebooks={num_codebooks} does not divide "
                       f"dim={dim} (product VQ splits the latent into equal slices)")
    self.dim = dim
    self.codebook_size = codebook_size
    self.num_codebooks = num_codebooks
    self.commitment = float(commitment)
    self.update = update
    code_dim = dim if self.residual else dim // num_codebooks
    # A residual stage quantizes what is left, so later codebooks start smaller.
    self.codebooks = nnx.List([
        Codebook(code_dim, codebook_size, update=update, ema_decay=ema_decay,
                 epsilon=epsilon, dead_after=dead_after,
                 init_std=init_std * (0.5 ** q if self.residual else 1.0),
                 param_dtype=param_dtype, rngs=rngs)
        for q in range(num_codebooks)])

  def _split(self, z_btd: jax.Array) -> list[jax.Array]:
    n = self.dim // self.num_codebooks
    return [z_btd[..., q * n:(q + 1) * n] for q in range(self.num_codebooks)]

  def encode(self, z_btd: jax.Array) -> jax.Array:
    """Codes of a latent: [B, T, D] -> int32 [B, T, Q]."""
    return self(z_btd)["codes"]

  def decode(self, codes_btq: jax.Array, dtype=None) -> jax.Array:
    """Quantized latent of codes: int [B, T, Q] -> [B, T, D] (float32 unless `dtype`)."""
    parts = [cb.lookup(codes_btq[..., q]) for q, cb in enumerate(self.codebooks)]
    z_q = sum(parts) if self.residual else jnp.concatenate(parts, axis=-1)
    return z_q if dtype is None else z_q.astype(dtype)

  def __call__(self, z_btd: jax.Array, mask_bt: jax.Array | None = None, *,
               update: bool = False, key: jax.Array | None = None) -> dict:
    """Quantizes a latent.

    Args:
      z_btd: latent [B, T, D].
      mask_bt: 1 for valid frames [B, T] (losses and statistics ignore the rest).
      update: update codebook state in place (EMA / usage counters / restarts).
      key: PRNG key for dead-code restarts during `update`.

    Returns:
      dict with `z_q` [B, T, D] (straight-through, dtype of z), `codes` int32 [B, T, Q],
      `commitment_loss`, `codebook_loss`, `loss` (= commitment * commitment_loss +
      codebook_loss) and `perplexity` (mean over codebooks) as float32 scalars.
    """
    if z_btd.shape[-1] != self.dim:
      raise ValueError(f"quantizer expects width {self.dim}, got {z_btd.shape}")
    mask = (jnp.ones(z_btd.shape[:2], jnp.float32) if mask_bt is None
            else mask_bt.astype(jnp.float32))
    z = z_btd.astype(jnp.float32)
    codes, quantized, commit, cb_loss, ppl = [], [], 0.0, 0.0, 0.0
    inputs = None if self.residual else self._split(z)
    residual = z
    for q, cb in enumerate(self.codebooks):
      x = residual if self.residual else inputs[q]
      c = cb.codes_of(x)
      e = cb.lookup(c)
      commit = commit + _masked_mean_sq(x - jax.lax.stop_gradient(e), mask)
      if self.update == "loss":
        cb_loss = cb_loss + _masked_mean_sq(jax.lax.stop_gradient(x) - e, mask)
      ppl = ppl + _perplexity(c, mask, self.codebook_size)
      if update:
        cb.update_stats(x, c, mask, None if key is None else jax.random.fold_in(key, q))
      codes.append(c)
      quantized.append(jax.lax.stop_gradient(e))
      if self.residual:
        residual = residual - jax.lax.stop_gradient(e)
    z_q = sum(quantized) if self.residual else jnp.concatenate(quantized, axis=-1)
    z_st = z + jax.lax.stop_gradient(z_q - z)
    commit = jnp.asarray(commit, jnp.float32)
    cb_loss = jnp.asarray(cb_loss, jnp.float32)
    return dict(z_q=z_st.astype(z_btd.dtype), codes=jnp.stack(codes, axis=-1),
                commitment_loss=commit, codebook_loss=cb_loss,
                loss=self.commitment * commit + cb_loss,
                perplexity=ppl / self.num_codebooks)


class VectorQuantizer(_MultiCodebookQuantizer):
  """VQ; with `num_codebooks` Q > 1 a product VQ (latent split into Q slices)."""

  residual = False


class ResidualVectorQuantizer(_MultiCodebookQuantizer):
  """Residual VQ: codebook q quantizes what codebooks 0..q-1 left; z_q = sum of codes."""

  residual = True


def make_quantizer(codec_cfg, *, param_dtype="float32", rngs: nnx.Rngs
                   ) -> _MultiCodebookQuantizer:
  """The quantizer named by `codec_cfg.quantizer` ('vq' | 'rvq') with its sizes.

  Reads `latent_dim`, `codebook_size`, `num_codebooks`, `commitment`, `ema_decay`, and
  optionally `codebook_update` ('ema' default | 'loss') and `dead_code_steps` (100).
  """
  kind = codec_cfg.quantizer
  cls = {"vq": VectorQuantizer, "rvq": ResidualVectorQuantizer}.get(kind)
  if cls is None:
    raise ValueError(f"codec.quantizer={kind!r}: expected 'vq' or 'rvq'")
  return cls(codec_cfg.latent_dim, codec_cfg.codebook_size, codec_cfg.num_codebooks,
             commitment=codec_cfg.commitment,
             update=codec_cfg.get("codebook_update", "ema"),
             ema_decay=codec_cfg.ema_decay,
             dead_after=codec_cfg.get("dead_code_steps", 100),
             param_dtype=param_dtype, rngs=rngs)
