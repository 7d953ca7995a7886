"""Decoder LLM: shapes/dtypes, float64 reference, ring KV cache == masked full forward,
sharded == unsharded forward+backward, parameter and FLOP counts.

Micro sizes with a short window (W=8, 2 sinks, ring of 6) so streams go far past the
window in a few dozen tokens. Compiled functions are shared between tests (same shapes)
to keep the file well under a minute on 2 cores.
"""

import contextlib
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from configs import micro
from liveinterp.common import mesh as mesh_lib
from liveinterp.common import sharding
from liveinterp.layers import kv_cache
from liveinterp.models import llm
from tests.conftest import skip_if_not_enough_devices

W, SINK = 8, 2
B, T_LONG = 2, 10 * W


def _cfg(**llm_kw):
  c = micro.get_config()
  c.llm.window, c.llm.sink_tokens = W, SINK
  for k, v in llm_kw.items():
    c.llm[k] = v
  return c


def _rules(c):
  return sharding.rules_from_config(c.logical_axis_rules)


@contextlib.contextmanager
def _one_device(c):
  """Unsharded: a 1-device mesh (shard_logical is a no-op there)."""
  one = c.mesh.copy_and_resolve_references()
  one.ici_data, one.ici_fsdp, one.ici_tensor = 1, -1, 1
  m = mesh_lib.create_mesh(one, devices=jax.devices()[:1])
  with sharding.use_mesh(m, _rules(c)):
    yield


def _build(c, seed=0, **kw):
  with _one_device(c):
    return llm.LLM(c, rngs=nnx.Rngs(seed), **kw)


@pytest.fixture(scope="module")
def env():
  """Tied f32 model + the compiled functions and outputs most tests share."""
  c = _cfg()
  model = _build(c)
  toks = jax.random.randint(jax.random.key(1), (B, T_LONG), 0, c.llm.vocab_size)
  fwd = nnx.jit(lambda m, x: m(x))
  fwd_causal = nnx.jit(lambda m, x: m(x, use_window=False))
  ext = nnx.jit(lambda m, cache, x, valid: m.extend(cache, x, valid))

  @nnx.jit
  def decode_all(m, cache, toks_bt):
    def step(cache, tok_b):
      logits, values, cache = m.decode_step(cache, tok_b)
      return cache, (logits, values)
    cache, (lg, v) = jax.lax.scan(step, cache, toks_bt.T)
    return jnp.swapaxes(lg, 0, 1), v.T, cache

  with _one_device(c):
    full = fwd(model, toks)            # sink + window mask (the default)
    causal = fwd_causal(model, toks)   # plain causal
    stream = decode_all(model, model.init_cache(B), toks)
  return dict(c=c, model=model, toks=toks, fwd=fwd, ext=ext, full=full, causal=causal,
              stream=stream)


def _extend_chunks(env, sizes, toks):
  c, model, ext = env["c"], env["model"], env["ext"]
  with _one_device(c):
    cache = model.init_cache(toks.shape[0])
    outs, i = [], 0
    for n in sizes:
      lg, _, cache = ext(model, cache, toks[:, i:i + n], jnp.ones((toks.shape[0], n), bool))
      outs.append(lg)
      i += n
  return jnp.concatenate(outs, axis=1), cache


# ---- shapes, dtypes, paths ----------------------------------------------------------------
def test_shapes_dtypes_and_embedding_input_path(env):
  c, model, toks = env["c"], env["model"], env["toks"]
  logits, values = env["full"]
  assert logits.shape == (B, T_LONG, c.llm.vocab_size) and logits.dtype == jnp.float32
  assert values.shape == (B, T_LONG) and values.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all() and np.isfinite(np.asarray(values)).all()
  # GQA: 4 query heads over 2 kv heads, parameters stacked over layers.
  assert model.blocks.attn.q_proj.kernel.shape == (2, 32, 4, 8)
  assert model.blocks.attn.k_proj.kernel.shape == (2, 32, 2, 8)
  assert model.blocks.attn.q_proj.kernel.get_metadata()["out_sharding"] == (
      "layers", "embed", "heads", "head_dim")
  # Input embeddings (what the composite model splices audio into) == token path.
  with _one_device(c):
    lg2, v2 = nnx.jit(lambda m, x: m.forward_embeddings(m.embed(x)))(model, toks)
  np.testing.assert_allclose(lg2, logits, atol=1e-5)
  np.testing.assert_allclose(v2, values, atol=1e-5)
  with pytest.raises(ValueError, match="d_model=32"):
    model.forward_embeddings(jnp.zeros((1, 3, 16)))
  with pytest.raises(ValueError, match="remat='bogus'"):
    llm.LLM(c, rngs=nnx.Rngs(0), remat="bogus")


