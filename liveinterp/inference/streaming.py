"""Streaming speech-to-speech decoder: one jitted, fixed-shape function per source chunk.

    decoder = StreamingDecoder(model, codec, speaker, tokenizer, cfg,
                               prompt_ids=prompt_for(cfg, tokenizer))
    state = decoder.init_stream(batch, rng)
    state, out = decoder.step(state, audio_chunk_bc)          # [B, chunk_samples] float

Task prompt: every training stream starts with `<bos> <simul> <src> <tgt>`
(`data_pipelines.stream_format.simul_prompt_ids`, the one definition of those ids).
`init_stream` writes the decoder's `prompt_ids` (default: `prompt_for(cfg, tokenizer)`,
the language pair of `cfg.data.pair`) into the fresh LLM cache, at positions 0..P-1, so
the first chunk's audio slots follow at P, exactly as in training. A decoder without the
prompt (`prompt_ids=()`, random-weight tests only) decodes a context the model never saw.

One `step` (a single XLA computation, compiled once) does, for every stream in the batch:

  1. encoder `extend_step` on the chunk -> adapter -> LLM prefill of the chunk's audio
     slots (`<eot>` of the previous turn is written in the same prefill, see below);
  2. decodes the turn with `lax.while_loop`, at most `stream.max_turn_tokens` tokens:
     sample (greedy / temperature / top-p, masked by the turn grammar of
     `grammar.TurnGrammar`) -> write the token into the LLM cache -> next logits. Rows
     that have written `<eot>` are done: they pass `valid=False`, so their caches do not
     advance while the other rows finish. The loop stops when every row is done;
  3. collects the turn's text / source-transcript / speech ids into fixed buffers
     `[B, max_turn_tokens]` with counts;
  4. speaker embedding of the last `speaker_window_ms` of *source* audio (a rolling buffer
     in the state, so it follows speaker changes); computed only on chunks where some row
     speaks, which gives the same result as computing it every chunk;
  5. codec streaming decode of the turn's speech frames (conditioned on that embedding):
     frames every row has go through the codec in blocks (`codec_blocks`), the rest one
     frame per `while_loop` iteration with per-row validity, so each row's codec tail
     state advances only on its real frames -> audio delta `[B, frames * hop]` + valid
     sample counts.

`<eot>` deferral: a turn's closing `<eot>` is sampled but written into the cache at the
start of the next `step`, together with the next chunk's audio slots (one prefill of
`1 + slots` positions). The cache then holds exactly `<bos> <simul> <src> <tgt>
[A1][Y1][A2][Y2]...`, as in training, but a wait turn costs no separate LLM call.

Nothing grows with the stream: the LLM cache is a ring buffer with sinks, the encoder
keeps a bounded left context, codec and frontend keep fixed tails, the speaker buffer is
a fixed window. So cost and memory per chunk are flat on unbounded streams (the tests
run 10,000 chunks; `benchmarks/streaming.py` compares minute 1 with minute 60).

Host side: `iter_translate` / `translate_stream` feed audio, time every step, detokenize
text deltas and assemble speech with emission times (ms of source consumed) for the
latency metrics of `liveinterp.eval.latency`. `load_params` restores trained weights.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import stream_format as sfmt
from data_pipelines import tokenizer as tok_lib
from liveinterp.eval import latency as latency_lib
from liveinterp.inference import grammar as grammar_lib
from liveinterp.inference import sampling
from liveinterp.models import s2st as s2st_lib
from liveinterp.models.codec import Codec
from liveinterp.models.voice import SpeakerEncoder

EOT, PAD = sampling.EOT, sampling.PAD


# ---- state and outputs -------------------------------------------------------------------
class DecoderState(NamedTuple):
  """Everything a batch of streams carries between chunks (fixed shapes)."""
  model: s2st_lib.StreamState  # encoder state + LLM ring cache
  codec: Any                   # codec decoder tails
  speaker_audio: jax.Array     # [B, S] last S source samples (oldest first)
  speaker_fill: jax.Array      # [B] int32 how many of them are real (<= S)
  speaker: jax.Array           # [B, E] latest speaker embedding
  pending_eot: jax.Array       # [B] bool: the last turn's <eot> is not in the cache yet
  chunks: jax.Array            # [B] int32 chunks consumed
  rng: jax.Array               # PRNG key


class StepOutputs(NamedTuple):
  """What one `step` produced per stream (fixed-size buffers + counts)."""
  valid: jax.Array        # [B] bool: the row consumed a chunk in this step
  chunk_index: jax.Array  # [B] int32: index of the row's last chunk read (0-based)
  end_ms: jax.Array       # [B] int32: its end in ms of source (= emission time); int32
                          # wraps after 24.8 days of stream, hosts use chunk_index
  tokens: jax.Array       # [B, M] int32: the whole turn (PAD after n_tokens)
  n_tokens: jax.Array     # [B]
  text: jax.Array         # [B, M] target-text ids of the turn (after <text>)
  n_text: jax.Array       # [B]
  src: jax.Array          # [B, M] source-transcript ids (after <src>)
  n_src: jax.Array        # [B]
  speech: jax.Array       # [B, M] speech ids (frame-major)
  n_speech: jax.Array     # [B]
  audio: jax.Array        # [B, F * hop] float32 decoded speech of the turn
  n_samples: jax.Array    # [B] int32 valid samples of `audio`
  # Two log-probabilities per token (0 after n_tokens), see `sampling`:
  logprob_raw: jax.Array      # [B, M] float32 log softmax(logits)[token]: the raw model
                              # distribution (no grammar mask, temperature 1, no top-p)
  logprob_sampled: jax.Array  # [B, M] float32 log q(token) under the distribution it was
                              # actually drawn from (grammar/budget mask -> temperature ->
                              # top-p; greedy: 0, a point mass). Forced tokens: what that
                              # distribution gives them (-inf outside its support).
  values: jax.Array       # [B, M] float32 value-head output where each token was chosen
  speaker: jax.Array      # [B, E] speaker embedding used for this chunk's speech
  logits: Any = None      # [B, M, V] float32 logits each token was chosen from (optional)

  @property
  def log_probs(self) -> jax.Array:
    """Former name of `logprob_raw` (kept for callers; prefer the explicit names)."""
    return self.logprob_raw


class _Models(nnx.Module):
  """The three networks the decoder runs, split/merged as one graph."""

  def __init__(self, s2st, codec, speaker):
    self.s2st = s2st
    self.codec = codec
    self.speaker = speaker


def _select_rows(valid_b: jax.Array, new: Any, old: Any) -> Any:
  """Per-row choice between two state pytrees whose leaves are batch-major.

  Scalars (stream-global counters such as the encoder's frame position) advance when
  any row does.
  """
  any_valid = jnp.any(valid_b)

  def pick(n, o):
    if n.ndim == 0:
      return jnp.where(any_valid, n, o)
    return jnp.where(valid_b.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)
  return jax.tree.map(pick, new, old)


def state_bytes(state: DecoderState) -> int:
  """Bytes held by a decoder state (every leaf; constant over a stream)."""
  total = 0
  for x in jax.tree.leaves(state):
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      x = jax.random.key_data(x)
    total += int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
  return total


def state_signature(state: DecoderState) -> list[tuple]:
  """(path, shape, dtype) of every leaf: equal signatures = nothing grew."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [(jax.tree_util.keystr(p), tuple(x.shape), str(x.dtype)) for p, x in leaves]


# ---- the decoder -------------------------------------------------------------------------
def speech_turns_for(cfg) -> bool:
  """Whether the model of `cfg` was trained with speech in its turns: the SFT/pretrain
  stages train text-only turns when `data.codes_path` names no file
  (`liveinterp.train.speech_tokens.codes_fn_for`) or `data.text_only` is set. The
  decoder's grammar must match."""
  if cfg.data.get("text_only", False):
    return False
  path = str(cfg.data.get("codes_path", "") or "")
  return bool(path) and os.path.exists(path)


def prompt_for(cfg, tokenizer=None) -> tuple[int, ...]:
  """The SFT task prompt `<bos> <simul> <src> <tgt>` for `cfg.data.pair` ("zh-en").

  The ids come from `data_pipelines.stream_format.simul_prompt_ids`, the function that
  writes the prompt of every training stream. `tokenizer`: the run's data_pipelines
  `Tokenizer`, or None (a `TokenLayout` is accepted and ignored): control ids are fixed,
  so the prompt needs no sentencepiece model.
  """
  pair = str(cfg.data.pair)
  src, sep, tgt = pair.partition("-")
  if not sep or not src or not tgt:
    raise ValueError(f"data.pair={pair!r}: expected 'src-tgt' such as 'zh-en'")
  tok = tokenizer if isinstance(tokenizer, tok_lib.Tokenizer) else None
  return tuple(int(i) for i in sfmt.simul_prompt_ids(tok, src, tgt))


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
  """Everything static about a decoder (hashable): equal specs share compiled code."""
  graphdef: Any
  layout: sampling.TokenLayout
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

  @property
  def max_frames(self) -> int:
    return self.max_turn_tokens // self.num_codebooks


class StreamingDecoder:
  """Chunk-by-chunk S2ST (module docstring).

  Args:
    model: the `S2ST` composite (encoder + adapter + LLM).
    codec: the speech `Codec` (its decoder turns speech ids into audio).
    speaker_encoder: the `SpeakerEncoder` producing the codec's conditioning.
    tokenizer_layout: a `sampling.TokenLayout` or a `data_pipelines` `Tokenizer`.
    cfg: the full config (`stream.*`, `audio.sample_rate`).
    temperature: 0 = greedy; > 0 samples.
    top_p: nucleus mass (1 = off).
    grammar: mask ids with the turn grammar (else only "last budget token is <eot>").
    allow_src: the grammar lets a turn start with `<src> w+` (source transcript).
    max_turn_tokens: decode budget per chunk (default `cfg.stream.max_turn_tokens`).
    speaker_window_ms: source audio the speaker embedding is computed from.
    return_logits: also return the `[B, M, V]` logits of every chosen token (tests, RL).
    codec_blocks: frame-block sizes the codec decodes at once (largest first), before
      the frame-by-frame tail; () = frame by frame only (smallest program).
    prompt_ids: ids `init_stream` writes into the fresh LLM cache before the first chunk:
      the training streams' task prompt. None (default) = `prompt_for(cfg, tokenizer)`;
      () = no prompt (only for random-weight tests: a trained model was never shown a
      stream without it).
    speech_turns: the grammar's turns have a speech section (`<text> w+ <speech> s+
      <eot>`); False for a model trained without speech codes (`<text> w+ <eot>`, see
      `speech_turns_for`): with the speech grammar such a model could never close a turn
      after its text and would babble until the budget forces `<eot>`.
    decode_speech: False = text-only decoding: the turn's speech ids are still sampled
      and returned, but neither the speaker embedding nor the codec runs (`audio` is
      silent, `n_samples` 0). Text output is unchanged (the codec is downstream of every
      token), so text evaluation can skip the cost and use codec weights of any kind.
    donate: donate the input state to `step`/`scan` (in-place cache updates; a state
      passed in must not be used again).
  """

  def __init__(self, model: s2st_lib.S2ST, codec: Codec, speaker_encoder: SpeakerEncoder,
               tokenizer_layout, cfg, *, temperature: float = 0.0, top_p: float = 1.0,
               grammar: bool = True, allow_src: bool = False,
               max_turn_tokens: int | None = None, speaker_window_ms: int = 3000,
               return_logits: bool = False, codec_blocks: Sequence[int] = (16, 4),
               donate: bool = True, prompt_ids: Sequence[int] | None = None,
               decode_speech: bool = True, speech_turns: bool = True):
    layout = tokenizer_layout
    if not isinstance(layout, sampling.TokenLayout):
      layout = sampling.TokenLayout.from_tokenizer(layout)
    sampling.check_params(temperature, top_p)
    m = int(cfg.stream.max_turn_tokens if max_turn_tokens is None else max_turn_tokens)
    if m < 1:
      raise ValueError(f"stream.max_turn_tokens={m}: must be >= 1")
    self.cfg = cfg
    self.sample_rate = int(cfg.audio.sample_rate)
    fe_hop = speaker_encoder.frontend.hop_length
    speaker_samples = int(round(speaker_window_ms * self.sample_rate / 1000))
    if speaker_samples < fe_hop or speaker_samples % fe_hop:
      raise ValueError(f"speaker_window_ms={speaker_window_ms}: must be a positive multiple "
                       f"of the {fe_hop}-sample mel hop")
    _check_compatible(model, codec, speaker_encoder, layout, self.sample_rate)
    graphdef, params = nnx.split(_Models(model, codec, speaker_encoder))
    # Weights committed to one device, however they were made (random, restored): jit
    # keys its cache on committedness, so equal decoders then share compiled code.
    self.device = jax.local_devices()[0]
    self._params = jax.device_put(params, self.device)
    self.spec = DecodeSpec(
        graphdef=graphdef, layout=layout,
        grammar=(grammar_lib.TurnGrammar(layout, m, allow_src, speech=bool(speech_turns))
                 if grammar else None),
        max_turn_tokens=m, temperature=float(temperature), top_p=float(top_p),
        return_logits=bool(return_logits), chunk_samples=int(model.chunk_samples),
        chunk_ms=int(cfg.stream.chunk_ms), hop=int(codec.hop),
        num_codebooks=int(codec.num_codebooks), speaker_samples=speaker_samples,
        codec_blocks=tuple(sorted({int(k) for k in codec_blocks if int(k) > 1},
                                  reverse=True)),
        decode_speech=bool(decode_speech))
    self.donate = bool(donate)
    self.layout = layout
    self.chunk_samples = self.spec.chunk_samples
    self.chunk_ms = self.spec.chunk_ms
    self.max_turn_tokens = m
    self.vocab_size = int(model.llm.vocab_size)
    prompt = (prompt_for(cfg, tokenizer_layout) if prompt_ids is None
              else tuple(int(i) for i in np.asarray(prompt_ids, np.int64).reshape(-1)))
    bad = [i for i in prompt if not 0 <= i < self.vocab_size]
    if bad:
      raise ValueError(f"prompt_ids {list(prompt)} has ids outside [0, {self.vocab_size})")
    # Static argument of the jitted `init_stream` only (not in `DecodeSpec`): decoders
    # that differ only in their prompt share the compiled `step` / `scan`.
    self.prompt_ids = prompt

  # ---- public API ------------------------------------------------------------------------
  @property
  def params(self) -> nnx.State:
    """The networks' state (the first argument of the jitted functions)."""
    return self._params

  def set_model(self, model: s2st_lib.S2ST) -> None:
    """Decodes with `model`'s weights from now on (e.g. the in-training model at each
    evaluation), keeping this decoder's codec and speaker encoder.

    `model` must have this decoder's S2ST structure (same config): the weights are
    arguments of the compiled `step`/`scan`, so nothing is recompiled. Raises ValueError
    when the structure differs. States made before the call keep their caches (written
    with the old weights); start new streams with `init_stream`.
    """
    old = nnx.merge(self.spec.graphdef, self._params)
    graphdef, params = nnx.split(_Models(model, old.codec, old.speaker))
    if graphdef != self.spec.graphdef:
      raise ValueError("set_model: the model's structure differs from the decoder's "
                       "(built from another config?); build a new StreamingDecoder")
    new = jax.device_put(params, self.device)
    shapes = lambda t: jax.tree.map(lambda x: (x.shape, x.dtype), t)  # noqa: E731
    if shapes(new) != shapes(self._params):
      raise ValueError("set_model: the model's weight shapes or dtypes differ from the "
                       "decoder's; build a new StreamingDecoder")
    self._params = new

  def init_stream(self, batch: int, rng: jax.Array | int = 0) -> DecoderState:
    """A fresh state for `batch` streams; `rng` a PRNG key or an int seed."""
    if int(batch) < 1:
      raise ValueError(f"init_stream: batch={batch} must be >= 1")
    if isinstance(rng, (int, np.integer)):
      rng = jax.random.key(int(rng))
    # Committed like every later state, so the first step compiles the same program.
    return jax.device_put(_init_jit(self.spec, self._params, int(batch), rng,
                                    self.prompt_ids), self.device)

  def step(self, state: DecoderState, audio_chunk_bc, valid_b=None,
           forced_tokens_bm=None, forced_len_b=None) -> tuple[DecoderState, StepOutputs]:
    """Reads one chunk per stream and writes its turn -> (new state, outputs).

    Args:
      state: from `init_stream` or a previous `step` (donated when `donate=True`).
      audio_chunk_bc: `[B, chunk_samples]` float samples in [-1, 1] at
        `audio.sample_rate`. Host (numpy) input is checked: a wrong shape or non-finite
        samples raise ValueError.
      valid_b: `[B]` bool; rows without a chunk this step (a shorter stream that ended)
        are left exactly as they are and output nothing.
      forced_tokens_bm: `[B, M]` ids written instead of sampled (teacher forcing, a
        fixed policy): row b writes `forced[b, :forced_len[b]]` up to its first `<eot>`,
        then `<eot>`; the budget's last token is always `<eot>`.
      forced_len_b: `[B]` forced turn lengths (default M); a negative length means
        "not forced": that row samples as usual.
    """
    batch = int(state.chunks.shape[0])
    audio = self._check_chunk(audio_chunk_bc, batch)
    valid = (jnp.ones((batch,), bool) if valid_b is None
             else _check_vector(valid_b, batch, "valid_b", bool))
    forced, forced_n = self._check_forced(forced_tokens_bm, forced_len_b, batch)
    fn = _step_donate if self.donate else _step_keep
    return fn(self.spec, self._params, state, audio, valid, forced, forced_n)

  def scan(self, state: DecoderState, audio_ncb, valid_nb=None, forced_tokens_nbm=None,
           forced_len_nb=None, *, keep_outputs: bool = False):
    """Runs `step` over N chunks `[N, B, chunk_samples]` in one jitted `lax.scan`.

    `valid_nb`, `forced_tokens_nbm` `[N, B, M]` and `forced_len_nb` `[N, B]` are the
    per-chunk arguments of `step`. Returns (state, outputs stacked on a leading N axis):
    the full `StepOutputs` when `keep_outputs`, else only the counts (`n_tokens`,
    `n_text`, `n_speech`, `n_samples`, each `[N, B]`), so long streams cost no output
    memory.
    """
    batch = int(state.chunks.shape[0])
    shape = tuple(np.shape(audio_ncb))
    if len(shape) != 3 or shape[1:] != (batch, self.chunk_samples):
      raise ValueError(f"scan: audio must be [N, {batch}, {self.chunk_samples}], got "
                       f"{shape}")
    if isinstance(audio_ncb, np.ndarray):
      _check_finite(audio_ncb, "audio")
    n, m = shape[0], self.max_turn_tokens
    valid = (jnp.ones((n, batch), bool) if valid_nb is None
             else jnp.asarray(_check_shape(valid_nb, (n, batch), "valid_nb"), bool))
    if forced_tokens_nbm is None:
      if forced_len_nb is not None:
        raise ValueError("forced_len_nb given without forced_tokens_nbm")
      forced = jnp.zeros((n, batch, m), jnp.int32)
      forced_n = jnp.full((n, batch), -1, jnp.int32)
    else:
      forced = jnp.asarray(_check_shape(forced_tokens_nbm, (n, batch, m),
                                        "forced_tokens_nbm"), jnp.int32)
      forced_n = (jnp.full((n, batch), m, jnp.int32) if forced_len_nb is None else
                  jnp.asarray(_check_shape(forced_len_nb, (n, batch), "forced_len_nb"),
                              jnp.int32))
    fn = _scan_donate if self.donate else _scan_keep
    return fn(self.spec, self._params, state, jnp.asarray(audio_ncb, jnp.float32), valid,
              forced, forced_n, keep_outputs)

  # ---- checks ----------------------------------------------------------------------------
  def _check_chunk(self, audio, batch: int) -> jax.Array:
    shape = tuple(np.shape(audio))
    if shape != (batch, self.chunk_samples):
      raise ValueError(f"audio chunk has shape {shape}, expected [{batch}, "
                       f"{self.chunk_samples}] ({self.chunk_ms} ms at {self.sample_rate} Hz "
                       f"for each of the {batch} streams)")
    if isinstance(audio, np.ndarray):
      _check_finite(audio, "audio chunk")
    return jnp.asarray(audio, jnp.float32)

  def _check_forced(self, forced, forced_n, batch):
    m = self.max_turn_tokens
    if forced is None:
      if forced_n is not None:
        raise ValueError("forced_len_b given without forced_tokens_bm")
      return jnp.zeros((batch, m), jnp.int32), jnp.full((batch,), -1, jnp.int32)
    if tuple(np.shape(forced)) != (batch, m):
      raise ValueError(f"forced_tokens_bm has shape {tuple(np.shape(forced))}, expected "
                       f"[{batch}, {m}] (max_turn_tokens)")
    if isinstance(forced, np.ndarray) and forced.size and (
        forced.min() < 0 or forced.max() >= self.vocab_size):
      raise ValueError(f"forced_tokens_bm has ids outside [0, {self.vocab_size})")
    n = (jnp.full((batch,), m, jnp.int32) if forced_n is None
         else _check_vector(forced_n, batch, "forced_len_b", jnp.int32))
    return jnp.asarray(forced, jnp.int32), n


def _check_shape(x, shape: tuple, name: str):
  if tuple(np.shape(x)) != shape:
    raise ValueError(f"{name} has shape {tuple(np.shape(x))}, expected {list(shape)}")
  return x


def _check_vector(x, batch: int, name: str, dtype) -> jax.Array:
  if tuple(np.shape(x)) != (batch,):
    raise ValueError(f"{name} has shape {tuple(np.shape(x))}, expected [{batch}]")
  return jnp.asarray(x, dtype)


def _check_compatible(model, codec, speaker, layout, sample_rate: int):
  if layout.vocab_size != model.llm.vocab_size:
    raise ValueError(f"token layout has vocab_size={layout.vocab_size} but the LLM has "
                     f"llm.vocab_size={model.llm.vocab_size}")
  if layout.num_codebooks != codec.num_codebooks:
    raise ValueError(f"token layout has {layout.num_codebooks} codebooks, the codec "
                     f"{codec.num_codebooks} (codec.num_codebooks)")
  sizes = {int(cb.codebook_size) for cb in codec.quantizer.codebooks}
  if sizes != {layout.codebook_size}:
    raise ValueError(f"token layout has codebook_size={layout.codebook_size}, the codec "
                     f"{sorted(sizes)} (codec.codebook_size)")
  if codec.spk_dim != speaker.embed_dim:
    raise ValueError(f"codec FiLM expects speaker embeddings of {codec.spk_dim} "
                     f"(voice.embed_dim) but the speaker encoder makes {speaker.embed_dim}")
  if speaker.frontend.sample_rate != sample_rate:
    raise ValueError(f"speaker encoder runs at {speaker.frontend.sample_rate} Hz, the "
                     f"stream at audio.sample_rate={sample_rate}")


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
      speaker_audio=jnp.zeros((batch, spec.speaker_samples), jnp.float32),
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


def _step_models(spec: DecodeSpec, m: _Models, st: DecoderState, audio_bc, valid_b,
                 forced, forced_n):
  """One chunk for every row (module docstring, steps 1-5)."""
  s2 = m.s2st
  b = audio_bc.shape[0]
  key, turn_key = jax.random.split(st.rng)

  # 1. encoder -> adapter -> one prefill of [pending <eot>, audio slots].
  frames, enc = s2.encoder.extend_step(audio_bc, st.model.encoder)
  enc = _select_rows(valid_b, enc, st.model.encoder)
  audio_emb, _ = s2.adapter(frames)                                     # [B, S, D]
  eot_emb = s2.llm.embed(jnp.full((b, 1), EOT, jnp.int32))
  x = jnp.concatenate([eot_emb.astype(audio_emb.dtype), audio_emb], axis=1)
  write = jnp.concatenate([(st.pending_eot & valid_b)[:, None],
                           jnp.broadcast_to(valid_b[:, None], audio_emb.shape[:2])], axis=1)
  logits, values, cache = s2.llm.extend(st.model.cache, x, write)

  # 2.-3. the turn.
  turn, cache = _decode_turn(spec, s2.llm, cache, logits[:, -1], values[:, -1], valid_b,
                             turn_key, forced, forced_n)

  # 4. speaker embedding from the rolling source buffer (only needed when someone speaks).
  n_src = spec.speaker_samples
  spk_audio = jnp.concatenate([st.speaker_audio, audio_bc.astype(jnp.float32)],
                              axis=1)[:, -n_src:]
  spk_audio = jnp.where(valid_b[:, None], spk_audio, st.speaker_audio)
  fill = jnp.where(valid_b, jnp.minimum(st.speaker_fill + spec.chunk_samples, n_src),
                   st.speaker_fill)
  n_frames = turn["n_speech"] // spec.num_codebooks

  def embed():
    mask = jnp.arange(n_src)[None, :] >= (n_src - fill)[:, None]
    return m.speaker.embed_audio(spk_audio, mask).astype(jnp.float32)
  if spec.decode_speech:
    spk = jax.lax.cond(jnp.any(n_frames > 0), embed, lambda: st.speaker)
    # 5. codec: one frame per iteration; tails advance only on real frames.
    audio_out, codec_state = _decode_speech(spec, m.codec, st.codec, turn["speech"],
                                            n_frames, spk)
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
            forced_n):
  """Token i of the turn: forced where `forced_n >= 0`, else sampled under the mask.

  Returns (token [B] int32, its log-probability [B] under the distribution sampled from).
  """
  m = spec.max_turn_tokens
  b, v = logits_bv.shape
  if spec.grammar is not None:
    mask = spec.grammar.mask(gram, i)
  else:
    mask = grammar_lib.budget_mask(b, v, i, m)
  tok, logp_bv = sampling.sample_with_log_probs(
      logits_bv, jax.random.fold_in(key, i), temperature=spec.temperature, top_p=spec.top_p,
      mask_bv=mask)
  f = jax.lax.dynamic_index_in_dim(forced, jnp.minimum(i, m - 1), axis=1, keepdims=False)
  f = jnp.where((i < forced_n) & (i < m - 1), f, EOT)
  tok = jnp.where(forced_n >= 0, f, tok).astype(jnp.int32)
  return tok, sampling.log_prob_of(logp_bv, tok)


