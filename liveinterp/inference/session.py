"""Streaming translation, host side: feeds audio to a `decoder.StreamingDecoder`, times
every step, detokenizes text deltas and assembles speech with emission times (ms of source
consumed) for the latency metrics of `liveinterp.eval.latency`.

    results = translate_stream(decoder, blocks, batch=B, tokenizer=tok)
    for ev in iter_translate(decoder, blocks): ...      # one `ChunkEvent` per chunk

Host bookkeeping per chunk is O(1) in the stream's length (`translate_stream` keeps a
running computation-aware clock and appends segments), so unbounded streams cost the
same per chunk at minute 1 and at minute 60.

Live source transcript (`data.src_transcript`, DESIGN §1): a turn `<src> w+ [<text> ...]
<eot>` carries the newly heard source words before its translation. They are kept apart
from the target text everywhere: `Segment.source_text` (that turn's source words),
`StreamResult.source_text` (the whole transcript) and `StreamResult.source_words` (each
transcript word with its emission and computation-aware ready times, as target words
have). With the transcript off (no `<src>` turns) these are empty and every other output
is unchanged.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import jax
import numpy as np

from liveinterp.eval import latency as latency_lib
# Flax-free: the session also drives the exported decoder of `liveinterp.serving.loader`
# (anything with `StreamingDecoder`'s interface), in processes without flax or the models.
from liveinterp.inference.stream_types import EOT, DecoderState, check_finite

if TYPE_CHECKING:
  from liveinterp.inference.decoder import StreamingDecoder

# A transcript word: one CJK character (Chinese/Japanese have no spaces), or a run of
# other non-space characters; tokens without a letter or digit (punctuation) are no words.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff"
_WORD = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def transcript_words(text: str) -> list[str]:
  """Words of a detokenized transcript piece, in order (see `_WORD`)."""
  return [w for w in _WORD.findall(text) if any(ch.isalnum() for ch in w)]


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
  src_ids: list = dataclasses.field(default_factory=list)  # the turn's `<src>` word ids

  @property
  def source_text(self) -> str:
    """The newly heard source words of this turn (live transcript; "" without)."""
    return self.src


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
  # Live transcript, one entry per word (`transcript_words` of each turn's source text):
  # {"word", "chunk", "emit_ms", "ready_ms"}, times as the target words' (its segment's).
  source_words: list = dataclasses.field(default_factory=list)

  @property
  def source_text(self) -> str:
    """The whole live source transcript ("" when the model wrote none)."""
    return self.src

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
            "rtf": self.rtf,
            "segments": [dict(dataclasses.asdict(s), source_text=s.source_text)
                         for s in self.segments],
            "source_text": self.source_text,
            "source_words": [dict(w) for w in self.source_words]}


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
  src_ids: list | None = None  # [B] list[int]: the turn's `<src>` word ids

  @property
  def source_text(self) -> list:
    """[B] str: the newly heard source words of each stream's turn."""
    return self.src


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
    check_finite(x, "audio block")
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
    texts, srcs, ids, src_ids, audio = [], [], [], [], []
    for r in range(b):
      tid = [int(i) for i in host.text[r, :host.n_text[r]]]
      sid = [int(i) for i in host.src[r, :host.n_src[r]]]
      texts.append(detok(tid, said_text[r]))
      srcs.append(detok(sid, said_src[r]))
      said_text[r] |= bool(texts[-1])
      said_src[r] |= bool(srcs[-1])
      ids.append(tid)
      src_ids.append(sid)
      audio.append(np.asarray(host.audio[r, :host.n_samples[r]]))
    yield ChunkEvent(chunk=t, compute_ms=compute_ms, valid=np.asarray(host.valid),
                     end_ms=(np.asarray(host.chunk_index, np.float64) + 1) * decoder.chunk_ms,
                     text=texts, src=srcs, text_ids=ids,
                     speech_tokens=np.asarray(host.n_speech), audio=audio,
                     src_ids=src_ids)


def warmup(decoder: StreamingDecoder, batch: int) -> float:
  """Compiles `step` for `batch` streams on a throwaway state; returns seconds taken."""
  t0 = time.perf_counter()
  st = decoder.init_stream(batch, 0)
  st, out = decoder.step(st, np.zeros((batch, decoder.chunk_samples), np.float32))
  jax.block_until_ready(out)
  return time.perf_counter() - t0


