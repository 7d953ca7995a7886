"""`liveinterp.eval.latency` against SimulEval 1.1.4's own scorers (issue #10).

Scorer against scorer, not the command line (whose `--computation-aware` also turns the
plain columns computation-aware): each metric of ours on seeded random delay sequences
equals `LATENCY_SCORERS_DICT[name](computation_aware=..., use_ref_len=...)` on the same
instance, with and without a reference, plain and computation-aware. The instance-level
definitions (delays capped at the source duration, elapsed = delay + compute so far,
the speech playback queue) are checked against SimulEval's own `Instance` classes.
"""

import argparse
import json
import types

import numpy as np
import pytest
from simuleval.data.segments import TextSegment
from simuleval.evaluator import instance as se_instance
from simuleval.evaluator.scorers import latency_scorer as se

from liveinterp.eval import latency as L

OURS = {
    "AL": lambda d, src, ref: L.average_lagging(d, src, ref),
    "LAAL": lambda d, src, ref: L.length_adaptive_average_lagging(d, src, ref),
    "AP": lambda d, src, ref: L.average_proportion(d, src, ref),
    "DAL": lambda d, src, ref: L.differentiable_average_lagging(d, src),
    "StartOffset": lambda d, src, ref: float(d[0]),
    "EndOffset": lambda d, src, ref: float(d[-1]) - src,
}
SCORED = ("AL", "LAAL", "AP", "DAL", "StartOffset", "EndOffset")


def _instance(delays, source_ms, ref_len=None, elapsed=None, index=0, intervals=None):
  """A SimulEval `LogInstance` (what its scorers read back from an instances.log)."""
  info = {"index": index, "delays": [float(x) for x in delays],
          "elapsed": [float(x) for x in (delays if elapsed is None else elapsed)],
          "prediction": " ".join(["w"] * len(delays)), "source_length": float(source_ms),
          "reference": " ".join(["r"] * ref_len) if ref_len else ""}
  ins = se_instance.LogInstance(json.dumps(info))
  if ref_len is None:
    ins.reference = None  # SimulEval: no reference -> the hypothesis length
  if intervals is not None:
    ins.intervals = [list(map(float, iv)) for iv in intervals]
  return ins


def _simuleval(name, ins, computation_aware=False, use_ref_len=True):
  return se.LATENCY_SCORERS_DICT[name](computation_aware=computation_aware,
                                       use_ref_len=use_ref_len).compute(ins)


def _random_episode(rng, chunk_ms=320.0):
  """Word delays at chunk ends (several words per chunk, silent chunks), a source that
  ends inside the last chunk (so its end is zero-padded), per-chunk compute times."""
  n_chunks = int(rng.integers(1, 25))
  source_ms = float((n_chunks - 1) * chunk_ms + rng.uniform(1.0, chunk_ms))
  n_words = int(rng.integers(1, 40))
  word_chunk = np.sort(rng.integers(0, n_chunks, n_words))
  compute = rng.uniform(5.0, 400.0, n_chunks)
  chunk_end = (np.arange(n_chunks) + 1.0) * chunk_ms
  raw = chunk_end[word_chunk]                                   # uncapped emission times
  elapsed = L.simuleval_elapsed(chunk_end, compute, source_ms)[word_chunk]
  return raw, elapsed, source_ms, n_words


def _cases(seed, n=200):
  rng = np.random.default_rng(seed)
  for _ in range(n):
    raw, elapsed, src, n_words = _random_episode(rng)
    ref_len = int(rng.integers(1, 2 * n_words + 5))
    yield raw, elapsed, src, ref_len