def _decode_turn(spec: DecodeSpec, llm, cache, logits_bv, value_b, valid_b, key, forced,
                 forced_n):
  """`lax.while_loop` over the turn's tokens -> (buffers dict, cache)."""
  b, m = logits_bv.shape[0], spec.max_turn_tokens
  cls_v = jnp.asarray(spec.layout.id_classes())
  zi = jnp.zeros((b, m), jnp.int32)
  zf = jnp.zeros((b, m), jnp.float32)
  zc = jnp.zeros((b,), jnp.int32)
  bufs = dict(tokens=zi, text=zi, src=zi, speech=zi, logprob_raw=zf, logprob_sampled=zf,
              values=zf, n_tokens=zc, n_text=zc, n_src=zc, n_speech=zc)
  if spec.return_logits:
    bufs["logits"] = jnp.zeros((b, m, logits_bv.shape[-1]), jnp.float32)
  rows = jnp.arange(b)

  def record(i, tok, lp_sampled, logits, value, gram, done, bufs):
    """Appends token i of the still-active rows to the buffers; advances the grammar."""
    act = ~done
    cls = cls_v[tok]
    bufs = dict(bufs)
    bufs["tokens"] = bufs["tokens"].at[:, i].set(jnp.where(act, tok, PAD))
    bufs["logprob_raw"] = bufs["logprob_raw"].at[:, i].set(
        jnp.where(act, sampling.token_log_probs(logits, tok), 0.0))
    bufs["logprob_sampled"] = bufs["logprob_sampled"].at[:, i].set(
        jnp.where(act, lp_sampled, 0.0))
    bufs["values"] = bufs["values"].at[:, i].set(jnp.where(act, value, 0.0))
    if "logits" in bufs:
      bufs["logits"] = bufs["logits"].at[:, i].set(
          jnp.where(act[:, None], logits.astype(jnp.float32), 0.0))
    bufs["n_tokens"] = bufs["n_tokens"] + act.astype(jnp.int32)
    for name, hit in (
        ("text", (cls == sampling.C_WORD) & (gram.phase == grammar_lib.TEXT_PHASE)),
        ("src", (cls == sampling.C_WORD) & (gram.phase == grammar_lib.SRC_PHASE)),
        ("speech", (cls == sampling.C_SPEECH) & (gram.phase == grammar_lib.SPEECH_PHASE))):
      hit = hit & act
      n = bufs["n_" + name]
      idx = jnp.where(hit, n, m)                         # m: out of range -> dropped
      bufs[name] = bufs[name].at[rows, idx].set(tok, mode="drop")
      bufs["n_" + name] = n + hit.astype(jnp.int32)
    new_gram = grammar_lib.grammar_advance(gram, tok, spec.layout)
    new_gram = grammar_lib.GrammarState(*(jnp.where(act, a, o) for a, o in zip(new_gram, gram)))
    return new_gram, done | (act & (tok == EOT)), bufs

  gram = grammar_lib.grammar_init(b)
  done = ~valid_b
  tok, lp = _choose(spec, jnp.int32(0), logits_bv, gram, key, forced, forced_n)
  gram, done, bufs = record(0, tok, lp, logits_bv, value_b, gram, done, bufs)

  def cond(c):
    i, _, _, _, done, _ = c
    return (i < m) & jnp.any(~done)

  def body(c):
    i, cache, tok, gram, done, bufs = c
    # Rows still in the turn write their last (non-<eot>) token and get new logits.
    lg, val, cache = llm.extend(cache, tok[:, None], (~done)[:, None])
    new_tok, lp = _choose(spec, i, lg[:, 0], gram, key, forced, forced_n)
    gram, done, bufs = record(i, new_tok, lp, lg[:, 0], val[:, 0], gram, done, bufs)
    return i + 1, cache, new_tok, gram, done, bufs

  _, cache, _, _, _, bufs = jax.lax.while_loop(
      cond, body, (jnp.int32(1), cache, tok, gram, done, bufs))
  return bufs, cache