def test_bfloat16_compute_switch(env):
  c = _cfg()
  c.dtype = "bfloat16"
  model16 = _build(c)  # same seed, float32 params
  assert model16.blocks.mlp.gate.kernel[...].dtype == jnp.float32
  assert {k.dtype for k in model16.init_cache(1).k} == {jnp.dtype(jnp.bfloat16)}
  with _one_device(c):
    lg, v = nnx.jit(lambda m, x: m(x))(model16, env["toks"][:, :16])
  assert lg.dtype == jnp.float32 and v.dtype == jnp.float32
  ref_lg, ref_v = env["full"]
  np.testing.assert_allclose(lg, ref_lg[:, :16], atol=0.1)
  np.testing.assert_allclose(v, ref_v[:, :16], atol=0.1)
  assert not np.allclose(lg, ref_lg[:, :16], atol=1e-6)  # really computed in bf16


# ---- float64 reference of the whole model --------------------------------------------------
def _np_rms(x, scale):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * scale


def _np_rope(x, pos, theta):
  half = x.shape[-1] // 2
  ang = pos[..., None] * theta ** (-np.arange(half) / half)      # [B, T, half]
  sin, cos = np.sin(ang)[:, :, None], np.cos(ang)[:, :, None]
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def _np_model(model, c, toks, pos, seg):
  """Float64 forward written from the definition, loops over layers/heads/queries."""
  g = lambda v, *i: np.asarray(v[...], np.float64)[i] if i else np.asarray(v[...], np.float64)
  x = g(model.embedder.embedding)[toks]
  b, t, _ = x.shape
  h, kh, dh = c.llm.num_heads, c.llm.num_kv_heads, c.llm.head_dim
  vis = np.zeros((b, t, t), bool)
  for bi in range(b):
    for i in range(t):
      for j in range(i + 1):
        recent = pos[bi, i] - pos[bi, j] < W - SINK
        vis[bi, i, j] = seg[bi, i] == seg[bi, j] and (pos[bi, j] < SINK or recent)
  blk = model.blocks
  for l in range(c.llm.num_layers):
    y = _np_rms(x, g(blk.attn_norm.scale, l))
    q = _np_rope(np.einsum("btd,dhk->bthk", y, g(blk.attn.q_proj.kernel, l)), pos, 1e4)
    k = _np_rope(np.einsum("btd,dhk->bthk", y, g(blk.attn.k_proj.kernel, l)), pos, 1e4)
    v = np.einsum("btd,dhk->bthk", y, g(blk.attn.v_proj.kernel, l))
    o = np.zeros((b, t, h, dh))
    for bi in range(b):
      for hi in range(h):
        kv = hi // (h // kh)
        for i in range(t):
          js = np.nonzero(vis[bi, i])[0]
          s = k[bi, js, kv] @ q[bi, i, hi] / np.sqrt(dh)
          p = np.exp(s - s.max())
          o[bi, i, hi] = (p / p.sum()) @ v[bi, js, kv]
    x = x + np.einsum("bthk,hkd->btd", o, g(blk.attn.o_proj.kernel, l))
    y = _np_rms(x, g(blk.mlp_norm.scale, l))
    a, u = y @ g(blk.mlp.gate.kernel, l), y @ g(blk.mlp.up.kernel, l)
    x = x + (a / (1 + np.exp(-a)) * u) @ g(blk.mlp.down.kernel, l)
  logits = _np_rms(x, g(model.final_norm.scale)) @ g(model.unembed)
  values = (_np_rms(x, g(model.value_norm.scale)) @ g(model.value_head.kernel)
            + g(model.value_head.bias))[..., 0]
  return logits, values


