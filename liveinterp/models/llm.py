"""Pre-norm decoder-only LLM: GQA with rotary positions, SwiGLU, value head, ring KV cache.

    x = embed(tokens) | adapter embeddings spliced in by the composite model
    repeat L times (one stacked module, applied with `lax.scan` over the LAYERS axis):
      x = x + Attention(RMSNorm(x))     grouped-query, rotary, causal + sink/window mask
      x = x + SwiGLU(RMSNorm(x))
    logits = unembed(RMSNorm(x))        tied (embedding^T / sqrt(D)) or untied, float32
    values = w . RMSNorm_v(x)           PPO value head, float32

Layers are created once with `nnx.vmap` (every parameter gets a leading `layers` logical
axis) and run with `lax.scan` over their stacked state, so compile time does not grow with
depth. Rematerialisation is a switch (`REMAT_POLICIES`, `cfg.llm.remat` or the `remat`
argument) applied to each scanned layer.

Streaming: `init_cache(batch)` gives a fixed-shape `kv_cache.KVCache` (sliding window +
sink tokens, see `liveinterp/layers/kv_cache.py`), `extend(cache, chunk)` appends T tokens
at once and `decode_step(cache, token)` one. The training forward uses by default the
same sink + sliding-window mask (`use_window=True`), so a cached stream computes exactly
what the full forward computes, at every length.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes
from liveinterp.common.sharding import shard_logical
from liveinterp.layers import initializers as inits
from liveinterp.layers import kv_cache
from liveinterp.layers.attention import dot_product_attention
from liveinterp.layers.embeddings import Embed, apply_rotary
from liveinterp.layers.linears import Dense
from liveinterp.layers.normalizations import RMSNorm

# Per-layer rematerialisation policies (None = no remat: keep every activation).
REMAT_POLICIES = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}

_BTD = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_EMBED)
_BTHD = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_HEADS, axes.ACT_HEAD_DIM)
_BTKD = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_KV_HEADS, axes.ACT_HEAD_DIM)
_BKDW = (axes.CACHE_BATCH, axes.CACHE_KV_HEADS, axes.CACHE_HEAD_DIM, axes.CACHE_LENGTH)
_BKWD = (axes.CACHE_BATCH, axes.CACHE_KV_HEADS, axes.CACHE_LENGTH, axes.CACHE_HEAD_DIM)


class Attention(nnx.Module):
  """Grouped-query self-attention with rotary positions (H query heads, K kv heads)."""

  def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int,
               rope_theta: float, *, dtype="float32", param_dtype="float32",
               rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.q_proj = Dense(d_model, (num_heads, head_dim),
                        kernel_axes=(axes.EMBED, axes.HEADS, axes.HEAD_DIM), **kw)
    self.k_proj = Dense(d_model, (num_kv_heads, head_dim),
                        kernel_axes=(axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM), **kw)
    self.v_proj = Dense(d_model, (num_kv_heads, head_dim),
                        kernel_axes=(axes.EMBED, axes.KV_HEADS, axes.HEAD_DIM), **kw)
    self.o_proj = Dense((num_heads, head_dim), d_model,
                        kernel_axes=(axes.HEADS, axes.HEAD_DIM, axes.EMBED), **kw)
    self.rope_theta = rope_theta

  def qkv(self, x_btd: jax.Array, positions_bt: jax.Array):
    """x [B, T, D] -> q [B, T, H, Dh], k/v [B, T, K, Dh]; q and k rotated at positions."""
    q = apply_rotary(self.q_proj(x_btd), positions_bt, self.rope_theta)
    k = apply_rotary(self.k_proj(x_btd), positions_bt, self.rope_theta)
    v = self.v_proj(x_btd)
    return shard_logical(q, _BTHD), shard_logical(k, _BTKD), shard_logical(v, _BTKD)

  def __call__(self, x_btd: jax.Array, positions_bt: jax.Array,
               mask: jax.Array | None) -> jax.Array:
    """Training forward: x [B, T, D], mask broadcastable to [B, H, T, T] -> [B, T, D]."""
    q, k, v = self.qkv(x_btd, positions_bt)
    o = shard_logical(dot_product_attention(q, k, v, mask), _BTHD)
    return self.o_proj(o)

  def extend(self, x_btd: jax.Array, plan: kv_cache.ExtendPlan, k_bkdw: jax.Array,
             v_bkwd: jax.Array):
    """Chunk step against one layer's cache (keys [B, K, Dh, W], values [B, K, W, Dh])
    -> (y [B, T, D], k, v [B, T, K, Dh]).

    Queries attend to [cache slots ; chunk keys] under `plan`'s masks (`kv_cache.attend`,
    no concatenation); returns the chunk's own keys/values, which the caller writes into
    the stacked cache (`kv_cache.write`), so the cache is never copied.
    """
    q, k, v = self.qkv(x_btd, plan.positions)
    k_bkdw, v_bkwd = shard_logical(k_bkdw, _BKDW), shard_logical(v_bkwd, _BKWD)
    o = shard_logical(kv_cache.attend(q, plan, k_bkdw, v_bkwd, k, v), _BTHD)
    return self.o_proj(o), k, v


class SwiGLU(nnx.Module):
  """down(silu(gate(x)) * up(x)); hidden width F sharded on `mlp`."""

  def __init__(self, d_model: int, mlp_dim: int, *, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.gate = Dense(d_model, mlp_dim, kernel_axes=(axes.EMBED, axes.MLP), **kw)
    self.up = Dense(d_model, mlp_dim, kernel_axes=(axes.EMBED, axes.MLP), **kw)
    self.down = Dense(mlp_dim, d_model, kernel_axes=(axes.MLP, axes.EMBED), **kw)

  def __call__(self, x_btd: jax.Array) -> jax.Array:
    """x [B, T, D] -> [B, T, D]."""
    bt_f = (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_MLP)
    h = jax.nn.silu(shard_logical(self.gate(x_btd), bt_f)) * shard_logical(self.up(x_btd), bt_f)
    return self.down(h)


class DecoderBlock(nnx.Module):
  """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

  def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, head_dim: int,
               mlp_dim: int, rope_theta: float, *, dtype="float32",
               param_dtype="float32", rngs: nnx.Rngs):
    kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.attn_norm = RMSNorm(d_model, **kw)
    self.attn = Attention(d_model, num_heads, num_kv_heads, head_dim, rope_theta, **kw)
    self.mlp_norm = RMSNorm(d_model, **kw)
    self.mlp = SwiGLU(d_model, mlp_dim, **kw)

  def _mlp_residual(self, x_btd):
    x_btd = x_btd + self.mlp(self.mlp_norm(x_btd)).astype(x_btd.dtype)
    return shard_logical(x_btd, _BTD)

  def __call__(self, x_btd: jax.Array, positions_bt: jax.Array,
               mask: jax.Array | None) -> jax.Array:
    """x [B, T, D] -> [B, T, D]."""
    x_btd = x_btd + self.attn(self.attn_norm(x_btd), positions_bt, mask).astype(x_btd.dtype)
    return self._mlp_residual(shard_logical(x_btd, _BTD))

  def extend(self, x_btd, plan, k_bkwd, v_bkwd):
    """Cached chunk step: (x [B, T, D], cache k/v [B, K, W, Dh]) -> (x, chunk k, chunk v)."""
    y, k_btkd, v_btkd = self.attn.extend(self.attn_norm(x_btd), plan, k_bkwd, v_bkwd)
    x_btd = shard_logical(x_btd + y.astype(x_btd.dtype), _BTD)
    return self._mlp_residual(x_btd), k_btkd, v_btkd