def _decode_speech(spec: DecodeSpec, codec, codec_state, speech_bm, n_frames_b, spk_be):
  """Speech ids `[B, M]` -> audio `[B, F * hop]`; each row's codec tails advance over
  exactly its `n_frames` frames.

  Frames every row has are decoded in blocks (`spec.codec_blocks`, largest first: one
  codec call on k frames costs far less than k calls on one), the rest one frame per
  iteration with per-row validity. Blocked and frame-wise decoding give the same audio
  (the codec decoder is causal with exact streaming state).
  """
  b, q, f = speech_bm.shape[0], spec.num_codebooks, spec.max_frames
  size = spec.layout.codebook_size
  rel = speech_bm[:, :f * q] - spec.layout.speech_offset
  codes = jnp.clip(rel - (jnp.arange(f * q) % q)[None, :] * size, 0, size - 1)
  codes = codes.reshape(b, f, q).astype(jnp.int32)
  hop = spec.hop
  audio = jnp.zeros((b, f * hop), jnp.float32)
  n_common = jnp.min(n_frames_b)
  start = jnp.int32(0)
  state = codec_state

  for k in spec.codec_blocks:
    if k > f:
      continue

    def block(c, k=k):
      i, st, audio = c
      frames = jax.lax.dynamic_slice_in_dim(codes, i, k, axis=1)       # [B, k, Q]
      y, st = codec.decode_step(frames, spk_be, st)
      audio = jax.lax.dynamic_update_slice_in_dim(audio, y.astype(jnp.float32), i * hop,
                                                  axis=1)
      return i + k, st, audio

    start, state, audio = jax.lax.while_loop(
        lambda c, k=k: c[0] + k <= n_common, block, (start, state, audio))

  def frame(c):
    i, st, audio = c
    y, new = codec.decode_step(jax.lax.dynamic_slice_in_dim(codes, i, 1, axis=1), spk_be, st)
    ok = i < n_frames_b
    st = _select_rows(ok, new, st)
    y = jnp.where(ok[:, None], y.astype(jnp.float32), 0.0)
    audio = jax.lax.dynamic_update_slice_in_dim(audio, y, i * hop, axis=1)
    return i + 1, st, audio

  _, state, audio = jax.lax.while_loop(
      lambda c: c[0] < jnp.max(n_frames_b), frame, (start, state, audio))
  return audio, state