def test_model_matches_float64_reference_with_packing_and_window():
  """Untied GQA model (H=4, K=2), two packed segments per row, T > W: every part of
  the forward (rotary, GQA attention, sink+window+segment mask, SwiGLU, heads)."""
  c = _cfg(tie_embeddings=False)
  model = _build(c, seed=3)
  t = 14
  seg = np.array([[1] * 11 + [2] * 3, [1] * 4 + [2] * 10])
  pos = np.concatenate([np.r_[0:11, 0:3][None], np.r_[0:4, 0:10][None]])
  toks = np.asarray(jax.random.randint(jax.random.key(4), (B, t), 0, c.llm.vocab_size))
  with _one_device(c):
    lg, v = nnx.jit(lambda m, x, p, s: m(x, p, s))(model, toks, pos, seg)
  ref_lg, ref_v = _np_model(model, c, toks, pos.astype(np.float64), seg)
  np.testing.assert_allclose(lg, ref_lg, atol=2e-4, rtol=1e-4)
  np.testing.assert_allclose(v, ref_v, atol=2e-4, rtol=1e-4)


def test_attention_mask_rule_and_slots():
  pos = jnp.arange(20)[None]
  m = np.asarray(kv_cache.attention_mask(pos, None, W, SINK))[0, 0]
  for i in range(20):
    seen = [j for j in range(20) if m[i, j]]
    expect = sorted(set(range(min(SINK, i + 1))) | set(range(max(0, i - (W - SINK) + 1), i + 1)))
    assert seen == expect
    assert len(seen) == min(i + 1, W)
  np.testing.assert_array_equal(kv_cache.slot_of(jnp.arange(12), W, SINK),
                                [0, 1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5])


# ---- KV cache ------------------------------------------------------------------------------
def test_cache_within_window_equals_causal_forward(env):
  """(a) While the stream is at most W long, token-by-token decode and chunked extend
  equal the plain causal full forward."""
  causal_lg, causal_v = env["causal"]
  dec_lg, dec_v, _ = env["stream"]
  np.testing.assert_allclose(dec_lg[:, :W], causal_lg[:, :W], atol=2e-5)
  np.testing.assert_allclose(dec_v[:, :W], causal_v[:, :W], atol=2e-5)
  chunked, cache = _extend_chunks(env, [3, 5], env["toks"][:, :W])
  np.testing.assert_allclose(chunked, causal_lg[:, :W], atol=2e-5)
  np.testing.assert_array_equal(cache.slot_pos, np.tile(np.arange(W), (B, 1)))
  np.testing.assert_array_equal(cache.length, [W, W])


def test_cache_past_window_equals_sink_window_forward(env):
  """(b) Past the window, cached decode (one token, and chunks longer than the ring)
  equals the full forward under the sink + sliding-window mask, and differs from plain
  causal attention."""
  full_lg, full_v = env["full"]
  dec_lg, dec_v, _ = env["stream"]
  np.testing.assert_allclose(dec_lg, full_lg, atol=2e-5)
  np.testing.assert_allclose(dec_v, full_v, atol=2e-5)
  assert np.abs(np.asarray(full_lg[:, W + 2:] - env["causal"][0][:, W + 2:])).max() > 1e-2
  sizes = [5, 11, 3, 5]  # 11 > ring (6): only the chunk's last 6 tokens are written
  chunked, cache = _extend_chunks(env, sizes, env["toks"][:, :sum(sizes)])
  np.testing.assert_allclose(chunked, full_lg[:, :sum(sizes)], atol=2e-5)
  # position p >= 2 lives in slot 2 + (p - 2) % 6: 18 -> 6, 19 -> 7, 20 -> 2, ...
  np.testing.assert_array_equal(cache.slot_pos[0], [0, 1, 20, 21, 22, 23, 18, 19])