@pytest.mark.parametrize("with_ref", [True, False])
@pytest.mark.parametrize("use_ref_len", [True, False])
def test_each_function_equals_the_simuleval_scorer(with_ref, use_ref_len):
  """Plain delays, including ones past |X| (SimulEval's functions accept them)."""
  for raw, _, src, ref_len in _cases(0):
    ins = _instance(raw, src, ref_len if with_ref else None)
    ref = ref_len if with_ref and use_ref_len else None
    for name in SCORED:
      want = _simuleval(name, ins, use_ref_len=use_ref_len)
      assert OURS[name](raw, src, ref) == pytest.approx(want, rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("with_ref", [True, False])
def test_computation_aware_equals_the_simuleval_ca_scorer(with_ref):
  for raw, elapsed, src, ref_len in _cases(1):
    delays = L.cap_delays(raw, src)
    ins = _instance(delays, src, ref_len if with_ref else None, elapsed=elapsed)
    ref = ref_len if with_ref else None
    ours = L.score(elapsed, src, ref, cap_to_source=False)
    for name in SCORED:
      want = _simuleval(name, ins, computation_aware=True)
      assert OURS[name](elapsed, src, ref) == pytest.approx(want, rel=1e-9, abs=1e-9), name
      assert getattr(ours, name) == pytest.approx(want, rel=1e-9, abs=1e-9), name


@pytest.mark.parametrize("with_ref", [True, False])
def test_score_caps_at_the_source_and_equals_simuleval(with_ref):
  """`score` on raw chunk-end delays == SimulEval on the source it actually consumed."""
  overshoot = 0
  for raw, _, src, ref_len in _cases(2):
    overshoot += int(raw[-1] > src)
    ref = ref_len if with_ref else None
    ours = L.score(raw, src, ref)
    ins = _instance(np.minimum(raw, src), src, ref)
    for name in SCORED:
      assert getattr(ours, name) == pytest.approx(_simuleval(name, ins), rel=1e-9,
                                                  abs=1e-9), name
    assert ours.EndOffset <= 0 and ours.StartOffset <= src
  assert overshoot > 50  # the cases do exercise the zero-padded last chunk


def test_reference_length_is_used_when_hypothesis_length_differs():
  """The case that failed before issue #10: an under-generating hypothesis."""
  d, src, ref_len = [640.0, 960.0, 1600.0], 2000.0, 10
  ins = _instance(d, src, ref_len)
  ours = L.score(d, src, ref_len)
  assert ours.AL == pytest.approx(_simuleval("AL", ins))   # 866.7 ms (before: 400)
  assert ours.AP == pytest.approx(_simuleval("AP", ins))   # 0.16 (before: 0.53)
  assert ours.AL == pytest.approx((640 + 760 + 1200) / 3)
  assert ours.LAAL == ours.AL  # max(|Y|, |Y*|) = |Y*|
  # --no-use-ref-len: hypothesis length, as before
  assert L.score(d, src, ref_len, use_ref_len=False).AL == pytest.approx(
      _simuleval("AL", ins, use_ref_len=False))
  # over-generation: LAAL keeps max(|Y|, |Y*|), AL/AP take |Y*|
  d2 = list(np.linspace(100, 1800, 12))
  ins2 = _instance(d2, src, 4)
  s2 = L.score(d2, src, 4)
  for name in SCORED:
    assert getattr(s2, name) == pytest.approx(_simuleval(name, ins2)), name
  assert s2.AP > 1  # SimulEval's AP with the reference length can exceed 1


def test_source_duration_cap():
  # |X| = 1000 ms, 320 ms chunks: the 4th chunk ends at 1280 ms, zero-padded after 1000.
  s = L.score([320, 1280, 1280], 1000, 3)
  assert s.EndOffset == 0 and s.AL == pytest.approx((320 + (1000 - 1000 / 3)) / 2)
  np.testing.assert_allclose(L.cap_delays([320, 1280], 1000), [320, 1000])
  # the offline row's rule is the same: every word at the end of the source
  off = L.score([1000.0] * 5, 1000, 5)
  assert off.AL == 1000 and off.AP == 1 and off.EndOffset == 0
  # computation-aware times are not capped
  assert L.score([900, 1300], 1000, 2, cap_to_source=False).EndOffset == 300
  # live-stream ready times start the padded chunk when the source ends
  np.testing.assert_allclose(L.computation_aware_emissions([640, 1280], [10, 50], 1000),
                             [650, 1050])
  np.testing.assert_allclose(L.simuleval_elapsed([640, 1280], [10, 50], 1000), [650, 1060])


def test_empty_output_is_counted_at_worst_latency():
  """SimulEval skips an instance with no output; we score it and count it."""
  eps = [L.score([200, 400], 1000, 2), L.score([], 1500, 4, [300.0], [4])]
  assert eps[1].empty and not eps[0].empty
  assert (eps[1].AL, eps[1].LAAL, eps[1].DAL, eps[1].StartOffset) == (1500,) * 4
  assert eps[1].AP == 1 and eps[1].EndOffset == 0 and eps[1].FLAL == 1200
  agg = L.corpus_scores(eps)
  assert agg["episodes"] == 2 and agg["episodes_without_output"] == 1
  assert agg["AL"] == pytest.approx((eps[0].AL + 1500) / 2)
  # skip_empty reproduces SimulEval's corpus mean, which drops the empty instance
  instances = {0: _instance([200, 400], 1000, 2), 1: _instance([], 1500, 4)}
  for name in SCORED:
    want = se.LATENCY_SCORERS_DICT[name]()(instances)
    assert L.corpus_scores(eps, skip_empty=True)[name] == pytest.approx(want), name


def test_corpus_mean_equals_simuleval_scorer_call():
  rng = np.random.default_rng(3)
  eps, instances = [], {}
  for i in range(30):
    raw, elapsed, src, n = _random_episode(rng)
    ref = int(rng.integers(1, 2 * n + 5))
    eps.append((L.score(raw, src, ref), L.score(elapsed, src, ref, cap_to_source=False)))
    instances[i] = _instance(np.minimum(raw, src), src, ref, elapsed=elapsed, index=i)
  for name in SCORED:
    for ca, idx in ((False, 0), (True, 1)):
      want = se.LATENCY_SCORERS_DICT[name](computation_aware=ca)(instances)
      got = L.corpus_scores([e[idx] for e in eps])[name]
      assert got == pytest.approx(want, rel=1e-9), (name, ca)


class _Loader:
  """The two things SimulEval's speech-input instance asks of its dataloader."""

  def __init__(self, n_samples, sr):
    self.n, self.sr = n_samples, sr

  def __getitem__(self, i):
    return {"source": [0.0] * self.n, "target": "r r r", "tgt_lang": "en"}

  def get_source_audio_info(self, i):
    return types.SimpleNamespace(samplerate=self.sr)

  def get_source_audio_path(self, i):
    return "source.wav"


def test_delays_and_elapsed_are_simuleval_instance_timestamps(monkeypatch):
  """SimulEval's speech-to-text instance, fed chunk by chunk with a fake clock: its
  `delays` are our capped chunk ends, its `elapsed` is `simuleval_elapsed`."""
  rng = np.random.default_rng(4)
  sr, chunk_ms = 16000, 320
  for _ in range(20):
    n_samples = int(rng.integers(1, 20 * chunk_ms * sr // 1000))
    src = 1000.0 * n_samples / sr
    n_chunks = -(-n_samples // (chunk_ms * sr // 1000)) + int(rng.integers(0, 3))
    compute = rng.uniform(1.0, 500.0, n_chunks)
    words = rng.integers(0, 3, n_chunks)
    clock = [1000.0]
    monkeypatch.setattr(se_instance, "time", types.SimpleNamespace(time=lambda: clock[0]))
    ins = se_instance.SpeechToTextInstance(0, _Loader(n_samples, sr),
                                           argparse.Namespace(eval_latency_unit="word"))
    for t in range(n_chunks):
      ins.send_source(chunk_ms)
      clock[0] += compute[t] / 1000.0
      if words[t]:
        ins.receive_prediction(TextSegment(content=" ".join(["w"] * int(words[t]))))
    chunk_end = (np.arange(n_chunks) + 1.0) * chunk_ms
    per_word = np.repeat(np.arange(n_chunks), words)
    np.testing.assert_allclose(ins.delays, L.cap_delays(chunk_end[per_word], src))
    np.testing.assert_allclose(ins.elapsed,
                               L.simuleval_elapsed(chunk_end, compute, src)[per_word],
                               rtol=1e-9)


def test_speech_playback_queue_is_simuleval_speech_output(tmp_path):
  """Our playback queue == SimulEval's `SpeechOutputInstance.summarize` intervals, and
  the speech EndOffset is measured from the end of the last played sample."""
  rng = np.random.default_rng(5)
  sr = 16000
  for _ in range(10):
    k = int(rng.integers(1, 8))
    write = np.sort(rng.uniform(0, 3000, k))
    n_samp = rng.integers(160, 16000, k)
    ins = se_instance.SpeechToSpeechInstance(
        0, _Loader(0, sr), argparse.Namespace(eval_latency_unit="word", output=tmp_path))
    ins.delays = list(write)
    ins.durations = [1000.0 * n / sr for n in n_samp]
    ins.prediction_list = [[0.0] * int(n) for n in n_samp]
    ins.target_sample_rate = sr
    ins.summarize()
    _, spans = L.speech_delays(write, ins.durations, [[0.0]] * k)
    np.testing.assert_allclose([[a, b - a] for a, b in spans], ins.intervals)
    src = 2500.0
    log = _instance(write, src, 5, intervals=ins.intervals)
    got = L.score(write, src, 5, cap_to_source=False, output_end_ms=spans[-1][1])
    assert got.EndOffset == pytest.approx(_simuleval("EndOffset", log))


def test_audible_word_offsets_skip_leading_silence():
  sr = 16000
  t = np.arange(int(0.6 * sr)) / sr
  tone = 0.3 * np.sin(2 * np.pi * 220 * t)
  audio = np.concatenate([np.zeros(int(0.25 * sr)), tone, np.zeros(int(0.2 * sr)), tone])
  offs = L.audible_word_offsets(audio, sr, 4)
  assert offs[0] == pytest.approx(250, abs=10)          # not 0: the silence is not heard
  assert offs == sorted(offs) and len(offs) == 4
  assert offs[2] == pytest.approx(1050, abs=10)          # the pause holds no onset
  assert L.audible_word_offsets(np.zeros(sr), sr, 2) == [0.0, 500.0]
  assert L.audible_word_offsets(audio, sr, 0) == []
