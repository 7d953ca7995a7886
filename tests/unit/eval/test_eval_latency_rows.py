"""How the evaluation (`liveinterp.eval.streaming_metrics`) turns streaming results into
latency rows (issue #10): text delays capped at the source, SimulEval's computation-aware elapsed, speech onsets from a
playback queue that starts at the first voiced sample."""

import numpy as np

from liveinterp.eval import streaming_metrics as sm
from liveinterp.inference.session import Segment, StreamResult

SR = 16000


def _seg(chunk, text, audio_ms=0.0, chunk_ms=640):
  return Segment(chunk=chunk, emit_ms=(chunk + 1) * chunk_ms, ready_ms=-1.0, compute_ms=0.0,
                 text=text, src="", text_ids=[], speech_tokens=0, audio_ms=audio_ms)


def test_text_delays_cap_at_source_and_add_all_compute_so_far():
  segs = [_seg(0, "a b"), _seg(2, "c")]           # emitted at 640 and 1920 ms
  assert sm.text_delays(segs, "en") == [640, 640, 1920]
  assert sm.text_delays(segs, "en", source_ms=1500.0) == [640, 640, 1500]
  ca = sm.text_delays(segs, "en", True, compute_ms=[10.0, 20.0, 30.0], source_ms=1500.0)
  assert ca == [650, 650, 1560]                      # capped emission + cumulative compute
  # Without per-chunk compute the segment's own ready time is used.
  assert sm.text_delays(segs, "en", True) == [-1.0, -1.0, -1.0]


def test_speech_word_delays_queue_segments_and_skip_leading_silence():
  quiet = np.zeros(int(0.2 * SR), np.float32)     # 200 ms of silence, then a tone
  tone = 0.3 * np.sin(2 * np.pi * 220 * np.arange(int(0.3 * SR)) / SR).astype(np.float32)
  a = np.concatenate([quiet, tone])                  # segment 1: 500 ms
  b = tone[: int(0.1 * SR)]                          # segment 2: 100 ms
  res = StreamResult(segments=[_seg(0, "one", 500.0), _seg(0, "two", 100.0)],
                     speech=np.concatenate([a, b]), compute_ms=[40.0], sample_rate=SR)
  delays, end = sm.speech_word_delays(res, "en", source_ms=2000.0)
  assert abs(delays[0] - (640 + 200)) <= 10         # first voiced sample, not the emission
  assert abs(delays[1] - (640 + 500)) <= 10         # queued behind segment 1
  assert abs(end - (640 + 600)) <= 1e-6
  ca, end_ca = sm.speech_word_delays(res, "en", 2000.0, computation_aware=True)
  assert abs(ca[0] - (640 + 40 + 200)) <= 10 and abs(end_ca - (680 + 600)) <= 1e-6


def test_latency_rows_use_the_reference_length_for_al():
  # 2 words written at 640 ms for a 4-word reference of a 2 s source: SimulEval's AL
  # uses |Y*| = 4, so the row is not flattered by under-generation.
  # AL = mean_i (d_i - i |X| / n) over both words: n = |Y*| = 4 -> (640 + 140) / 2.
  row = sm.latency_scores([[640.0, 640.0]], [2000.0], [4], [0.0])
  assert abs(row["AL"] - 390.0) < 1e-6
  ref_free = sm.latency_scores([[640.0, 640.0]], [2000.0], [4], [0.0], use_ref_len=False)
  assert abs(ref_free["AL"] - 140.0) < 1e-6        # n = |Y| = 2: (640 - 360) / 2