class ReadyClock:
  """Running computation-aware clock of one batch of streams: `tick(T_t, c_t)` returns
  finish_t = max(T_t, finish_{t-1}) + c_t, the last entry of
  `liveinterp.eval.latency.computation_aware_emissions` over chunks 0..t, in O(1) per
  chunk instead of recomputing the whole history (same float64 arithmetic, same
  numbers)."""

  def __init__(self):
    self.finish_ms = 0.0

  def tick(self, chunk_end_ms: float, compute_ms: float) -> float:
    self.finish_ms = max(float(chunk_end_ms), self.finish_ms) + float(compute_ms)
    return self.finish_ms


def translate_stream(decoder: StreamingDecoder, audio_iter: Iterable, *,
                     batch: int | None = None, tokenizer=None, rng: int | jax.Array = 0,
                     on_chunk: Callable[[ChunkEvent], None] | None = None,
                     write_from: Sequence[int] | None = None) -> list[StreamResult]:
  """Translates a batch of streams fed as blocks of audio; returns one result per stream.

  Text deltas are detokenized per turn; speech segments are decoded per turn and placed
  on the playback queue of `liveinterp.eval.latency.speech_delays` (back to back, each
  no earlier than its emission). Emission times are in ms of source consumed (chunk end);
  `ready_ms` adds the measured compute (computation-aware, `computation_aware_emissions`,
  kept as a running `ReadyClock`). The live source transcript (`<src>` words) goes to
  `source_text` / `source_words`, never into the target text. Host bookkeeping per chunk
  is O(1) in the stream's length: segments, text pieces and audio are appended, and
  joined once at the end.
  """
  results: list[StreamResult] | None = None
  speech: list[list[np.ndarray]] = []
  text: list[list[str]] = []
  src: list[list[str]] = []
  clock = ReadyClock()
  for ev in iter_translate(decoder, audio_iter, batch=batch, tokenizer=tokenizer, rng=rng,
                          write_from=write_from):
    if results is None:
      results = [StreamResult(segments=[], sample_rate=decoder.sample_rate)
                 for _ in range(len(ev.valid))]
      speech = [[] for _ in ev.valid]
      text = [[] for _ in ev.valid]
      src = [[] for _ in ev.valid]
    ready = clock.tick((ev.chunk + 1) * decoder.chunk_ms, ev.compute_ms)
    for r, res in enumerate(results):
      if not ev.valid[r]:
        continue
      res.source_ms = float(ev.end_ms[r])
      res.compute_ms.append(ev.compute_ms)
      text[r].append(ev.text[r])
      src[r].append(ev.src[r])
      n_audio = len(ev.audio[r])
      if ev.text[r] or ev.src[r] or n_audio:
        seg = Segment(
            chunk=int(ev.end_ms[r] // decoder.chunk_ms) - 1, emit_ms=float(ev.end_ms[r]),
            ready_ms=float(ready), compute_ms=ev.compute_ms, text=ev.text[r], src=ev.src[r],
            text_ids=ev.text_ids[r], speech_tokens=int(ev.speech_tokens[r]),
            audio_ms=1000.0 * n_audio / decoder.sample_rate,
            src_ids=ev.src_ids[r] if ev.src_ids is not None else [])
        res.segments.append(seg)
        speech[r].append(ev.audio[r])
        if seg.src:
          res.source_words += [{"word": w, "chunk": seg.chunk, "emit_ms": seg.emit_ms,
                                "ready_ms": seg.ready_ms}
                               for w in transcript_words(seg.src)]
    if on_chunk is not None:
      on_chunk(ev)
  if results is None:
    raise ValueError("translate_stream: the audio iterator yielded no samples")
  for r, res in enumerate(results):
    res.text = "".join(text[r])
    res.src = "".join(src[r])
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


__all__ = ["transcript_words", "Detokenizer", "Segment", "StreamResult", "ChunkEvent", "ReadyClock",
           "iter_translate", "warmup", "translate_stream", "translate_waveforms"]
