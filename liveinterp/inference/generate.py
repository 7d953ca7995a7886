"""Offline greedy generation with the S2ST model (ASR/ST/S2ST prompts, dev evaluation).

`generate(model, prompts)` prefills each row's prompt (tokens with `<audio>` slots filled
by the row's audio) into the LLM ring cache in one `extend`, then decodes greedily with a
`lax.while_loop` until every row has written a stop token or `max_new_tokens`. Rows may
have prompts of different lengths (`valid` masks; the cache advances per row).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from liveinterp.models import s2st


@nnx.jit(static_argnames=("max_new_tokens",))
def _generate(model: s2st.S2ST, tokens_bt, valid_bt, audio_slot_bt, audio_bn, stop_ids,
              max_new_tokens: int):
  b, t = tokens_bt.shape
  emb, _ = model.audio_embeddings(audio_bn)
  x = s2st.splice_audio(model.llm.embed(tokens_bt), audio_slot_bt, emb)
  cache = model.llm.init_cache(b)
  logits, _, cache = model.llm.extend(cache, x, valid_bt)
  last = jnp.sum(valid_bt.astype(jnp.int32), axis=1) - 1
  first = jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]  # [B, V]
  out = jnp.zeros((b, max_new_tokens), jnp.int32)
  # Per-layer weights split once outside the token loop (`LLM.extend`'s `layers`).
  layers = model.llm.layer_states()

  def cond(c):
    i, _, done, _, _ = c
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(c):
    i, lg, done, out, cache = c
    tok = jnp.argmax(lg, axis=-1).astype(jnp.int32)
    tok = jnp.where(done, 0, tok)
    out = out.at[:, i].set(tok)
    now_done = done | jnp.isin(tok, stop_ids)
    lg2, _, cache = model.llm.decode_step(cache, tok, ~done, layers)
    return i + 1, lg2, now_done, out, cache

  init = (jnp.int32(0), first, jnp.zeros((b,), bool), out, cache)
  n, _, _, out, _ = jax.lax.while_loop(cond, body, init)
  return out, n


def generate(model: s2st.S2ST, prompts: Sequence[np.ndarray], audios: Sequence[np.ndarray],
             audio_token: int, stop_ids: Sequence[int], max_new_tokens: int = 64,
             pad_to: int | None = None) -> list[np.ndarray]:
  """Greedy continuations of each prompt (ids up to and including the first stop id).

  prompts[i]: int token ids with `audio_token` slots; audios[i]: int16 [n_slots, S] rows,
  the j-th slot's audio (as in `data_pipelines.stream_format`). Rows are padded to a
  common length (`pad_to` to avoid recompiles across calls).
  """
  if len(prompts) != len(audios):
    raise ValueError(f"{len(prompts)} prompts vs {len(audios)} audio arrays")
  b = len(prompts)
  t = max(len(p) for p in prompts) if pad_to is None else pad_to
  if any(len(p) > t for p in prompts):
    raise ValueError(f"a prompt is longer than pad_to={t}")
  slot_samples = audios[0].shape[1] if audios and audios[0].ndim == 2 else 1
  chunk = model.chunk_samples
  n_audio = max(int(np.asarray(a).size) for a in audios) if audios else 0
  n_audio = max(chunk, -(-n_audio // chunk) * chunk)
  tokens = np.zeros((b, t), np.int32)
  valid = np.zeros((b, t), bool)
  audio = np.zeros((b, n_audio), np.float32)
  for i, (p, a) in enumerate(zip(prompts, audios)):
    tokens[i, :len(p)] = p
    valid[i, :len(p)] = True
    flat = np.asarray(a, np.float32).reshape(-1) / 32768.0
    audio[i, :flat.size] = flat
  del slot_samples
  out, _ = _generate(model, jnp.asarray(tokens), jnp.asarray(valid),
                     jnp.asarray(tokens == audio_token), jnp.asarray(audio),
                     jnp.asarray(np.asarray(stop_ids, np.int32)), max_new_tokens)
  out = np.asarray(out)
  stops = set(int(s) for s in stop_ids)
  results = []
  for row in out:
    ids = []
    for x in row:
      ids.append(int(x))
      if int(x) in stops:
        break
    results.append(np.asarray(ids, np.int32))
  return results