def _check_finite(x: np.ndarray, what: str):
  if not np.issubdtype(x.dtype, np.number):
    raise ValueError(f"{what}: expected numeric samples, got dtype {x.dtype}")
  bad = ~np.isfinite(x)
  if bad.any():
    raise ValueError(f"{what}: {int(bad.sum())} non-finite sample(s) (NaN/Inf) in "
                     f"{x.size}; clean the input audio first")


# ---- host-side driver --------------------------------------------------------------------
class Detokenizer:
  """Text ids -> text per turn; with no sentencepiece model, ids are shown as `[id]`."""

  def __init__(self, tokenizer=None):
    self.tokenizer = tokenizer

  def __call__(self, ids: Sequence[int], previous: bool = False) -> str:
    """Text of one turn's ids; `previous`: text came before (a word gap may be due)."""
    ids = [int(i) for i in ids]
    if not ids:
      return ""
    if self.tokenizer is None:
      text = " ".join(f"[{i}]" for i in ids)
      return (" " if previous else "") + text
    text = self.tokenizer.decode_text(ids)
    # A turn decodes on its own (flat cost); sentencepiece drops the leading word
    # boundary of the first piece, so put it back between turns.
    if previous and self.tokenizer.token_of(ids[0]).startswith("\u2581"):
      text = " " + text
    return text


