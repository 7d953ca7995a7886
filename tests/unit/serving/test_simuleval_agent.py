"""The SimulEval agents (`liveinterp.serving.simuleval_agent`) run by SimulEval 1.1.4's own
evaluator on a micro run directory with random weights (seed 2: the greedy decoder both
writes and waits on these inputs).

Checked: SimulEval gets the text `session.translate_stream` writes with the same decoder,
stamped with the delays `liveinterp.evaluate` uses (`streaming_metrics.text_delays`);
SimulEval's AL / LAAL (its scores.tsv and its scorers per instance) equal
`liveinterp.eval.latency`'s on those delays; the speech agent's segments are the decoded
speech on the playback queue of `latency.speech_delays`; and the documented command line
(`simuleval --agent liveinterp/serving/simuleval_agent.py ...`) finds the agent and
writes the same instances. The last two run in the `slow` tier (`-m slow`): the
default suite keeps this file to one decoder compile.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas
import pytest
import soundfile as sf
from simuleval.data.segments import SpeechSegment
from simuleval.evaluator import build_evaluator
from simuleval.evaluator.instance import LogInstance
from simuleval.evaluator.scorers import latency_scorer as se
from simuleval.utils import EVALUATION_SYSTEM_LIST
from simuleval.utils.agent import build_system_args

from configs import micro
from liveinterp.common import cli, config as config_lib
from liveinterp.common.audio import resample
from liveinterp.eval import latency as L, streaming_metrics
from liveinterp.inference import loading, session
from liveinterp.models.voice import VoiceCodec
from liveinterp.serving import simuleval_agent
from tests.unit.inference.test_translate_cli import _save_stage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
AGENT_FILE = os.path.join(ROOT, "liveinterp", "serving", "simuleval_agent.py")
SR = 16000
SECONDS = (1.1, 0.75, 1.3)      # each ends inside its last 320 ms chunk
REFS = ("one two three", "four five", "six seven eight nine")


@pytest.fixture(scope="module")
def run(tmp_path_factory, serving_models):
  """A micro run dir (config.json, sft + codec checkpoints) and a 3-utterance test set;
  the S2ST weights are the serving tests' shared seed-2 model (conftest.py)."""
  root = tmp_path_factory.mktemp("simuleval")
  workdir = str(root / "run")
  cfg = micro.get_config()
  config_lib.save(cfg, os.path.join(workdir, "config.json"))
  _save_stage(workdir, "sft", serving_models[0], 5)
  voice = loading.random_model(lambda r: VoiceCodec(cfg, rngs=r), seed=3)
  _save_stage(workdir, "codec", voice, 1)
  rng = np.random.default_rng(0)
  wavs = []
  for i, s in enumerate(SECONDS):
    t = np.arange(int(s * SR)) / SR
    x = (0.4 * np.sin(2 * np.pi * (200 + 300 * i + 500 * t) * t)
         + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    path = str(root / f"utt{i}.wav")
    sf.write(path, x, SR)
    wavs.append(path)
  (root / "source.txt").write_text("\n".join(wavs) + "\n")
  (root / "target.txt").write_text("\n".join(REFS) + "\n")
  return {"root": root, "workdir": workdir, "wavs": wavs, "cfg": cfg,
          "source": str(root / "source.txt"), "target": str(root / "target.txt")}


def _argv(run, out, *extra):
  return ["simuleval", "--workdir", run["workdir"], "--source", run["source"],
          "--target", run["target"], "--output", str(out), "--source-segment-size", "320",
          "--max-turn-tokens", "16", "--no-progress-bar", *extra]


def _evaluate(monkeypatch, argv):
  """SimulEval's `cli.main` in-process (its argument helpers read sys.argv), returning
  the agent it built so the test can reuse the agent's decoder."""
  monkeypatch.setattr(sys, "argv", argv)
  saved = list(EVALUATION_SYSTEM_LIST)
  try:
    system, args = build_system_args()
    build_evaluator(args)(system)
  finally:
    EVALUATION_SYSTEM_LIST[:] = saved
  return system


def _instances(out):
  with open(os.path.join(out, "instances.log")) as f:
    return [json.loads(line) for line in f]


def _streamed(decoder, wavs):
  return _streamed_audio(decoder, [sf.read(w, dtype="float32")[0] for w in wavs])


def _streamed_audio(decoder, arrays):
  return [session.translate_stream(decoder, [a[None]], batch=1)[0] for a in arrays]


@pytest.fixture(scope="module")
def text_eval(run, tmp_path_factory):
  out = tmp_path_factory.mktemp("text_out")
  with pytest.MonkeyPatch.context() as mp:
    system = _evaluate(mp, _argv(run, out, "--agent-class",
                                 "liveinterp.serving.simuleval_agent.LiveInterpSpeechToText",
                                 "--latency-metrics", "AL", "LAAL",
                                 "--quality-metrics", "BLEU"))
  return system, str(out)


def test_text_agent_gets_translate_streams_text_and_delays(run, text_eval):
  system, out = text_eval
  assert isinstance(system, simuleval_agent.LiveInterpSpeechToText)
  assert system.tokenizer is None and not system.hold_partial_words  # [id] words
  results = _streamed(system.decoder, run["wavs"])
  logged = _instances(out)
  assert len(logged) == len(run["wavs"])
  wrote = 0
  for ins, res, seconds in zip(logged, results, SECONDS):
    assert ins["prediction"] == " ".join(res.text.split())
    source_ms = ins["source_length"]
    assert source_ms == pytest.approx(1000 * int(seconds * SR) / SR)
    # One push = one chunk: SimulEval's delays are the decoder's emission times,
    # capped at the source length, as liveinterp.evaluate scores them.
    assert ins["delays"] == streaming_metrics.text_delays(res.segments, "en",
                                                          source_ms=source_ms)
    wrote += len(ins["delays"])
    # Some words come before the source's end (the model wrote, and waited).
    assert any(d < source_ms for d in ins["delays"]) or not ins["delays"]
  assert wrote > 0
  assert any(ins["delays"] and ins["delays"][0] < ins["source_length"] for ins in logged)
  assert any(len(set(ins["delays"])) > 1 for ins in logged)  # writes in several turns


def test_simuleval_al_laal_equal_ours(run, text_eval):
  _, out = text_eval
  logged = _instances(out)
  ours = {"AL": [], "LAAL": []}
  for info in logged:
    if not info["delays"]:
      continue                    # SimulEval skips empty outputs
    ref_len = len(info["reference"].split(" "))
    d, src = info["delays"], info["source_length"]
    ins = LogInstance(json.dumps(info))
    al = L.average_lagging(d, src, ref_len)
    laal = L.length_adaptive_average_lagging(d, src, ref_len)
    assert se.ALScorer().compute(ins) == pytest.approx(al, abs=1e-9)
    assert se.LAALScorer().compute(ins) == pytest.approx(laal, abs=1e-9)
    ours["AL"].append(al)
    ours["LAAL"].append(laal)
    s = L.score(d, src, ref_len)   # the all-metrics entry point agrees
    assert (s.AL, s.LAAL) == pytest.approx((al, laal))
  assert ours["AL"]
  scores = pandas.read_csv(os.path.join(out, "scores.tsv"), sep="\t")
  for name in ("AL", "LAAL"):
    assert scores[name][0] == pytest.approx(round(float(np.mean(ours[name])), 3), abs=1e-3)


@pytest.mark.slow  # compiles the speech decoding program (~30 s of CPU more)
def test_speech_agent_segments_follow_the_playback_queue(run, tmp_path, monkeypatch):
  out = tmp_path / "speech_out"
  system = _evaluate(monkeypatch, _argv(
      run, out, "--agent-class", "liveinterp.serving.simuleval_agent.LiveInterpSpeechToSpeech",
      "--turns", "speech", "--codec-blocks", "", "--latency-metrics", "StartOffset", "--no-scoring"))
  assert isinstance(system, simuleval_agent.LiveInterpSpeechToSpeech)
  results = _streamed(system.decoder, run["wavs"])
  logged = _instances(str(out))
  spoke = 0
  for ins, res in zip(logged, results):
    src = ins["source_length"]
    spoken = [s for s in res.segments if s.audio_ms > 0]
    assert ins["durations"] == pytest.approx([s.audio_ms for s in spoken])
    assert ins["delays"] == pytest.approx([min(s.emit_ms, src) for s in spoken])
    _, spans = L.speech_delays(ins["delays"], ins["durations"], [[0.0]] * len(spoken))
    np.testing.assert_allclose(np.reshape([[a, b - a] for a, b in spans], (-1, 2)),
                               np.reshape(ins["intervals"], (-1, 2)))
    if spoken:
      spoke += 1
      y, sr = sf.read(ins["prediction"], dtype="float32")   # 16-bit PCM
      assert sr == SR
      # SimulEval's wav: the decoded speech, with silence where the queue waits for the
      # next segment to be written.
      want, pos, prev = [], 0, spans[0][0]
      for (a, b), s in zip(spans, spoken):
        n = int(round(s.audio_ms * SR / 1000))
        want += [np.zeros(int(SR * (a - prev) / 1000), np.float32), res.speech[pos:pos + n]]
        pos, prev = pos + n, b
      want = np.clip(np.concatenate(want), -1.0, 1.0)   # 16-bit PCM clips (random codec)
      assert y.size == want.size
      np.testing.assert_allclose(y, want, atol=2.0 / 32768)
  assert spoke > 0


@pytest.mark.slow  # a second interpreter (imports, restore; compiles come from the cache)
def test_command_line_finds_the_agent_file(run, text_eval, tmp_path):
  """`simuleval --agent liveinterp/serving/simuleval_agent.py` (the @entrypoint class),
  as a user runs it: the same instances as the in-process evaluation."""
  _, out_in_process = text_eval
  out = tmp_path / "cli_out"
  # The suite's environment (XLA_FLAGS, the persistent compilation cache of
  # tests/conftest.py) and its matmul precision: the same compiled programs, no recompile.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
             JAX_DEFAULT_MATMUL_PRECISION="highest")
  cmd = [sys.executable, "-m", "simuleval.cli"] + _argv(run, out, "--agent", AGENT_FILE,
                                                      "--latency-metrics", "AL", "LAAL")[1:]
  proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr[-3000:]
  got = _instances(str(out))
  want = _instances(out_in_process)
  assert [(g["prediction"], g["delays"]) for g in got] == [
      (w["prediction"], w["delays"]) for w in want]
  assert "LAAL" in proc.stdout


