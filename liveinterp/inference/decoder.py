"""Streaming speech-to-speech decoder (device side): one jitted, fixed-shape function per
source chunk.

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
  4. speaker embedding of `speaker_window_ms` of *source* audio ending
     `voice_lag_chunks` chunks before this one (a rolling buffer in the state, so it
     follows speaker changes; the lag voices a turn from the audio its words were spoken
     in, see the voice span rule in `liveinterp.inference.decode_step`); computed for the
     rows that speak this chunk (with `codec_rows`, on those rows only); a row that
     waits keeps its last embedding, so a row's embedding never depends on the others;
  5. codec streaming decode of the turn's speech frames (conditioned on that embedding):
     frames every row has go through the codec in blocks (`codec_blocks`), the rest
     (rows of different lengths) in the same blocks with per-row frame counts
     (`codec_tail="masked"`; "frames": one frame per `while_loop` iteration), so each
     row's codec tail state advances only on its real frames -> audio delta
     `[B, frames * hop]` + valid sample counts.

`<eot>` deferral: a turn's closing `<eot>` is sampled but written into the cache at the
start of the next `step`, together with the next chunk's audio slots (one prefill of
`1 + slots` positions). The cache then holds exactly `<bos> <simul> <src> <tgt>
[A1][Y1][A2][Y2]...`, as in training, but a wait turn costs no separate LLM call.

Nothing grows with the stream: the LLM cache is a ring buffer with sinks, the encoder
keeps a bounded left context, codec and frontend keep fixed tails, the speaker buffer is
a fixed window. So cost and memory per chunk are flat on unbounded streams (the tests
run 10,000 chunks; `benchmarks/streaming.py` compares minute 1 with minute 60).

Host side (feeding audio, timing, detokenizing, assembling speech with emission times):
`liveinterp.inference.session`. Building / restoring the networks:
`liveinterp.inference.loading`.
"""

from __future__ import annotations

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from data_pipelines import stream_format as sfmt
from data_pipelines import tokenizer as tok_lib
from liveinterp.common.token_layout import TokenLayout
from liveinterp.inference import grammar as grammar_lib
from liveinterp.inference import sampling
from liveinterp.inference.decode_step import (DecodeSpec, _init_jit, _Models,
                                              _scan_donate, _scan_keep, _step_donate,
                                              _step_keep)
# The plain types and checks live in the flax-free `stream_types` (shared with the
# session and the exported decoder); re-exported here for existing callers.
from liveinterp.inference.stream_types import (EOT, PAD, DecoderState, StepOutputs,
                                               check_finite, step_inputs)
from liveinterp.models import s2st as s2st_lib
from liveinterp.models.codec import Codec
from liveinterp.models.voice import SpeakerEncoder


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

def voice_lag_for(cfg):
  """`cfg.stream.voice_lag_chunks`, or the base config's value for a config saved
  before the field existed (the decoder validates it)."""
  lag = cfg.stream.get("voice_lag_chunks", None)
  if lag is None:
    from configs import base  # pylint: disable=g-import-not-at-top
    lag = base.get_config().stream.voice_lag_chunks
  return lag


def check_turn_rows(turn_rows) -> tuple[int, ...] | str:
  """`turn_rows` as the decoder keeps it: "auto", or distinct sizes >= 1, largest first;
  a clear error for anything else (a bool, a non-integer, a size < 1)."""
  if turn_rows == "auto":
    return "auto"
  sizes = [turn_rows] if isinstance(turn_rows, (str, int, float)) else list(turn_rows)
  if any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
         for k in sizes):
    raise ValueError(f"turn_rows={turn_rows!r}: expected 'auto' or integers >= 1 (e.g. "
                     "(8, 4): the turn's token loop on at most that many rows once no more "
                     "write)")
  return tuple(sorted({int(k) for k in sizes}, reverse=True))