def test_long_stream_keeps_shape_and_is_finite(env):
  """(c) 10 x window tokens: fixed cache shape, finite outputs, sinks kept, ring holds
  the last W - sink positions."""
  dec_lg, dec_v, cache = env["stream"]
  fresh = env["model"].init_cache(B)
  assert jax.tree.map(jnp.shape, cache) == jax.tree.map(jnp.shape, fresh)
  assert [k.shape for k in cache.k] == [(B, 2, 8, W)] * 2     # per layer, keys [Dh, W]
  assert [v.shape for v in cache.v] == [(B, 2, W, 8)] * 2     # values [W, Dh]
  assert np.isfinite(np.asarray(dec_lg)).all() and np.isfinite(np.asarray(cache.k)).all()
  np.testing.assert_array_equal(cache.length, [T_LONG, T_LONG])
  held = np.sort(np.asarray(cache.slot_pos[0]))
  np.testing.assert_array_equal(held, list(range(SINK)) + list(range(T_LONG - W + SINK, T_LONG)))


def test_extend_with_ragged_valid_tokens(env):
  """Rows consume different numbers of tokens per chunk (padding anywhere in a chunk):
  each row's outputs at its real tokens equal that row's full forward."""
  toks, full_lg = env["toks"], env["full"][0]
  c, model, ext = env["c"], env["model"], env["ext"]
  # valid patterns per chunk (chunk widths reuse compiled shapes 5 and 11)
  patterns = [np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
              np.array([[1] * 11, [0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1]]),
              np.array([[1, 0, 1, 1, 0], [1, 1, 1, 1, 1]])]
  used = [0, 0]
  with _one_device(c):
    cache = model.init_cache(B)
    for valid in patterns:
      chunk = np.full(valid.shape, 7)  # padding id
      where = []
      for b in range(B):
        idx = np.nonzero(valid[b])[0]
        chunk[b, idx] = toks[b, used[b]:used[b] + len(idx)]
        where.append((idx, np.arange(used[b], used[b] + len(idx))))
        used[b] += len(idx)
      lg, _, cache = ext(model, cache, jnp.asarray(chunk), jnp.asarray(valid, bool))
      for b, (idx, pos) in enumerate(where):
        np.testing.assert_allclose(lg[b, idx], full_lg[b, pos], atol=2e-5)
  np.testing.assert_array_equal(cache.length, used)
  assert used[0] != used[1] and max(used) > W


@pytest.mark.parametrize("t", [3, 1])
def test_attend_equals_attention_over_the_concatenation(t):
  """`kv_cache.attend` (two score blocks, one softmax) == `dot_product_attention` over
  [cache ; chunk] with the concatenated mask: GQA, random masks, a query row that sees
  no key at all (zeros, not NaN), a bfloat16 cache under float32 queries. The
  heads-major cache (keys [Dh, W], values [W, Dh]) is read in its own layout, never
  transposed (issue #14)."""
  from liveinterp.layers.attention import dot_product_attention
  b, w, h, kh, d = 2, 5, 4, 2, 8
  ks = jax.random.split(jax.random.key(3), 7)
  q = jax.random.normal(ks[0], (b, t, h, d))
  kc, vc = (jax.random.normal(k, (b, w, kh, d)).astype(jnp.bfloat16) for k in ks[1:3])
  kn, vn = (jax.random.normal(k, (b, t, kh, d)) for k in ks[3:5])
  cache_mask = jax.random.bernoulli(ks[5], 0.6, (b, 1, t, w))
  new_mask = jax.random.bernoulli(ks[6], 0.6, (b, 1, t, t))
  cache_mask = cache_mask.at[1, 0, t - 1].set(False)
  new_mask = new_mask.at[1, 0, t - 1].set(False)  # row 1, last query: nothing visible
  plan = kv_cache.ExtendPlan(positions=None, write_idx=None, cache_mask=cache_mask,
                             new_mask=new_mask, slot_pos=None, length=None)
  # the cache is heads-major: keys [B, K, Dh, W], values [B, K, W, Dh]
  kc_h, vc_h = jnp.transpose(kc, (0, 2, 3, 1)), jnp.swapaxes(vc, 1, 2)
  got = kv_cache.attend(q, plan, kc_h, vc_h, kn, vn)
  ref = dot_product_attention(
      q, jnp.concatenate([kc.astype(q.dtype), kn], axis=1),
      jnp.concatenate([vc.astype(q.dtype), vn], axis=1),
      jnp.concatenate([cache_mask, new_mask], axis=-1))
  np.testing.assert_allclose(got, ref, atol=1e-6, rtol=1e-5)
  np.testing.assert_array_equal(got[1, t - 1], 0.0)
  # the cache is read in its own layout: no transpose of it in the compiled program
  hlo = jax.jit(kv_cache.attend).lower(q, plan, kc_h, vc_h, kn, vn).compile().as_text()
  shapes = (f"[{b},{kh},{w},{d}]", f"[{b},{kh},{d},{w}]")
  assert not [ln for ln in hlo.splitlines()
              if " transpose(" in ln and any(s in ln for s in shapes)]
  with pytest.raises(ValueError, match="3 query heads"):
    kv_cache.attend(q[:, :, :3], plan, kc_h, vc_h, kn, vn)


