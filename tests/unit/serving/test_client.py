"""`python -m liveinterp.client` end to end against an in-process server, and the CLI
mistakes of the client and of `python -m liveinterp.serve` (one line, exit code 2)."""

import json
import os
import socket

import numpy as np
import pytest
import soundfile as sf

from liveinterp import client, serve
from liveinterp.common import cli
from liveinterp.inference import audio_io, session as session_lib
from liveinterp.serving import protocol, server as server_lib
from tests.unit.serving.conftest import SERVER_SLOTS


def test_client_cli_writes_audio_and_timeline(serving_decoder, tmp_path, capsys):
  # The signal of test_server's session "a" (the seed-2 decoder writes turns on it; on
  # other signals its random-weight decisions can sit on a knife's edge).
  n = int(2.3 * 16000)
  t = np.arange(n) / 16000
  x = 0.4 * np.sin(2 * np.pi * (500 + 600 * t) * t)
  x = (x + 0.05 * np.random.default_rng(1).standard_normal(n)).astype(np.float32)
  wav = tmp_path / "in.wav"
  sf.write(wav, x, 16000, subtype="FLOAT")
  # What the server reads: the file as translate reads it, rounded to pcm16 frames.
  src = audio_io.read_audio(str(wav), 16000)
  sent = np.frombuffer(protocol.encode_frame(src, "pcm16"), "<i2").astype(np.float32) / 32768
  block = np.zeros((SERVER_SLOTS, sent.size), np.float32)
  block[0] = sent
  (ref, *_) = session_lib.translate_stream(
      serving_decoder, [(block, [sent.size] + [0] * (SERVER_SLOTS - 1))],
      batch=SERVER_SLOTS)
  assert ref.text and ref.speech.size

  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS))
  out = tmp_path / "sub" / "out.wav"
  with srv.start_in_thread() as running:
    payload = client.main([str(wav), "--out", str(out), "--url", running.url,
                           "--speed", "20", "--transcript", "--frame_ms", "50"])
  printed = capsys.readouterr().out.strip()
  assert printed == ref.text.strip()
  got, rate = sf.read(out, dtype="float32")
  assert rate == 16000
  np.testing.assert_allclose(got, np.clip(ref.speech, -1, 1), atol=1.5 / 32768)
  with open(tmp_path / "sub" / "out.json") as f:
    timeline = json.load(f)
  assert timeline == json.loads(json.dumps(payload))
  assert timeline["text"] == ref.text
  assert timeline["chunks"] == -(-sent.size // serving_decoder.chunk_samples)
  assert [tt["chunk"] for tt in timeline["turns"]] == [s.chunk for s in ref.segments]
  assert [tt["text"] for tt in timeline["turns"]] == [s.text for s in ref.segments]
  for tt in timeline["turns"]:
    assert set(tt) >= {"chunk", "end_ms", "ready_ms", "text", "speech_ms", "arrived_ms"}
    assert tt["ready_ms"] > tt["end_ms"] == (tt["chunk"] + 1) * serving_decoder.chunk_ms
  assert sum(tt["speech_ms"] for tt in timeline["turns"]) == pytest.approx(
      1000 * ref.speech.size / 16000)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_client_cli_mistakes_are_one_line(tmp_path):
  wav = tmp_path / "in.wav"
  sf.write(wav, np.zeros(1600, np.float32), 16000)
  with pytest.raises(cli.UserError, match="no such audio file"):
    client.main([str(tmp_path / "nope.wav"), "--out", str(tmp_path / "o.wav")])
  with pytest.raises(cli.UserError, match="--speed=-1.0"):
    client.main([str(wav), "--out", str(tmp_path / "o.wav"), "--speed", "-1"])
  with pytest.raises(cli.UserError, match="cannot connect to ws://127.0.0.1:"):
    client.main([str(wav), "--out", str(tmp_path / "o.wav"),
                 "--url", f"ws://127.0.0.1:{_free_port()}/ws"])
  assert not (tmp_path / "o.wav").exists()


def test_serve_cli_mistakes_are_one_line(tmp_path):
  with pytest.raises(cli.UserError, match="exactly one of --export"):
    serve.main([])
  with pytest.raises(cli.UserError, match="exactly one of --export"):
    serve.main(["--export", str(tmp_path), "--workdir", str(tmp_path)])
  with pytest.raises(cli.UserError, match="--export=.*no such directory"):
    serve.main(["--export", str(tmp_path / "nope")])
  with pytest.raises(cli.UserError, match="--config.. overrides cannot change it"):
    serve.main(["--export", str(tmp_path), "--config.stream.chunk_ms=640"])
  with pytest.raises(cli.UserError, match="--init=random needs --config"):
    serve.main(["--init=random"])
  with pytest.raises(cli.UserError, match="--max_sessions=0"):
    serve.main(["--init=random", "--config=configs/micro.py", "--max_sessions=0"])
  with pytest.raises(cli.UserError, match="--codec_rows=-1: must be >= 0"):
    serve.main(["--init=random", "--config=configs/micro.py", "--codec_rows=-1"])
  with pytest.raises(cli.UserError, match="--codec_rows cannot change it"):
    serve.main(["--export", str(tmp_path), "--codec_rows=4"])
  for bad in ("0", "8,x", "-2"):
    with pytest.raises(cli.UserError, match=f"--turn_rows={bad}: expected 'auto', 'none'"):
      serve.main(["--init=random", "--config=configs/micro.py", f"--turn_rows={bad}"])
  with pytest.raises(cli.UserError, match="lanes=3: expected an integer >= 1 that divides "
                     "max_sessions=16"):
    serve.main(["--init=random", "--config=configs/micro.py", "--lanes=3"])
  with pytest.raises(cli.UserError, match="--turn_rows cannot change it"):
    serve.main(["--export", str(tmp_path), "--turn_rows=4,2"])
  with pytest.raises(cli.UserError, match="--lanes=two: expected 'auto' or an integer"):
    serve.main(["--init=random", "--config=configs/micro.py", "--lanes=two"])


def test_auto_lanes_rule():
  """--lanes=auto: 1 on an accelerator; on CPU the most lanes of >= 4 slots, <= 2 per core
  (2 cores: 16 sessions -> 4 lanes, 8 -> 2, the best measured by serve_load)."""
  assert serve.auto_lanes(16, "cpu", 2) == 4
  assert serve.auto_lanes(8, "cpu", 2) == 2
  assert serve.auto_lanes(16, "gpu", 2) == serve.auto_lanes(64, "tpu", 8) == 1
  assert serve.auto_lanes(2, "cpu", 2) == serve.auto_lanes(7, "cpu", 4) == 1  # < 4 slots
  assert serve.auto_lanes(64, "cpu", 16) == 16 and serve.auto_lanes(12, "cpu", 2) == 3
  assert serve.auto_lanes(16, "cpu", 1) == 2
  assert serve.parse_lanes("3", 16) == 3  # ServerConfig.check rejects it (above)
  import jax
  assert serve.parse_lanes("auto", 16) == serve.auto_lanes(
      16, jax.default_backend(), len(os.sched_getaffinity(0)))