class StreamingDecoder:
  """Chunk-by-chunk S2ST (module docstring).

  Args:
    model: the `S2ST` composite (encoder + adapter + LLM).
    codec: the speech `Codec` (its decoder turns speech ids into audio).
    speaker_encoder: the `SpeakerEncoder` producing the codec's conditioning.
    tokenizer_layout: a `token_layout.TokenLayout` or a `data_pipelines` `Tokenizer`.
    cfg: the full config (`stream.*`, `audio.sample_rate`).
    temperature: 0 = greedy; > 0 samples.
    top_p: nucleus mass (1 = off).
    grammar: mask ids with the turn grammar (else only "last budget token is <eot>").
    allow_src: the grammar lets a turn start with `<src> w+` (the live source
      transcript); None (default) = `cfg.data.src_transcript`, what the model was
      trained to write.
    max_turn_tokens: decode budget per chunk (default `cfg.stream.max_turn_tokens`).
    speaker_window_ms: source audio the speaker embedding is computed from.
    voice_lag_chunks: d, the speaker window ends d chunks before the chunk being
      answered (voice span, `decode_step` module docstring); None (default) =
      `cfg.stream.voice_lag_chunks` (the base config's value for configs saved before
      the field existed); 0 = the window ends at the current chunk.
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
    codec_tail: how frames that only some rows have are decoded: "masked" (default) in
      the same blocks as the common frames, each row's codec state advancing over
      exactly its own frames (`Codec.decode_step(..., n_valid_b)`); "frames" (the
      previous path) one frame per `while_loop` iteration at full batch. Same audio.
    codec_rows: 0 (default) = the codec and speaker encoder run on every row of the
      batch, speaking or not; k > 0 = on the speaking rows only, gathered k at a time
      (as many groups of k as there are speaking rows, one when at most k speak): a
      server's batch of B streams, of which a few speak per chunk, pays the codec for k
      rows, not B.
      Same audio, codec state and speaker embeddings (rows are independent).
    turn_rows: () (default) = the turn's token loop runs on every row until the last
      one ends its turn; e.g. (8, 4) = once at most 8 rows are still writing, the loop
      goes on over those 8 only (their cache rows gathered, written back at the end),
      then over 4: a chunk where one stream speaks a long turn and the others wait
      pays the long turn's token steps for 4 rows, not B (`decode_step._decode_turn`).
      Sizes >= the batch are skipped; "auto" = B/2, B/4, ..., 1. Same tokens,
      log-probabilities and values (each level compiles one more copy of the token
      step: worth it for batches of several streams, a no-op for one).
    donate: donate the input state to `step`/`scan` (in-place cache updates; a state
      passed in must not be used again).
  """

  def __init__(self, model: s2st_lib.S2ST, codec: Codec, speaker_encoder: SpeakerEncoder,
               tokenizer_layout, cfg, *, temperature: float = 0.0, top_p: float = 1.0,
               grammar: bool = True, allow_src: bool | None = None,
               max_turn_tokens: int | None = None, speaker_window_ms: int = 3000,
               return_logits: bool = False, codec_blocks: Sequence[int] = (16, 4),
               donate: bool = True, prompt_ids: Sequence[int] | None = None,
               decode_speech: bool = True, speech_turns: bool = True,
               voice_lag_chunks: int | None = None, codec_tail: str = "masked",
               codec_rows: int = 0, turn_rows: Sequence[int] | str = ()):
    layout = tokenizer_layout
    if not isinstance(layout, TokenLayout):
      layout = TokenLayout.from_tokenizer(layout)
    sampling.check_params(temperature, top_p)
    if allow_src is None:
      allow_src = bool(cfg.data.get("src_transcript", False))
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
    lag = voice_lag_for(cfg) if voice_lag_chunks is None else voice_lag_chunks
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
      raise ValueError(f"stream.voice_lag_chunks={lag!r}: expected an integer >= 0 "
                       "(chunks the speaker window ends before the current one)")
    if codec_tail not in ("masked", "frames"):
      raise ValueError(f"codec_tail={codec_tail!r}: expected 'masked' or 'frames'")
    if (isinstance(codec_rows, bool) or not isinstance(codec_rows, (int, np.integer))
        or codec_rows < 0):
      raise ValueError(f"codec_rows={codec_rows!r}: expected an integer >= 0 (0 = the "
                       "codec runs on every row; k = on the speaking rows, k at a time)")
    turn_rows = check_turn_rows(turn_rows)
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
        decode_speech=bool(decode_speech), voice_lag_chunks=int(lag),
        codec_tail=str(codec_tail), codec_rows=int(codec_rows), turn_rows=turn_rows)
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
    audio, valid, forced, forced_n = step_inputs(
        self, int(state.chunks.shape[0]), audio_chunk_bc, valid_b, forced_tokens_bm,
        forced_len_b)
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
      check_finite(audio_ncb, "audio")
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


def _check_shape(x, shape: tuple, name: str):
  if tuple(np.shape(x)) != shape:
    raise ValueError(f"{name} has shape {tuple(np.shape(x))}, expected {list(shape)}")
  return x


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


__all__ = ["StreamingDecoder", "DecoderState", "StepOutputs", "DecodeSpec", "state_bytes",
           "state_signature", "prompt_for", "speech_turns_for", "voice_lag_for",
           "check_finite", "EOT", "PAD"]