class LLM(nnx.Module):
  """Decoder-only LLM over tokens or input embeddings; returns (logits, values).

  Args:
    cfg: the full config (reads `cfg.llm`, `cfg.dtype`, `cfg.param_dtype`).
    rngs: parameter RNG. Build under `sharding.use_mesh(mesh, rules)` (a 1-device mesh
      for unsharded use, or `nnx.use_eager_sharding(False)`).
    remat: key of `REMAT_POLICIES`; default `cfg.llm.get("remat", "none")`.
  """

  def __init__(self, cfg, *, rngs: nnx.Rngs, remat: str | None = None):
    c = cfg.llm
    self.vocab_size, self.d_model = c.vocab_size, c.d_model
    self.num_layers, self.num_kv_heads, self.head_dim = c.num_layers, c.num_kv_heads, c.head_dim
    self.window, self.sink_tokens = c.window, c.sink_tokens
    self.tie_embeddings = bool(c.tie_embeddings)
    self.dtype = inits.as_dtype(cfg.dtype)
    remat = c.get("remat", "none") if remat is None else remat
    if remat not in REMAT_POLICIES:
      raise ValueError(f"remat={remat!r}: expected one of {sorted(REMAT_POLICIES)}")
    self.remat = remat
    kw = dict(dtype=cfg.dtype, param_dtype=cfg.param_dtype)

    self.embedder = Embed(c.vocab_size, c.d_model, rngs=rngs, **kw)

    @nnx.split_rngs(splits=c.num_layers)
    @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: axes.LAYERS})
    def make_blocks(r):
      return DecoderBlock(c.d_model, c.num_heads, c.num_kv_heads, c.head_dim, c.mlp_dim,
                          c.rope_theta, rngs=r, **kw)

    self.blocks = make_blocks(rngs)  # every parameter has a leading [L] axis
    self.final_norm = RMSNorm(c.d_model, rngs=rngs, **kw)
    self.unembed = (None if self.tie_embeddings else inits.param(
        rngs, inits.fan_in_normal(1.0), (c.d_model, c.vocab_size), (axes.EMBED, axes.VOCAB),
        cfg.param_dtype))
    self.value_norm = RMSNorm(c.d_model, rngs=rngs, **kw)
    self.value_head = Dense(c.d_model, 1, kernel_axes=(axes.EMBED, None), use_bias=True,
                            rngs=rngs, **kw)

  # ---- pieces ------------------------------------------------------------------------
  def embed(self, tokens_bt: jax.Array) -> jax.Array:
    """Token ids [B, T] -> input embeddings [B, T, D] (compute dtype)."""
    return shard_logical(self.embedder(tokens_bt), _BTD)

  def _as_embeddings(self, inputs: jax.Array) -> jax.Array:
    if jnp.issubdtype(inputs.dtype, jnp.integer):
      return self.embed(inputs)
    if inputs.shape[-1] != self.d_model:
      raise ValueError(f"input embeddings have width {inputs.shape[-1]}, expected "
                       f"d_model={self.d_model}")
    return shard_logical(inputs.astype(self.dtype), _BTD)

  def heads(self, h_btd: jax.Array):
    """Residual stream [B, T, D] -> (logits [B, T, V] float32, values [B, T] float32)."""
    y = self.final_norm(h_btd)
    if self.tie_embeddings:
      # Embedding rows have unit-variance entries (norm ~ sqrt(D)): rescale so initial
      # logits have unit scale, as T5 does for tied output layers.
      logits = self.embedder.attend(y) * (self.d_model ** -0.5)
    else:
      logits = jnp.einsum("btd,dv->btv", y, self.unembed[...].astype(self.dtype),
                          preferred_element_type=jnp.float32)
    logits = shard_logical(logits.astype(jnp.float32),
                           (axes.ACT_BATCH, axes.ACT_LENGTH, axes.ACT_VOCAB))
    values = self.value_head(self.value_norm(h_btd))[..., 0].astype(jnp.float32)
    return logits, values

  # ---- training forward --------------------------------------------------------------
  def hidden(self, x_btd: jax.Array, positions_bt: jax.Array | None = None,
             segment_ids_bt: jax.Array | None = None, mask: jax.Array | None = None, *,
             use_window: bool = True) -> jax.Array:
    """Input embeddings [B, T, D] -> residual stream after the last block [B, T, D].

    `mask` (bool, broadcastable to [B, H, T, T], True = attend) *replaces* the built
    mask; by default the mask is causal, per segment, and (`use_window`) the sink +
    sliding-window rule of the KV cache. `positions_bt` defaults to 0..T-1.
    """
    b, t = x_btd.shape[:2]
    if positions_bt is None:
      positions_bt = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    if mask is None:
      mask = kv_cache.attention_mask(positions_bt, segment_ids_bt,
                                     self.window if use_window else None, self.sink_tokens)
    graphdef, state = nnx.split(self.blocks)

    def layer(x, layer_state):
      return nnx.merge(graphdef, layer_state)(x, positions_bt, mask)

    policy = REMAT_POLICIES[self.remat]
    if self.remat != "none":
      layer = jax.checkpoint(layer, policy=policy, prevent_cse=False)
    x, _ = jax.lax.scan(lambda x, s: (layer(x, s), None), x_btd, state)
    return x

  def forward_embeddings(self, x_btd: jax.Array, positions_bt: jax.Array | None = None,
                         segment_ids_bt: jax.Array | None = None,
                         mask: jax.Array | None = None, *, use_window: bool = True):
    """Input embeddings [B, T, D] -> (logits [B, T, V] f32, values [B, T] f32)."""
    return self.heads(self.hidden(self._as_embeddings(x_btd), positions_bt,
                                  segment_ids_bt, mask, use_window=use_window))

  def __call__(self, inputs: jax.Array, positions_bt: jax.Array | None = None,
               segment_ids_bt: jax.Array | None = None, mask: jax.Array | None = None, *,
               use_window: bool = True):
    """Tokens [B, T] int or embeddings [B, T, D] -> (logits [B, T, V] f32, values [B, T])."""
    return self.forward_embeddings(self._as_embeddings(inputs), positions_bt,
                                   segment_ids_bt, mask, use_window=use_window)

  # ---- streaming ---------------------------------------------------------------------
  def init_cache(self, batch: int) -> kv_cache.KVCache:
    """Empty ring-buffer cache: k L x [B, K, Dh, W], v L x [B, K, W, Dh] in the compute
    dtype."""
    return kv_cache.init(self.num_layers, batch, self.window, self.num_kv_heads,
                         self.head_dim, self.dtype)

  def layer_states(self) -> tuple:
    """The stacked blocks' state as L per-layer states (static slices), for
    `extend(..., layers=...)`: split once outside a token loop (issue #14)."""
    state = nnx.split(self.blocks)[1]
    return tuple(jax.tree.map(lambda a, l=l: a[l], state) for l in range(self.num_layers))

  def extend(self, cache: kv_cache.KVCache, inputs: jax.Array,
             valid_bt: jax.Array | None = None, layers: tuple | None = None):
    """Appends a chunk: tokens [B, T] or embeddings [B, T, D] -> (logits, values, cache).

    logits [B, T, V] float32, values [B, T] float32. Positions continue from
    `cache.length`. `valid_bt` [B, T] (default all True) marks the real tokens of each
    row; the others are skipped (not attended, not written, `length` not advanced) and
    their outputs are meaningless. Cost is O(T (W + T)) whatever the stream position.

    `layers` (from `layer_states()`, default: none): the layer scan picks each layer's
    weights from these per-layer states with `lax.switch` instead of slicing the stacked
    weights. A token loop (`decode_step._decode_turn`) splits them once before the loop
    and passes them in: inside the scan the stacked weights are sliced by a dynamic
    index, which XLA materialises, a copy of every layer's weights per token (on CPU it
    cost as much as the matmuls; issue #14). Every branch l reads its layer's own cache
    buffers (`KVCache.k[l]`, `.v[l]`) as they are. Same operations, same outputs.
    """
    x = self._as_embeddings(inputs)
    b, t = x.shape[:2]
    if valid_bt is None:
      valid_bt = jnp.ones((b, t), bool)
    plan = kv_cache.plan_extend(cache.slot_pos, cache.length, valid_bt, self.window,
                                self.sink_tokens)
    graphdef, state = nnx.split(self.blocks)
    if layers is not None and len(layers) != self.num_layers:
      raise ValueError(f"layers: {len(layers)} per-layer states, expected num_layers="
                       f"{self.num_layers} (from LLM.layer_states())")
    # Branch l reads its layer's own cache buffers by a static index, as they are (a
    # dynamic index, or a slice of a stacked cache, materialised a copy of the layer's k
    # and v per token: issue #14), and its weights from `layers[l]` when given, else from
    # the stacked weights the scan slices.
    def branch(l):
      def run_layer(x, layer_state, ks, vs):
        s = layer_state if layers is None else layers[l]
        return nnx.merge(graphdef, s).extend(x, plan, ks[l], vs[l])
      return run_layer
    branches = [branch(l) for l in range(self.num_layers)]
    if layers is not None:
      state = None

    def run(l, layer_state, x):
      return jax.lax.switch(l, branches, x, layer_state, cache.k, cache.v)

    # The layers only read the cache (layer l) and return the chunk's own keys/values
    # [L, B, T, K, Dh]; one scatter per layer after the loop writes them. So XLA updates
    # the cache in place: no per-layer scan output stack (ys cannot alias the input), no
    # [cache ; chunk] concatenation, no copy of the cache per token.
    def layer(carry, layer_state):
      x, l = carry
      x, k_new, v_new = run(l, layer_state, x)
      return (x, l + 1), (k_new, v_new)

    (x, _), (k_new, v_new) = jax.lax.scan(layer, (x, jnp.int32(0)), state,
                                          length=self.num_layers)
    k = kv_cache.write(cache.k, k_new, plan.write_idx, keys=True)
    v = kv_cache.write(cache.v, v_new, plan.write_idx, keys=False)
    logits, values = self.heads(x)
    new_cache = kv_cache.constrain(kv_cache.KVCache(k=k, v=v, slot_pos=plan.slot_pos,
                                                    length=plan.length))
    return logits, values, new_cache

  def decode_step(self, cache: kv_cache.KVCache, inputs: jax.Array,
                  valid_b: jax.Array | None = None, layers: tuple | None = None):
    """One token per row: ids [B] or embeddings [B, D] -> (logits [B, V], values [B], cache).

    In a token loop pass `layers=self.layer_states()` split before the loop (`extend`)."""
    valid = None if valid_b is None else valid_b[:, None]
    logits, values, cache = self.extend(cache, inputs[:, None], valid, layers)
    return logits[:, 0], values[:, 0], cache