def _push_all(agent, samples, rate, segment_ms=320):
  """Feeds `samples` ([n] or [n, channels]) to the agent as SimulEval does (pushpop per
  segment, the last one finished); returns the words it wrote."""
  agent.reset()
  step, words = int(np.ceil(segment_ms / 1000 * rate)), []
  for start in range(0, len(samples), step):
    piece = samples[start:start + step]
    out = agent.pushpop(SpeechSegment(index=0, content=piece.tolist(), sample_rate=rate,
                                      finished=start + step >= len(samples)))
    if not out.is_empty:
      words += out.content.split()
  return words


def test_text_agent_takes_stereo_and_other_rates(run, text_eval):
  """A stereo wav is averaged to mono, an 8 kHz one resampled to the model rate (as
  `audio_io.read_audio` does for translate): the same words as translate_stream on
  the converted audio."""
  system, _ = text_eval
  agent = simuleval_agent.LiveInterpSpeechToText(None, decoder=system.decoder,
                                                 cfg=run["cfg"])
  x, _ = sf.read(run["wavs"][2], dtype="float32")
  stereo = np.stack([x, 0.5 * x], axis=1)
  (want,) = _streamed_audio(system.decoder, [stereo.mean(axis=1)])
  assert _push_all(agent, stereo, SR) == want.text.split()
  low = resample(x, SR, 8000)
  (want,) = _streamed_audio(system.decoder, [resample(low, 8000, SR)])
  assert _push_all(agent, low, 8000) == want.text.split()


@pytest.mark.parametrize("pending,finished,hold,want", [
    ("[3] [7]", False, False, ("[3] [7]", "")),        # [id] words are always whole
    ("hello wor", False, True, ("hello", " wor")),     # "wor" may continue
    (" wor", False, True, ("", " wor")),
    (" world foo", False, True, ("world", " foo")),     # next piece began a word
    (" world foo", True, True, ("world foo", "")),      # source ended: flush
    ("  ", False, True, ("", "  ")),
])
def test_complete_words(pending, finished, hold, want):
  assert simuleval_agent.complete_words(pending, finished, hold) == want


def test_missing_config_is_named(tmp_path):
  with pytest.raises(cli.UserError, match="no config.json in --workdir"):
    simuleval_agent.load_decoder(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="no such run directory"):
    simuleval_agent.load_decoder(str(tmp_path / "nope"))