def test_split_layers_decode_equals_the_stacked_scan(env):
  """`decode_step(..., layers=layer_states())` (the streaming decoder's path) computes
  what the scan over the stacked layers computes; a wrong layer count is refused."""
  c, model, toks = env["c"], env["model"], env["toks"]

  @nnx.jit
  def decode_split(m, cache, toks_bt):
    layers = m.layer_states()

    def step(cache, tok_b):
      logits, values, cache = m.decode_step(cache, tok_b, layers=layers)
      return cache, (logits, values)
    cache, (lg, v) = jax.lax.scan(step, cache, toks_bt.T)
    return jnp.swapaxes(lg, 0, 1), v.T, cache

  with _one_device(c):
    got = decode_split(model, model.init_cache(B), toks)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(env["stream"])):
      np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="1 per-layer states, expected num_layers=2"):
      model.decode_step(model.init_cache(B), toks[:, 0], layers=model.layer_states()[:1])


def _while_bodies(hlo: str) -> dict[str, list[str]]:
  """Compiled HLO text -> {name: instruction lines} of every while body and conditional
  branch (the code that runs once per loop iteration)."""
  names = set(re.findall(r"body=%([\w.\-]+)", hlo))
  for group in re.findall(r"branch_computations=\{([^}]*)\}", hlo):
    names |= {n.strip().lstrip("%") for n in group.split(",")}
  out, name = {}, None
  for ln in hlo.splitlines():
    head = re.match(r"^%([\w.\-]+) ", ln)
    if head and ln.rstrip().endswith("{"):
      name = head.group(1) if head.group(1) in names else None
      if name:
        out[name] = []
    elif ln.startswith("}"):
      name = None
    elif name:
      out[name].append(ln)
  return out


_VIEW_OPS = ("parameter", "get-tuple-element", "bitcast", "tuple", "while", "conditional",
             "call", "dot")


# This test reads the compiled program, so it compiles as users do: XLA's optimizations
# and XLA:CPU's default fusion emitters, not the suite's faster-compiling settings
# (tests/conftest.py).
PRODUCTION_XLA = {"xla_cpu_use_fusion_emitters": True}