@dataclasses.dataclass
class Segment:
  """What one stream emitted after one chunk (only chunks that emitted something)."""
  chunk: int
  emit_ms: float         # source consumed when emitted (end of the chunk)
  ready_ms: float        # computation-aware: when the output was actually ready
  compute_ms: float      # measured time of the batched step
  text: str
  src: str
  text_ids: list
  speech_tokens: int
  audio_ms: float
  play_start_ms: float = 0.0
  play_end_ms: float = 0.0


@dataclasses.dataclass
class StreamResult:
  """One stream's translation: text, speech, emission times, speed."""
  segments: list
  text: str = ""
  src: str = ""
  speech: np.ndarray | None = None   # concatenated decoded speech (float32)
  source_ms: float = 0.0
  compute_ms: list = dataclasses.field(default_factory=list)
  sample_rate: int = 16000

  @property
  def rtf(self) -> float:
    """Real-time factor: compute time / source time (< 1 keeps up with live audio)."""
    return float(np.sum(self.compute_ms) / max(self.source_ms, 1e-9))

  def timeline(self) -> np.ndarray:
    """Speech placed at its playback times (back to back, never before it is written):
    what a listener hears alongside the source, as one array."""
    sr = self.sample_rate
    end = max([self.source_ms] + [s.play_end_ms for s in self.segments])
    out = np.zeros(int(np.ceil(end * sr / 1000)) + 1, np.float32)
    pos = 0
    for s in self.segments:
      n = int(round(s.audio_ms * sr / 1000))
      if not n:
        continue
      start = int(round(s.play_start_ms * sr / 1000))
      out[start:start + n] = self.speech[pos:pos + n]
      pos += n
    return out

  def as_json(self) -> dict:
    return {"text": self.text, "src": self.src, "source_ms": self.source_ms,
            "rtf": self.rtf, "segments": [dataclasses.asdict(s) for s in self.segments]}


