"""The decoder's pure, jitted per-chunk functions and the types they carry.

`DecoderState` (what a batch of streams carries between chunks), `StepOutputs` (what one
chunk produced), `DecodeSpec` (everything static, hashable: equal specs share compiled
code), and `_init_pure` / `_step_pure` / `_scan_pure`, jitted at module level. The
algorithm (steps 1-5, `<eot>` deferral) is described in `liveinterp.inference.decoder`;
`StreamingDecoder` there is the public API around these functions.

Voice span (step 4, issue #10). The turn written after chunk N translates source words
that became ready since the previous turn, and those words were spoken a little earlier
than chunk N: a word's turn lags the chunk holding the end of its source word by the
model's read lag. The turn is therefore voiced from the source audio of *those* chunks:
the speaker embedding is `SpeakerEncoder.embed_audio` of a fixed window of
`speaker_samples` source samples that ends `d = DecodeSpec.voice_lag_chunks` chunks
before the end of chunk N (`stream.voice_lag_chunks`; d = 0 is the window ending at
chunk N, the rule before the span: bit-exact, see tests/unit/inference/
test_voice_span.py). The state keeps the last `speaker_samples + d * chunk_samples`
source samples (oldest first, a shift buffer of fixed shape) and the window is a
`dynamic_slice` of it, so one `embed_audio` call of the same length as before runs per
speaking chunk: cost and memory per chunk stay flat, nothing recompiles.

Stream start: while a row has heard fewer than `speaker_samples + d * chunk_samples`
samples, its lag shrinks to what the buffer holds beyond one full window
(`lag = clip(fill - speaker_samples, 0, d * chunk_samples)` samples), so the window
always starts at the row's first real sample instead of covering silence; with fewer
than `speaker_samples` samples heard it is the whole stream so far (as with d = 0).
Each row's lag depends only on its own fill (rows are independent; rows without a chunk
in a step keep their buffer and fill).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from liveinterp.common import token_layout as layout_lib
from liveinterp.common.token_layout import EOT, PAD
from liveinterp.inference import grammar as grammar_lib
from liveinterp.inference import sampling
from liveinterp.inference import speech_decode
from liveinterp.inference.stream_types import DecoderState, StepOutputs, select_rows
from liveinterp.models import s2st as s2st_lib



# ---- state and outputs: `DecoderState`, `StepOutputs` (liveinterp.inference.stream_types,
# imported above, flax-free so the host side and the exported decoder share them).


class _Models(nnx.Module):
  """The three networks the decoder runs, split/merged as one graph."""

  def __init__(self, s2st, codec, speaker):
    self.s2st = s2st
    self.codec = codec
    self.speaker = speaker


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """Everything static about a decoder (hashable): equal specs share compiled code."""
  graphdef: Any
  layout: layout_lib.TokenLayout
  grammar: grammar_lib.TurnGrammar | None
  max_turn_tokens: int
  temperature: float
  top_p: float
  return_logits: bool
  chunk_samples: int
  chunk_ms: int
  hop: int
  num_codebooks: int
  speaker_samples: int
  codec_blocks: tuple = ()
  decode_speech: bool = True
  codec_tail: str = "masked"  # "masked" | "frames": how `speech_decode` runs ragged rows
  voice_lag_chunks: int = 0   # d: the speaker window ends d chunks back (module docstring)
  codec_rows: int = 0         # 0: codec on every row; k: on speaking rows, k at a time
  turn_rows: tuple | str = ()  # e.g. (8, 4) or "auto": the turn's token loop compacted
                               # to k rows once no more are writing (`_decode_turn`)

  @property
  def max_frames(self) -> int:
    return self.max_turn_tokens // self.num_codebooks

  @property
  def speaker_buffer_samples(self) -> int:
    """L = speaker_samples + voice_lag_chunks * chunk_samples: source samples kept."""
    return self.speaker_samples + self.voice_lag_chunks * self.chunk_samples



# ---- pure functions (jitted at module level: decoders with equal specs share them) -------
def _init_pure(spec: DecodeSpec, params, batch: int, rng, prompt: tuple = ()
               ) -> DecoderState:
  """Fresh state; the LLM cache already holds `prompt` (positions 0..P-1) in every row."""
  m = nnx.merge(spec.graphdef, params)
  model_state = m.s2st.init_stream(batch)
  if prompt:
    ids = jnp.broadcast_to(jnp.asarray(prompt, jnp.int32)[None], (batch, len(prompt)))
    _, _, model_state = m.s2st.write_tokens(model_state, ids)
  return DecoderState(
      model=model_state, codec=m.codec.init_decode_state(batch),
      speaker_audio=jnp.zeros((batch, spec.speaker_buffer_samples), jnp.float32),
      speaker_fill=jnp.zeros((batch,), jnp.int32),
      speaker=jnp.zeros((batch, m.speaker.embed_dim), jnp.float32),
      pending_eot=jnp.zeros((batch,), bool), chunks=jnp.zeros((batch,), jnp.int32), rng=rng)


def _step_pure(spec: DecodeSpec, params, state: DecoderState, audio_bc, valid_b, forced,
               forced_n):
  return _step_models(spec, nnx.merge(spec.graphdef, params), state, audio_bc, valid_b,
                      forced, forced_n)


_COUNTS = ("n_tokens", "n_text", "n_speech", "n_samples")


def _scan_pure(spec: DecodeSpec, params, state, audio_nbc, valid_nb, forced_nbm,
               forced_n_nb, keep_outputs: bool):
  m = nnx.merge(spec.graphdef, params)

  def body(st, xs):
    st, out = _step_models(spec, m, st, *xs)
    if not keep_outputs:
      out = {k: getattr(out, k) for k in _COUNTS}
    return st, out
  return jax.lax.scan(body, state, (audio_nbc, valid_nb, forced_nbm, forced_n_nb))


_init_jit = jax.jit(_init_pure, static_argnums=(0, 2, 4))
_step_donate = jax.jit(_step_pure, static_argnums=(0,), donate_argnums=(2,))
_step_keep = jax.jit(_step_pure, static_argnums=(0,))
_scan_donate = jax.jit(_scan_pure, static_argnums=(0, 7), donate_argnums=(2,))
_scan_keep = jax.jit(_scan_pure, static_argnums=(0, 7))


def _split_rng(rng, valid_b):
  """(the state's next key, this step's turn key) from the state's `rng`: one key for the
  whole batch, or one per row (`[B]`, e.g. the server's sessions): then a row's keys
  depend only on its own key, and a row without a chunk this step keeps its key."""
  if rng.ndim == 0:
    return jax.random.split(rng)
  keys = jax.vmap(jax.random.split)(rng)                                 # [B, 2]
  return jnp.where(valid_b, keys[:, 0], rng), keys[:, 1]


def _fold_in(key, i):
  """`fold_in(key, i)` of one key or of each row's key (`[B]`)."""
  if key.ndim == 0:
    return jax.random.fold_in(key, i)
  return jax.vmap(jax.random.fold_in, (0, None))(key, i)


def _step_models(spec: DecodeSpec, m: _Models, st: DecoderState, audio_bc, valid_b,
                 forced, forced_n):
  """One chunk for every row (module docstring, steps 1-5)."""
  s2 = m.s2st
  b = audio_bc.shape[0]
  key, turn_key = _split_rng(st.rng, valid_b)

  # 1. encoder -> adapter -> one prefill of [pending <eot>, audio slots].
  frames, enc = s2.encoder.extend_step(audio_bc, st.model.encoder)
  enc = select_rows(valid_b, enc, st.model.encoder)
  audio_emb, _ = s2.adapter(frames)                                     # [B, S, D]
  eot_emb = s2.llm.embed(jnp.full((b, 1), EOT, jnp.int32))
  x = jnp.concatenate([eot_emb.astype(audio_emb.dtype), audio_emb], axis=1)
  write = jnp.concatenate([(st.pending_eot & valid_b)[:, None],
                           jnp.broadcast_to(valid_b[:, None], audio_emb.shape[:2])], axis=1)
  # The LLM's weights split per layer once per chunk, outside the turn's token loop
  # (`LLM.extend`'s `layers`: a scan over the stacked weights copies them every token).
  layers = s2.llm.layer_states()
  logits, values, cache = s2.llm.extend(st.model.cache, x, write, layers)

  # 2.-3. the turn.
  turn, cache = _decode_turn(spec, s2.llm, layers, cache, logits[:, -1], values[:, -1],
                             valid_b, turn_key, forced, forced_n)

  # 4. speaker embedding from the rolling source buffer (only needed when someone speaks):
  # the window of S samples ending `lag` samples before the newest (module docstring).
  n_buf, n_win = spec.speaker_buffer_samples, spec.speaker_samples
  spk_audio = jnp.concatenate([st.speaker_audio, audio_bc.astype(jnp.float32)],
                              axis=1)[:, -n_buf:]
  spk_audio = jnp.where(valid_b[:, None], spk_audio, st.speaker_audio)
  fill = jnp.where(valid_b, jnp.minimum(st.speaker_fill + spec.chunk_samples, n_buf),
                   st.speaker_fill)
  n_frames = turn["n_speech"] // spec.num_codebooks

  def embed(rows=None):
    """Speaker embeddings `[k, E]` of rows `rows` (`[k]`; every row when None)."""
    buf, fill_k = (spk_audio, fill) if rows is None else (spk_audio[rows], fill[rows])
    if n_buf == n_win:  # d = 0: the whole buffer (the rule before the voice span)
      win, start = buf, jnp.zeros_like(fill_k)
    else:
      lag = jnp.clip(fill_k - n_win, 0, n_buf - n_win)                   # [k] samples
      start = n_buf - n_win - lag                                        # [k]
      win = jax.vmap(lambda a, s: jax.lax.dynamic_slice_in_dim(a, s, n_win))(
          buf, start)                                                    # [k, S]
    # Window sample j is buffer sample start + j: real when it is among the last `fill`.
    mask = (start[:, None] + jnp.arange(n_win)[None, :]) >= (n_buf - fill_k)[:, None]
    return m.speaker.embed_audio(win, mask).astype(jnp.float32)
  if spec.decode_speech:
    # 5. codec on the turn's speech frames (each row's tails advance only on its real
    # frames), with the speaker embedding of the rows that speak; a row that does not
    # speak this chunk keeps its last one (`speech_decode`).
    audio_out, codec_state, spk = speech_decode.decode_speech(
        spec, m.codec, st.codec, turn["speech"], n_frames, embed, st.speaker)
    n_samples = n_frames * spec.hop
  else:  # text only: no speaker embedding, no codec (silent audio, 0 samples)
    spk, codec_state = st.speaker, st.codec
    audio_out = jnp.zeros((b, spec.max_frames * spec.hop), jnp.float32)
    n_samples = jnp.zeros((b,), jnp.int32)
  chunks = st.chunks + valid_b.astype(jnp.int32)
  new_state = DecoderState(
      model=s2st_lib.StreamState(enc, cache), codec=codec_state, speaker_audio=spk_audio,
      speaker_fill=fill, speaker=spk, pending_eot=st.pending_eot | valid_b, chunks=chunks,
      rng=key)
  out = StepOutputs(
      valid=valid_b, chunk_index=chunks - 1, end_ms=chunks * spec.chunk_ms,
      tokens=turn["tokens"], n_tokens=turn["n_tokens"], text=turn["text"],
      n_text=turn["n_text"], src=turn["src"], n_src=turn["n_src"], speech=turn["speech"],
      n_speech=turn["n_speech"], audio=audio_out, n_samples=n_samples,
      logprob_raw=turn["logprob_raw"], logprob_sampled=turn["logprob_sampled"],
      values=turn["values"], speaker=spk,
      logits=turn.get("logits"))
  return new_state, out


def _choose(spec: DecodeSpec, i, logits_bv, gram: grammar_lib.GrammarState, key, forced,
            forced_n, rows=None, batch=None):
  """Token i of the turn: forced where `forced_n >= 0`, else sampled under the mask.

  `rows` / `batch`: the logits are rows `rows` of a batch of `batch` (a compacted turn
  phase, `_decode_turn`); one key for the whole batch then draws the whole batch's noise
  and uses these rows', so every row gets the token it gets in the full batch.
  Returns (token [B] int32, its log-probability [B] under the distribution sampled from).
  """
  m = spec.max_turn_tokens
  b, v = logits_bv.shape
  if spec.grammar is not None:
    mask = spec.grammar.mask(gram, i)
  else:
    mask = grammar_lib.budget_mask(b, v, i, m)
  tok, logp_bv = sampling.sample_with_log_probs(
      logits_bv, _fold_in(key, i), temperature=spec.temperature, top_p=spec.top_p,
      mask_bv=mask, rows=rows, batch=batch)
  f = jax.lax.dynamic_index_in_dim(forced, jnp.minimum(i, m - 1), axis=1, keepdims=False)
  f = jnp.where((i < forced_n) & (i < m - 1), f, EOT)
  tok = jnp.where(forced_n >= 0, f, tok).astype(jnp.int32)
  return tok, sampling.log_prob_of(logp_bv, tok)


def turn_sizes(turn_rows: tuple | str, batch: int) -> tuple[int, ...]:
  """The compacted batch sizes of the turn loop for `batch` rows: the given sizes below
  the batch, or with "auto" the halvings B/2, B/4, ..., 1 (16 trained streams of the
  test split, 1 core, `benchmarks/stream_replay.py`: mean step 1,570 ms without, 1,240 ms
  with, 657 ms with the codec on the speaking rows too; issue #15)."""
  if turn_rows == "auto":
    sizes, k = [], batch // 2
    while k >= 1:
      sizes.append(k)
      k //= 2
    return tuple(sizes)
  return tuple(k for k in turn_rows if k < batch)


def _decode_turn(spec: DecodeSpec, llm, layers, cache, logits_bv, value_b, valid_b, key,
                 forced, forced_n):
  """`lax.while_loop` over the turn's tokens -> (buffers dict, cache); `layers` is
  `llm.layer_states()`, split before the loop.

  Row compaction (`spec.turn_rows`, e.g. (8, 4)): once no more than k rows are still in
  the turn, those rows (and enough finished ones to make k) are gathered with their
  cache into a batch of k and the loop goes on over k rows only; their cache rows are
  written back when it ends. Each token costs about the same per row at any batch size
  here (reading each row's KV cache dominates), so a chunk where one row speaks 150
  tokens and the others 10 costs ~150 token steps of k rows instead of B. Buffers stay
  full-batch (rows written by index); sampling with one key draws the full batch's
  noise, so every row's tokens, log-probabilities and values are those of the
  uncompacted loop (tests/unit/inference/test_turn_rows.py).
  """
  b, m = logits_bv.shape[0], spec.max_turn_tokens
  cls_v = jnp.asarray(spec.layout.id_classes())
  zi = jnp.zeros((b, m), jnp.int32)
  zf = jnp.zeros((b, m), jnp.float32)
  zc = jnp.zeros((b,), jnp.int32)
  bufs = dict(tokens=zi, text=zi, src=zi, speech=zi, logprob_raw=zf, logprob_sampled=zf,
              values=zf, n_tokens=zc, n_text=zc, n_src=zc, n_speech=zc)
  if spec.return_logits:
    bufs["logits"] = jnp.zeros((b, m, logits_bv.shape[-1]), jnp.float32)

  def record(rows, i, tok, lp_sampled, logits, value, gram, done, bufs):
    """Appends token i of the still-active rows to the buffers (rows `rows` of them);
    advances the grammar. Finished rows write PAD / 0 (the buffers' initial values)."""
    act = ~done
    cls = cls_v[tok]
    bufs = dict(bufs)
    bufs["tokens"] = bufs["tokens"].at[rows, i].set(jnp.where(act, tok, PAD))
    bufs["logprob_raw"] = bufs["logprob_raw"].at[rows, i].set(
        jnp.where(act, sampling.token_log_probs(logits, tok), 0.0))
    bufs["logprob_sampled"] = bufs["logprob_sampled"].at[rows, i].set(
        jnp.where(act, lp_sampled, 0.0))
    bufs["values"] = bufs["values"].at[rows, i].set(jnp.where(act, value, 0.0))
    if "logits" in bufs:
      bufs["logits"] = bufs["logits"].at[rows, i].set(
          jnp.where(act[:, None], logits.astype(jnp.float32), 0.0))
    bufs["n_tokens"] = bufs["n_tokens"].at[rows].add(act.astype(jnp.int32))
    for name, hit in (
        ("text", (cls == layout_lib.C_WORD) & (gram.phase == grammar_lib.TEXT_PHASE)),
        ("src", (cls == layout_lib.C_WORD) & (gram.phase == grammar_lib.SRC_PHASE)),
        ("speech", (cls == layout_lib.C_SPEECH) & (gram.phase == grammar_lib.SPEECH_PHASE))):
      hit = hit & act
      n = bufs["n_" + name][rows]
      idx = jnp.where(hit, n, m)                         # m: out of range -> dropped
      bufs[name] = bufs[name].at[rows, idx].set(tok, mode="drop")
      bufs["n_" + name] = bufs["n_" + name].at[rows].add(hit.astype(jnp.int32))
    new_gram = grammar_lib.grammar_advance(gram, tok, spec.layout)
    new_gram = grammar_lib.GrammarState(*(jnp.where(act, a, o) for a, o in zip(new_gram, gram)))
    return new_gram, done | (act & (tok == EOT)), bufs

  def phase(rows, sizes, ctx, carry):
    """The loop over the rows `rows` (full-batch indices; all B at first) while more than
    the next size's rows are active, then the compacted rest (`sizes[1:]`)."""
    forced_r, forced_n_r, key_r = ctx
    n = rows.shape[0]
    sub = dict(rows=rows, batch=b) if n < b and key_r.ndim == 0 else {}
    nxt = sizes[0] if sizes else 0

    def cond(c):
      i, _, _, _, done, _ = c
      return (i < m) & (jnp.sum(~done) > nxt)

    def body(c):
      i, cache, tok, gram, done, bufs = c
      # Rows still in the turn write their last (non-<eot>) token and get new logits.
      lg, val, cache = llm.extend(cache, tok[:, None], (~done)[:, None], layers)
      new_tok, lp = _choose(spec, i, lg[:, 0], gram, key_r, forced_r, forced_n_r, **sub)
      gram, done, bufs = record(rows, i, new_tok, lp, lg[:, 0], val[:, 0], gram, done, bufs)
      return i + 1, cache, new_tok, gram, done, bufs

    carry = jax.lax.while_loop(cond, body, carry)
    if not sizes:
      return carry

    def compact(c):
      i, cache, tok, gram, done, bufs = c
      sel = jnp.argsort(done, stable=True)[:nxt].astype(jnp.int32)  # active rows first
      take = lambda x: x[sel]  # noqa: E731
      ctx_s = (forced_r[sel], forced_n_r[sel], key_r if key_r.ndim == 0 else key_r[sel])
      i, sub_cache, tok_s, gram_s, done_s, bufs = phase(
          rows[sel], sizes[1:], ctx_s,
          (i, jax.tree.map(take, cache), tok[sel], jax.tree.map(take, gram), done[sel],
           bufs))
      put = lambda full, x: full.at[sel].set(x)  # noqa: E731
      return (i, jax.tree.map(put, cache, sub_cache), tok.at[sel].set(tok_s),
              jax.tree.map(put, gram, gram_s), done.at[sel].set(done_s), bufs)

    i, _, _, _, done, _ = carry
    return jax.lax.cond((i < m) & jnp.any(~done), compact, lambda c: c, carry)

  full = jnp.arange(b)
  gram = grammar_lib.grammar_init(b)
  done = ~valid_b
  tok, lp = _choose(spec, jnp.int32(0), logits_bv, gram, key, forced, forced_n)
  gram, done, bufs = record(full, 0, tok, lp, logits_bv, value_b, gram, done, bufs)
  sizes = turn_sizes(spec.turn_rows, b)
  _, cache, _, _, _, bufs = phase(full, sizes, (forced, forced_n, key),
                                  (jnp.int32(1), cache, tok, gram, done, bufs))
  return bufs, cache


__all__ = ["DecoderState", "StepOutputs", "DecodeSpec"]