@pytest.mark.xla_optimized
@pytest.mark.parametrize("split_layers", [False, True])
def test_decode_loop_does_not_copy_the_cache(env, split_layers):
  """Compiled token-by-token loop with a donated cache: no copy (or transpose) of a
  layer's cache buffer [B, K, W, Dh], and no [cache ; chunk] concatenation (the
  per-token cost is the attention read, not cache copies; issue #14), and no layer's cache
  [B, K, W, Dh] materialised in a loop body (a slice feeding the layer). With the layers
  split before the loop (`layer_states()`, as the streaming decoder does), nothing in
  any loop body produces a layer-weight-sized array either: the scan over stacked
  weights sliced (copied) every layer's weights once per token."""
  c, model = env["c"], env["model"]
  graphdef, params = nnx.split(model)

  def loop(params, cache, tok):
    m = nnx.merge(graphdef, params)
    layers = m.layer_states() if split_layers else None

    def body(_, carry):
      cache, tok = carry
      logits, _, cache = m.decode_step(cache, tok, layers=layers)
      return cache, jnp.argmax(logits, -1).astype(jnp.int32)
    return jax.lax.fori_loop(0, 4, body, (cache, tok))

  with _one_device(c):
    cache = model.init_cache(B)
    hlo = jax.jit(loop, donate_argnums=(1,)).lower(
        params, cache, jnp.zeros((B,), jnp.int32)).compile(PRODUCTION_XLA).as_text()
  kh, d = c.llm.num_kv_heads, c.llm.head_dim
  shapes = (f"[{B},{kh},{W},{d}]", f"[{B},{kh},{W + 1},{d}]")
  bad = [ln.strip() for ln in hlo.splitlines()
         if (" copy(" in ln or " concatenate(" in ln or " transpose(" in ln)
         and any(sh in ln.split("=", 1)[1].split("(", 1)[0] for sh in shapes)]
  assert not bad, "\n".join(bad)
  # k and v of every layer: one in-place scatter each
  assert sum(" scatter(" in ln and shapes[0] in ln for ln in hlo.splitlines()) == (
      2 * c.llm.num_layers)
  bodies = _while_bodies(hlo)
  assert bodies
  # No layer's cache [(1,) B, K, W, Dh] materialised per layer per token (a dynamic slice of
  # the stacked cache passed to the layer switch was: 2 per layer per token, issue #14).
  sliced = [ln.strip()[:160] for lines in bodies.values() for ln in lines
            if (op := re.match(r"\s*(?:ROOT )?%\S+ = (\S+) ([\w\-]+)\(", ln))
            and op.group(2) not in _VIEW_OPS
            and "scatter" not in ln.split("=", 1)[0]  # the in-place writes (counted above)
            and op.group(1).split("{")[0].endswith((shapes[0], "[1," + shapes[0][1:]))]
  assert not sliced, "\n".join(sliced)
  if not split_layers:
    return
  # Every per-layer kernel shape, and its 2-D forms as the dots read it.
  weights = set()
  for a in jax.tree.leaves(nnx.state(model.blocks, nnx.Param)):
    s = a.shape[1:]
    if len(s) >= 2:
      weights |= {s} | {(math.prod(s[:i]), math.prod(s[i:])) for i in range(1, len(s))}
  weights = {"f32[" + ",".join(map(str, s)) + "]" for s in weights}
  copied = [ln.strip()[:160] for lines in bodies.values() for ln in lines
            if (op := re.match(r"\s*(?:ROOT )?%\S+ = (\S+) ([\w\-]+)\(", ln))
            and op.group(2) not in _VIEW_OPS and op.group(1).split("{")[0] in weights]
  assert not copied, "\n".join(copied)


# ---- sharding ------------------------------------------------------------------------------
def _loss(model, toks, seg, ret):
  logits, values = model(toks, None, seg)
  logp = jax.nn.log_softmax(logits[:, :-1])
  ce = -jnp.take_along_axis(logp, toks[:, 1:, None], axis=-1).mean()
  return ce + 0.5 * jnp.mean((values - ret) ** 2)