@dataclasses.dataclass
class ChunkEvent:
  """Per-step host view of the outputs, one entry per stream."""
  chunk: int
  compute_ms: float
  valid: np.ndarray       # [B]
  end_ms: np.ndarray      # [B] float64
  text: list              # [B] str deltas
  src: list
  text_ids: list          # [B] list[int]
  speech_tokens: np.ndarray
  audio: list             # [B] float32 arrays (the valid samples)


def _chunks_of(audio_iter: Iterable, batch: int | None, chunk_samples: int
               ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Re-chunks blocks `[B, n]` (any n) into `([B, chunk_samples], valid [B])`.

  The last partial chunk is zero-padded. A block may also be a `(samples [B, n],
  lengths [B])` pair where rows shorter than n end their stream inside the block.
  """
  buf, ended_at, total = None, None, 0
  for block in audio_iter:
    lengths = None
    if isinstance(block, tuple):
      block, lengths = block
    x = np.asarray(block)
    if x.ndim == 1:
      x = x[None]
    if x.ndim != 2:
      raise ValueError(f"audio block of shape {x.shape}: expected [B, n] or [n]")
    if batch is not None and x.shape[0] != batch:
      raise ValueError(f"audio block has {x.shape[0]} streams, expected {batch}")
    _check_finite(x, "audio block")
    x = x.astype(np.float32)
    if buf is None:
      buf = np.zeros((x.shape[0], 0), np.float32)
      ended_at = np.full(x.shape[0], np.iinfo(np.int64).max)
    if lengths is not None:
      lengths = np.asarray(lengths).reshape(-1)
      ended_at = np.minimum(ended_at, np.where(lengths < x.shape[1], total + lengths,
                                               ended_at))
    buf = np.concatenate([buf, x], axis=1)
    total += x.shape[1]
    while buf.shape[1] >= chunk_samples:
      start = total - buf.shape[1]
      yield _cut(buf[:, :chunk_samples], ended_at, start)
      buf = buf[:, chunk_samples:]
  if buf is not None and buf.shape[1]:
    start = total - buf.shape[1]
    pad = np.zeros((buf.shape[0], chunk_samples - buf.shape[1]), np.float32)
    yield _cut(np.concatenate([buf, pad], axis=1), ended_at, start)


def _cut(chunk_bc: np.ndarray, ended_at_b: np.ndarray, start: int):
  """(chunk with samples past each row's end zeroed, rows that still have audio)."""
  keep = np.arange(chunk_bc.shape[1])[None, :] < (ended_at_b - start)[:, None]
  return np.where(keep, chunk_bc, 0.0).astype(np.float32), ended_at_b > start


def iter_translate(decoder: StreamingDecoder, audio_iter: Iterable, *, batch: int | None = None,
                   tokenizer=None, rng: int | jax.Array = 0,
                   state: DecoderState | None = None,
                   write_from: Sequence[int] | None = None) -> Iterator[ChunkEvent]:
  """Feeds blocks of audio (see `_chunks_of`) to the decoder, one event per chunk.

  Memory is flat: nothing is accumulated (use `translate_stream` to collect). Each
  event's `compute_ms` is the wall time of the step including the device -> host copy of
  its outputs. The first step compiles; call `warmup` first to keep that out.
  write_from: per stream, the first chunk after which the model may write; the turns
  after earlier chunks are forced to wait (`<eot>`), exactly what the model writes when
  it chooses to wait (e.g. the last chunk: the whole source first, the offline ceiling).
  """
  detok = Detokenizer(tokenizer)
  said_text: list[bool] | None = None   # per stream: some text was emitted already
  said_src: list[bool] | None = None
  for t, (chunk, valid) in enumerate(_chunks_of(audio_iter, batch, decoder.chunk_samples)):
    b = chunk.shape[0]
    if state is None:
      state = decoder.init_stream(b, rng)
    if said_text is None:
      said_text, said_src = [False] * b, [False] * b
      if write_from is not None:  # checked and laid out once per stream batch
        if len(write_from) != b:
          raise ValueError(f"write_from has {len(write_from)} entries for {b} streams")
        wait_turn = np.full((b, decoder.max_turn_tokens), EOT, np.int32)
        write_from_b = np.asarray(write_from)
    forced = forced_n = None
    if write_from is not None:
      forced = wait_turn
      forced_n = np.where(t < write_from_b, 1, -1).astype(np.int32)
    t0 = time.perf_counter()
    state, out = decoder.step(state, chunk, valid, forced, forced_n)
    host = jax.device_get(out._replace(logits=None, tokens=None, logprob_raw=None,
                                       logprob_sampled=None, values=None))
    compute_ms = (time.perf_counter() - t0) * 1000.0
    texts, srcs, ids, audio = [], [], [], []
    for r in range(b):
      tid = [int(i) for i in host.text[r, :host.n_text[r]]]
      texts.append(detok(tid, said_text[r]))
      srcs.append(detok(host.src[r, :host.n_src[r]], said_src[r]))
      said_text[r] |= bool(texts[-1])
      said_src[r] |= bool(srcs[-1])
      ids.append(tid)
      audio.append(np.asarray(host.audio[r, :host.n_samples[r]]))
    yield ChunkEvent(chunk=t, compute_ms=compute_ms, valid=np.asarray(host.valid),
                     end_ms=(np.asarray(host.chunk_index, np.float64) + 1) * decoder.chunk_ms,
                     text=texts, src=srcs, text_ids=ids,
                     speech_tokens=np.asarray(host.n_speech), audio=audio)


def warmup(decoder: StreamingDecoder, batch: int) -> float:
  """Compiles `step` for `batch` streams on a throwaway state; returns seconds taken."""
  t0 = time.perf_counter()
  st = decoder.init_stream(batch, 0)
  st, out = decoder.step(st, np.zeros((batch, decoder.chunk_samples), np.float32))
  jax.block_until_ready(out)
  return time.perf_counter() - t0


def translate_stream(decoder: StreamingDecoder, audio_iter: Iterable, *,
                     batch: int | None = None, tokenizer=None, rng: int | jax.Array = 0,
                     on_chunk: Callable[[ChunkEvent], None] | None = None,
                     write_from: Sequence[int] | None = None) -> list[StreamResult]:
  """Translates a batch of streams fed as blocks of audio; returns one result per stream.

  Text deltas are detokenized per turn; speech segments are decoded per turn and placed
  on the playback queue of `liveinterp.eval.latency.speech_delays` (back to back, each
  no earlier than its emission). Emission times are in ms of source consumed (chunk end);
  `ready_ms` adds the measured compute (computation-aware, `computation_aware_emissions`).
  """
  results: list[StreamResult] | None = None
  speech: list[list[np.ndarray]] = []
  chunk_end, compute = [], []
  for ev in iter_translate(decoder, audio_iter, batch=batch, tokenizer=tokenizer, rng=rng,
                          write_from=write_from):
    if results is None:
      results = [StreamResult(segments=[], sample_rate=decoder.sample_rate)
                 for _ in range(len(ev.valid))]
      speech = [[] for _ in ev.valid]
    chunk_end.append((ev.chunk + 1) * decoder.chunk_ms)
    compute.append(ev.compute_ms)
    ready = latency_lib.computation_aware_emissions(chunk_end, compute)[-1]
    for r, res in enumerate(results):
      if not ev.valid[r]:
        continue
      res.source_ms = float(ev.end_ms[r])
      res.compute_ms.append(ev.compute_ms)
      res.text += ev.text[r]
      res.src += ev.src[r]
      n_audio = len(ev.audio[r])
      if ev.text[r] or ev.src[r] or n_audio:
        res.segments.append(Segment(
            chunk=int(ev.end_ms[r] // decoder.chunk_ms) - 1, emit_ms=float(ev.end_ms[r]),
            ready_ms=float(ready), compute_ms=ev.compute_ms, text=ev.text[r], src=ev.src[r],
            text_ids=ev.text_ids[r], speech_tokens=int(ev.speech_tokens[r]),
            audio_ms=1000.0 * n_audio / decoder.sample_rate))
        speech[r].append(ev.audio[r])
    if on_chunk is not None:
      on_chunk(ev)
  if results is None:
    raise ValueError("translate_stream: the audio iterator yielded no samples")
  for r, res in enumerate(results):
    res.speech = (np.concatenate(speech[r]) if speech[r] else np.zeros(0, np.float32))
    spoken = [s for s in res.segments if s.audio_ms > 0]
    _, spans = latency_lib.speech_delays([s.emit_ms for s in spoken],
                                         [s.audio_ms for s in spoken],
                                         [[0.0] for _ in spoken])
    for s, (a, b) in zip(spoken, spans):
      s.play_start_ms, s.play_end_ms = a, b
  return results


def translate_waveforms(decoder: StreamingDecoder, waveforms: Sequence[np.ndarray], *,
                        whole_source_first: bool = False, **kw) -> list[StreamResult]:
  """Translates whole waveforms of different lengths as one batch of streams.

  whole_source_first: every stream waits until its last chunk and writes everything
  then (`iter_translate(write_from=...)`): the same model and prompt, offline.
  """
  if not waveforms:
    raise ValueError("translate_waveforms: no waveforms")
  arrs = [np.asarray(w, np.float32).reshape(-1) for w in waveforms]
  for i, a in enumerate(arrs):
    if a.size == 0:
      raise ValueError(f"waveform {i} is empty")
  n = max(a.size for a in arrs)
  block = np.zeros((len(arrs), n), np.float32)
  for i, a in enumerate(arrs):
    block[i, :a.size] = a
  lengths = np.asarray([a.size for a in arrs])
  if whole_source_first:
    kw["write_from"] = [-(-a.size // decoder.chunk_samples) - 1 for a in arrs]
  return translate_stream(decoder, [(block, lengths)], batch=len(arrs), **kw)


# ---- models ------------------------------------------------------------------------------
def random_model(model_fn: Callable[[nnx.Rngs], nnx.Module], seed: int = 0) -> nnx.Module:
  """The model of `model_fn` with random weights drawn in numpy (smoke tests, benchmarks).

  The layers' own initializers run one small XLA program per parameter, which takes
  minutes on a busy CPU; this fills the same structure (from `nnx.eval_shape`, nothing
  compiled) by name: `scale` -> 1, `bias` -> 0, embeddings/codebooks -> N(0, 1), every
  other float weight -> N(0, 1 / fan_in) with fan_in = all axes but the last (and but a
  leading stacked-layers axis), integer state -> 0, codebook statistics consistent with
  the codebooks. Not the trained models' initialisation: only for running code paths.
  """
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)

  def name_of(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
    keys = [str(k) for k in keys if k is not None and str(k) != "value"]
    return keys[-1] if keys else ""

  values = []
  for path, leaf in flat:
    shape, dtype, name = tuple(leaf.shape), np.dtype(leaf.dtype), name_of(path)
    stacked = any(str(getattr(k, "key", "")) == "blocks" for k in path)
    if not np.issubdtype(dtype, np.floating):
      v = np.zeros(shape, dtype)
    elif name in ("scale", "cluster_size"):
      v = np.ones(shape, dtype)
    elif name == "bias":
      v = np.zeros(shape, dtype)
    elif name in ("embedding", "embed_sum"):
      v = rng.standard_normal(shape).astype(dtype)
    else:
      fan_axes = shape[1 if stacked and len(shape) > 2 else 0:-1]
      fan_in = max(1, int(np.prod(fan_axes))) if len(shape) > 1 else 1
      v = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)
    values.append(v)
  # EMA codebooks: embedding = embed_sum / cluster_size; keep them consistent.
  by_path = {jax.tree_util.keystr(p): i for i, (p, _) in enumerate(flat)}
  for key, i in by_path.items():
    if "'embed_sum'" in key:
      j = by_path.get(key.replace("'embed_sum'", "'embedding'"))
      if j is not None:
        values[i] = values[j].copy()
  state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in values])
  return nnx.merge(graphdef, state)


def build_models(cfg, *, workdir: str | None = None, seed: int = 0,
                 llm_stage: str | None = None, codec_stage: str = "codec"):
  """(S2ST, Codec, SpeakerEncoder): trained from `workdir`, or random (`workdir=None`).

  Trained: the LLM-side model from `llm_stage` (default: the latest of rl2, rl1, sft,
  pretrain that has checkpoints) and the codec + speaker encoder from `codec_stage`.
  """
  from liveinterp.models.voice import VoiceCodec
  if workdir is None:
    return (random_model(lambda r: s2st_lib.S2ST(cfg, rngs=r), seed),
            random_model(lambda r: Codec(cfg, rngs=r), seed + 1),
            random_model(lambda r: SpeakerEncoder(cfg, rngs=r), seed + 2))
  if llm_stage is None:
    found = [s for s in LLM_STAGES if os.path.isdir(checkpoint_dir(workdir, s))]
    if not found:
      raise FileNotFoundError(
          f"{workdir}: no checkpoints of any of the stages {LLM_STAGES} (looked for "
          f"{checkpoint_dir(workdir, '<stage>')})")
    llm_stage = found[0]
  model, _ = load_params(workdir, llm_stage, cfg)
  voice_codec, _ = load_params(workdir, codec_stage, cfg,
                               model_fn=lambda r: VoiceCodec(cfg, rngs=r))
  return model, voice_codec.codec, voice_codec.speaker


# ---- checkpoints -------------------------------------------------------------------------
LLM_STAGES = ("rl2", "rl1", "sft", "pretrain")  # latest first


def _stage_model_fn(stage: str, cfg) -> Callable[[nnx.Rngs], nnx.Module]:
  from liveinterp.models.voice import VoiceCodec
  if stage == "codec":
    return lambda rngs: VoiceCodec(cfg, rngs=rngs)
  return lambda rngs: s2st_lib.S2ST(cfg, rngs=rngs)


def checkpoint_dir(workdir: str, stage: str) -> str:
  """Where a stage's orbax checkpoints live: `<workdir>/<stage>/checkpoints`."""
  return os.path.join(os.path.abspath(workdir), stage, "checkpoints")


def load_params(workdir: str, stage: str, cfg, *, step: int | None = None,
                model_fn: Callable[[nnx.Rngs], nnx.Module] | None = None,
                sharding: jax.sharding.Sharding | None = None):
  """Restores a stage's model weights (params + non-trainable model state) only.

  Reads the `state` item written by `liveinterp.common.checkpointing.Checkpointer`
  (a `TrainState`), skipping the optimizer state and step. `model_fn` builds the model
  the stage trained (default: `VoiceCodec` for `codec`, `S2ST` otherwise). Returns
  `(model, step)` with the restored weights merged in. Raises FileNotFoundError naming
  the directory when there is no checkpoint. Arrays land on `sharding` (default: the
  first local device; the checkpoint may have been written on any mesh).
  """
  from liveinterp.common import checkpointing
  from liveinterp.models import variables

  directory = checkpoint_dir(workdir, stage)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints for stage {stage!r}: {directory} does not exist")
  model_fn = model_fn or _stage_model_fn(stage, cfg)
  with nnx.use_eager_sharding(False):
    abstract_model = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
  graphdef, params, rest = variables.split_model(abstract_model)
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  to_struct = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)  # noqa: E731
  ckpt = checkpointing.Checkpointer(directory)
  try:
    step = ckpt.latest_step if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoints for stage {stage!r} in {directory}")
    params, rest = ckpt.restore_params(jax.tree.map(to_struct, params), step=step,
                                       abstract_model_state=jax.tree.map(to_struct, rest))
  finally:
    ckpt.close()
  return nnx.merge(graphdef, params, rest), int(step)


__all__ = ["StreamingDecoder", "DecoderState", "StepOutputs", "state_bytes",
           "state_signature", "iter_translate", "translate_stream", "translate_waveforms",
           "warmup", "Detokenizer", "Segment", "StreamResult", "ChunkEvent", "load_params",
           "checkpoint_dir", "random_model", "build_models", "DecodeSpec", "LLM_STAGES",
           "prompt_for", "speech_turns_for"]
