"""Host bookkeeping of `session.translate_stream` is O(1) per chunk (issue #11).

A fake decoder returns canned `StepOutputs` (numpy, no JAX program runs), so 10,000
chunks take seconds. The cost of a chunk is counted, not timed: the number of Python
lines executed in `liveinterp` code (sys.settrace) between two consecutive `on_chunk`
callbacks. The old bookkeeping recomputed the computation-aware emissions over the whole
history on every chunk (a Python loop over all previous chunks), so its count grew with
the chunk index; the running clock keeps it flat. A short stream checks that the results
equal that old O(N^2) formula, written out here as the reference.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from liveinterp.eval import latency as latency_lib
from liveinterp.inference import session as session_lib
from liveinterp.inference.decode_step import StepOutputs

_LIB = os.sep + "liveinterp" + os.sep
_HERE = os.path.abspath(__file__)


class FakeDecoder:
  """Duck-typed `StreamingDecoder`: canned outputs, a text turn on even chunks, speech on
  chunks divisible by 3, a source transcript on chunks divisible by 5."""
  chunk_samples, chunk_ms, sample_rate, max_turn_tokens = 4, 10, 400, 4

  def __init__(self):
    self.steps = 0

  def init_stream(self, batch, rng=0):
    return np.zeros(batch, np.int32)

  def step(self, chunks_b, audio_bc, valid_b=None, forced=None, forced_n=None):
    self.steps += 1
    b, m = audio_bc.shape[0], self.max_turn_tokens
    valid = np.ones(b, bool) if valid_b is None else np.asarray(valid_b, bool)
    chunks = chunks_b + valid.astype(np.int32)
    t = chunks - 1
    ids = np.tile(np.arange(40, 40 + m, dtype=np.int32), (b, 1))
    n_text = np.where(valid & (t % 2 == 0), 2, 0).astype(np.int32)
    n_src = np.where(valid & (t % 5 == 0), 1, 0).astype(np.int32)
    n_samples = np.where(valid & (t % 3 == 0), 8, 0).astype(np.int32)
    zf = np.zeros((b, m), np.float32)
    out = StepOutputs(
        valid=valid, chunk_index=t, end_ms=chunks * self.chunk_ms, tokens=ids,
        n_tokens=n_text + 1, text=ids, n_text=n_text, src=ids + 10, n_src=n_src,
        speech=ids, n_speech=np.zeros(b, np.int32),
        audio=np.full((b, 8), 0.25, np.float32) * (1 + t[:, None] % 4), n_samples=n_samples,
        logprob_raw=zf, logprob_sampled=zf, values=zf, speaker=np.zeros((b, 2), np.float32))
    return chunks, out


def _blocks(n_chunks: int, batch: int, chunk_samples: int):
  """One chunk-sized block at a time (nothing grows on the feeding side either)."""
  block = np.zeros((batch, chunk_samples), np.float32)
  for _ in range(n_chunks):
    yield block


def _lines_per_chunk(n_chunks: int, batch: int = 2) -> list[int]:
  """Python lines executed in liveinterp code between consecutive chunk callbacks."""
  count = [0]
  marks: list[int] = []

  def local(frame, event, arg):
    if event == "line":
      count[0] += 1
    return local

  def tracer(frame, event, arg):
    name = frame.f_code.co_filename
    return local if _LIB in name and name != _HERE else None

  dec = FakeDecoder()
  sys.settrace(tracer)
  try:
    session_lib.translate_stream(dec, _blocks(n_chunks, batch, dec.chunk_samples),
                                 batch=batch, on_chunk=lambda ev: marks.append(count[0]))
  finally:
    sys.settrace(None)
  assert dec.steps == n_chunks
  return np.diff(marks).tolist()  # entry k: the work of chunk k + 1


@pytest.mark.skipif(sys.gettrace() is not None, reason="another tracer (coverage) is on")
def test_host_work_per_chunk_is_flat_over_10000_chunks():
  per_chunk = _lines_per_chunk(10_001)
  # chunk 100 vs chunk 10,000: the same phase of the canned pattern (both % 30 == 10).
  assert per_chunk[100 - 1] > 0
  assert per_chunk[10_000 - 1] == per_chunk[100 - 1]
  # and nothing drifts anywhere along the stream (period 30 of the canned pattern).
  assert per_chunk[40:70] == per_chunk[-30:]


def _reference_ready(chunk_end_ms, compute_ms) -> list[float]:
  """The old bookkeeping: at every chunk t, the computation-aware finish time recomputed
  over the whole history 0..t (O(N^2) over a stream)."""
  out = []
  for t in range(len(chunk_end_ms)):
    finish = 0.0
    for k in range(t + 1):
      finish = max(float(chunk_end_ms[k]), finish) + float(compute_ms[k])
    out.append(finish)
  return out


def test_results_equal_the_quadratic_reference_on_a_short_stream():
  dec = FakeDecoder()
  n, lengths = 37, np.asarray([37 * 4 - 2, 21 * 4 + 1])  # stream 1 ends inside chunk 21
  audio = np.ones((2, n * dec.chunk_samples), np.float32)
  events = []
  results = session_lib.translate_stream(dec, [(audio, lengths)], batch=2,
                                         on_chunk=events.append)
  assert len(events) == n
  chunk_end = [(ev.chunk + 1) * dec.chunk_ms for ev in events]
  compute = [ev.compute_ms for ev in events]
  ready = _reference_ready(chunk_end, compute)
  np.testing.assert_array_equal(
      ready, latency_lib.computation_aware_emissions(chunk_end, compute))
  for r, res in enumerate(results):
    valid = [ev for ev in events if ev.valid[r]]
    assert len(valid) == (n if r == 0 else 22)
    assert res.text == "".join(ev.text[r] for ev in valid)
    assert res.src == "".join(ev.src[r] for ev in valid)
    assert res.compute_ms == [ev.compute_ms for ev in valid]
    assert res.source_ms == float(valid[-1].end_ms[r])
    emitted = [ev for ev in valid if ev.text[r] or ev.src[r] or len(ev.audio[r])]
    assert [s.chunk for s in res.segments] == [ev.chunk for ev in emitted]
    assert [s.ready_ms for s in res.segments] == [ready[ev.chunk] for ev in emitted]
    assert [s.emit_ms for s in res.segments] == [float(ev.end_ms[r]) for ev in emitted]
    np.testing.assert_array_equal(
        res.speech, np.concatenate([ev.audio[r] for ev in emitted]))
    assert res.text and res.src and res.speech.size       # the pattern exercises all three
    spoken = [s for s in res.segments if s.audio_ms > 0]
    _, spans = latency_lib.speech_delays([s.emit_ms for s in spoken],
                                         [s.audio_ms for s in spoken],
                                         [[0.0] for _ in spoken])
    assert [(s.play_start_ms, s.play_end_ms) for s in spoken] == [tuple(x) for x in spans]
