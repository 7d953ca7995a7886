"""The composite S2ST model of DESIGN §1–2: conformer encoder + adapter + decoder LLM.

Training forward (`__call__`): the whole source audio goes through the encoder (chunk
mask, so it sees what streaming sees) and the adapter; the adapter embeddings replace the
`<audio>` placeholder slots of the interleaved token stream `[A1][Y1]…[AN][YN]` in order;
the LLM returns logits and PPO values for every position.

Streaming pieces (the streaming decoder in `liveinterp.inference` drives them):
  state = model.init_stream(batch)
  logits, values, state = model.read_chunk(state, samples_bc)     # encoder.extend_step →
                                                                  # adapter → LLM prefill
  logits, values, state = model.write_tokens(state, tokens_bt)    # LLM extend / decode
Every piece has fixed shapes, so each jits once; the LLM cache is a ring buffer with sinks
and the encoder keeps a bounded left context, so cost per chunk is flat.

Audio layout contract with `data_pipelines`: the source audio is padded with zeros to a
whole number of chunks (`stream.chunk_ms`), and chunk t contributes
`chunk_frames / adapter.stack` consecutive `<audio>` slots to the token stream.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import axes
from liveinterp.common.config import NUM_SPECIAL_TOKENS
from liveinterp.layers import kv_cache
from liveinterp.layers.linears import Dense
from liveinterp.models import adapter as adapter_lib
from liveinterp.models import conformer, llm as llm_lib


class StreamState(NamedTuple):
  encoder: Any            # ConformerEncoder state (fixed shape)
  cache: kv_cache.KVCache  # LLM ring cache


def slots_per_chunk(cfg) -> int:
  """`<audio>` slots (adapter outputs) contributed by one chunk of source audio."""
  return conformer.stream_geometry(cfg)["chunk_frames"] // int(cfg.adapter.stack)


def splice_audio(token_emb_btd: jax.Array, audio_slot_bt: jax.Array,
                 audio_emb_bad: jax.Array) -> jax.Array:
  """Puts audio embeddings, in order, at the `<audio>` slots of each row.

  token_emb [B, T, D], audio_slot [B, T] bool, audio_emb [B, A, D] -> [B, T, D].
  The k-th slot of a row receives audio_emb[b, k]; slots beyond A receive zeros.
  """
  a = audio_emb_bad.shape[1]
  idx = jnp.cumsum(audio_slot_bt.astype(jnp.int32), axis=1) - 1          # [B, T]
  safe = jnp.clip(idx, 0, max(a - 1, 0))
  gathered = jnp.take_along_axis(audio_emb_bad, safe[..., None], axis=1)  # [B, T, D]
  use = audio_slot_bt & (idx < a)
  return jnp.where(use[..., None], gathered.astype(token_emb_btd.dtype), token_emb_btd)


class S2ST(nnx.Module):
  """Encoder + adapter + LLM (with its value head). `cfg` is the full config."""

  def __init__(self, cfg, *, rngs: nnx.Rngs):
    self.encoder = conformer.ConformerEncoder(cfg, rngs=rngs)
    self.adapter = adapter_lib.Adapter.from_config(cfg, rngs=rngs)
    self.llm = llm_lib.LLM(cfg, rngs=rngs)
    # Auxiliary CTC head on the encoder frames (training only): control + text ids,
    # blank = id 0 (`<pad>`). Its own projection, so the CTC blank phase early in
    # training never squeezes the adapter output the decoder reads.
    self.ctc_ids = NUM_SPECIAL_TOKENS + int(cfg.tokenizer.text_vocab_size)
    self.ctc_head = Dense(int(cfg.encoder.d_model), self.ctc_ids,
                          kernel_axes=(axes.EMBED, axes.VOCAB), use_bias=True,
                          dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)
    self.chunk_samples = self.encoder.chunk_samples
    self.slots_per_chunk = slots_per_chunk(cfg)

  # ---- training ----------------------------------------------------------------------
  def audio_embeddings(self, samples_bn: jax.Array, mask_bn: jax.Array | None = None):
    """Source audio [B, N] (N a multiple of chunk_samples) -> ([B, A, D_llm], mask [B, A])."""
    return self._encode(samples_bn, mask_bn)[2:]

  def _encode(self, samples_bn, mask_bn):
    if samples_bn.shape[1] % self.chunk_samples:
      raise ValueError(f"audio length {samples_bn.shape[1]} is not a whole number of "
                       f"chunks of {self.chunk_samples} samples; pad it first")
    frames, fmask = self.encoder.encode_audio(samples_bn, mask_bn)
    emb, emask = self.adapter(frames, fmask)
    return frames, fmask, emb, emask

  def __call__(self, tokens_bt: jax.Array, audio_bn: jax.Array, audio_slot_bt: jax.Array,
               positions_bt: jax.Array | None = None,
               segment_ids_bt: jax.Array | None = None, audio_mask_bn: jax.Array | None = None,
               *, return_audio: bool = False):
    """Interleaved stream -> (logits [B, T, V] float32, values [B, T] float32).

    With `return_audio`, also the encoder frames and their mask ([B, F, D_enc], [B, F])
    and the audio embeddings [B, A, D_llm], e.g. for the auxiliary CTC and frame losses
    (`ctc_logits`, `embedding_logits`).
    """
    frames, fmask, emb, _ = self._encode(audio_bn, audio_mask_bn)
    x = splice_audio(self.llm.embed(tokens_bt), audio_slot_bt, emb)
    logits, values = self.llm.forward_embeddings(x, positions_bt, segment_ids_bt)
    if return_audio:
      return logits, values, frames, fmask, emb
    return logits, values

  def ctc_logits(self, frames_bfd: jax.Array) -> jax.Array:
    """Encoder frames [B, F, D_enc] -> CTC logits [B, F, ctc_ids] float32 over token
    ids [0, ctc_ids) (control + text; blank = 0)."""
    return self.ctc_head(frames_bfd).astype(jnp.float32)

  def embedding_logits(self, emb_bad: jax.Array) -> jax.Array:
    """Audio embeddings [B, A, D_llm] -> [B, A, vocab] float32 scores against the LLM's
    own (input) embedding table: which token each audio slot looks like to the LLM
    (scaled by 1/sqrt(D) like the LLM's tied output, so scores start O(1))."""
    d = emb_bad.shape[-1]
    return self.llm.embedder.attend(emb_bad).astype(jnp.float32) * (d ** -0.5)

  # ---- streaming ---------------------------------------------------------------------
  def init_stream(self, batch: int) -> StreamState:
    return StreamState(encoder=self.encoder.init_state(batch),
                       cache=self.llm.init_cache(batch))

  def read_chunk(self, state: StreamState, samples_bc: jax.Array,
                 valid_b: jax.Array | None = None):
    """One chunk of audio [B, chunk_samples] -> prefill its audio slots into the LLM.

    Returns (logits [B, V] and values [B] at the chunk's last slot, new state): the
    logits are the distribution of the first token of the turn that follows the chunk.
    """
    frames, enc_state = self.encoder.extend_step(samples_bc, state.encoder)
    emb, _ = self.adapter(frames)
    valid = None if valid_b is None else jnp.broadcast_to(valid_b[:, None], emb.shape[:2])
    logits, values, cache = self.llm.extend(state.cache, emb, valid)
    return logits[:, -1], values[:, -1], StreamState(enc_state, cache)

  def write_tokens(self, state: StreamState, tokens_bt: jax.Array,
                   valid_bt: jax.Array | None = None):
    """Appends written tokens [B, T] -> (logits [B, T, V], values [B, T], new state)."""
    logits, values, cache = self.llm.extend(state.cache, tokens_bt, valid_bt)
    return logits, values, state._replace(cache=cache)


def flops_per_second_of_audio(cfg) -> dict[str, float]:
  """Forward matmul FLOPs per second of source audio (encoder + adapter), analytic."""
  return {"encoder": conformer.flops_per_second(cfg),
          "adapter": adapter_lib.flops_per_second(cfg)}