# ---- sizes ---------------------------------------------------------------------------
def param_count(cfg) -> dict[str, int]:
  """Analytic parameter counts of `LLM(cfg)`: per part, `total` and `non_embedding`."""
  c = cfg.llm
  attn = c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)  # q, k, v, o
  mlp = 3 * c.d_model * c.mlp_dim
  norms = 2 * c.d_model
  per_layer = attn + mlp + norms
  out = {
      "embedding": c.vocab_size * c.d_model,
      "layers": c.num_layers * per_layer,
      "per_layer": per_layer,
      "final_norm": c.d_model,
      "unembed": 0 if c.tie_embeddings else c.d_model * c.vocab_size,
      "value_head": 2 * c.d_model + 1,  # norm scale, kernel, bias
  }
  out["total"] = (out["embedding"] + out["layers"] + out["final_norm"] + out["unembed"]
                  + out["value_head"])
  out["non_embedding"] = out["total"] - out["embedding"]
  return out


def count_params(model: nnx.Module) -> int:
  """Number of scalars in the model's `nnx.Param`s (cross-checks `param_count`)."""
  return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def flops_per_token(cfg, seq_len: int | None = None) -> dict[str, float]:
  """Analytic FLOPs per token (multiply-add = 2 FLOPs).

  `matmul_params` N counts the weights a token is multiplied by (all layer projections,
  the output projection, the value head; not the embedding lookup).
  - `train` = 6 N + 12 L H Dh S_train: forward 2N, backward 4N, plus QK^T and AV over
    the average number of keys a query sees in a training sequence of `seq_len`
    (default `cfg.data.seq_len`) under the sink + window mask.
  - `inference` = 2 N + 4 L H Dh W: a cached step attends over the W cache slots (the
    ring buffer is computed in full), so it is flat in the stream position.
  """
  c = cfg.llm
  n = (c.num_layers * (c.d_model * c.head_dim * (2 * c.num_heads + 2 * c.num_kv_heads)
                       + 3 * c.d_model * c.mlp_dim)
       + c.d_model * c.vocab_size + c.d_model)
  seq_len = int(cfg.data.seq_len if seq_len is None else seq_len)
  # keys seen by query i: min(i + 1, W) under the sink + window rule
  seen = sum(min(i + 1, c.window) for i in range(seq_len)) / seq_len
  per_key = c.num_layers * c.num_heads * c.head_dim
  return {
      "matmul_params": float(n),
      "attention_context_train": float(seen),
      "train": 6.0 * n + 12.0 * per_key * seen,
      "inference": 2.0 * n + 4.0 * per_key * c.window,
  }


def describe(cfg) -> str:
  """One line for summaries: parameter count and FLOPs per token."""
  p, f = param_count(cfg), flops_per_token(cfg)
  return (f"llm: {p['total'] / 1e6:.2f}M params ({p['non_embedding'] / 1e6:.2f}M "
          f"non-embedding), {f['train'] / 1e9:.3f} GFLOP/token train, "
          f"{f['inference'] / 1e9:.3f} GFLOP/token decode")


__all__ = ["Attention", "SwiGLU", "DecoderBlock", "LLM", "REMAT_POLICIES", "param_count",
           "count_params", "flops_per_token", "describe"]