@skip_if_not_enough_devices(8)
def test_sharded_forward_backward_equals_unsharded_and_kernels_are_sharded(env):
  """(2, 2, 2) mesh with remat='full' vs 1 device without remat: same loss and grads
  and same cached extend; embedding / MLP / attention kernels and the cache carry the
  specs the rules give."""
  c = _cfg()
  c.mesh.ici_data, c.mesh.ici_fsdp, c.mesh.ici_tensor = 2, 2, 2
  toks = jax.random.randint(jax.random.key(5), (4, 16), 0, c.llm.vocab_size)
  seg = jnp.asarray(np.repeat([[1, 2]], 4, 0).repeat(8, 1))
  ret = jax.random.normal(jax.random.key(6), (4, 16))
  step = nnx.jit(nnx.value_and_grad(_loss))
  ext = nnx.jit(lambda m, cache, x: m.extend(cache, x))

  def two_chunks(model):
    cache = model.init_cache(4)
    lg1, _, cache = ext(model, cache, toks[:, :5])
    lg2, _, cache = ext(model, cache, toks[:, 5:10])
    return np.asarray(jnp.concatenate([lg1, lg2], 1)), cache

  ref_model = env["model"]  # same config and seed, built on one device
  with _one_device(c):
    ref_loss, ref_g = step(ref_model, toks, seg, ret)
    ref_ext, _ = two_chunks(ref_model)

  mesh = mesh_lib.create_mesh(c.mesh)
  with sharding.use_mesh(mesh, _rules(c)):
    model = llm.LLM(c, rngs=nnx.Rngs(0), remat="full")
    emb = model.embedder.embedding[...]
    gate = model.blocks.mlp.gate.kernel[...]
    down = model.blocks.mlp.down.kernel[...]
    q = model.blocks.attn.q_proj.kernel[...]
    assert emb.sharding.spec == P("tensor", "fsdp")
    assert gate.sharding.spec == P(None, "fsdp", "tensor")
    assert down.sharding.spec == P(None, "tensor", "fsdp")
    assert tuple(q.sharding.spec)[:3] == (None, "fsdp", "tensor")
    assert gate.addressable_shards[0].data.shape == (2, 16, 32)
    x_sh = sharding.data_sharding(mesh, 2)
    loss, g = step(model, jax.device_put(toks, x_sh), jax.device_put(seg, x_sh),
                   jax.device_put(ret, x_sh))
    got_ext, cache = two_chunks(model)  # streaming on the mesh too
    assert (tuple(cache.k[0].sharding.spec) + (None,) * 4)[:4] == (
        ("data", "fsdp"), "tensor", None, None)
  np.testing.assert_allclose(got_ext, ref_ext, atol=2e-5)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  flat, ref_flat = jax.tree.leaves(g), jax.tree.leaves(ref_g)
  assert len(flat) == len(ref_flat)
  for a, r in zip(flat, ref_flat):
    np.testing.assert_allclose(np.asarray(a), np.asarray(r), atol=2e-5, rtol=1e-4)
  assert np.abs(np.asarray(ref_g.value_head.kernel[...])).max() > 0


# ---- sizes ---------------------------------------------------------------------------------
@pytest.mark.parametrize("tie", [True, False])
def test_param_count_matches_model_and_flops(tie):
  c = _cfg(tie_embeddings=tie)
  model = nnx.eval_shape(lambda: llm.LLM(c, rngs=nnx.Rngs(0)))  # abstract: no compute
  counts = llm.param_count(c)
  assert counts["total"] == llm.count_params(model)
  assert counts["unembed"] == (0 if tie else 32 * 640)
  f = llm.flops_per_token(c, seq_len=16)
  # micro: per layer q,k,v,o = 32*8*(8+4) and SwiGLU 3*32*64; + output 32*640 + value 32
  n = 2 * (32 * 8 * 12 + 3 * 32 * 64) + 32 * 640 + 32
  assert f["matmul_params"] == n
  seen = (sum(range(1, W + 1)) + (16 - W) * W) / 16
  assert f["train"] == pytest.approx(6 * n + 12 * 2 * 4 * 8 * seen)
  assert f["inference"] == pytest.approx(2 * n + 4 * 2 * 4 * 8 * W)
  # decode cost is flat: does not depend on any sequence length
  assert llm.flops_per_token(c, seq_len=4096)["inference"] == f["inference"]
  assert "params" in llm.describe(c)
