"""The websocket server (liveinterp.serving.server) on the micro decoder, in-process.

One server of `SERVER_SLOTS` slots serves every test of this module (servers with other
settings reuse its compiled step); sessions are driven by `liveinterp.client.stream` or
by raw websockets for the protocol violations.
"""

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from liveinterp import client
from liveinterp.inference import session as session_lib
from liveinterp.serving import protocol, server as server_lib
from tests.unit.serving.conftest import SERVER_SLOTS

FRAME_BYTES = 8192


def _audio(seconds: float, seed: int) -> np.ndarray:
  """A chirp with noise: speech-like enough that the seed-2 decoder writes turns."""
  n = int(seconds * 16000)
  t = np.arange(n) / 16000
  rng = np.random.default_rng(seed)
  x = 0.4 * np.sin(2 * np.pi * (200 + 300 * seed + 600 * t) * t)
  return (x + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _reference(decoder, wav):
  """`session.translate_stream` of `wav` alone (the other rows of the batch empty)."""
  block = np.zeros((SERVER_SLOTS, wav.size), np.float32)
  block[0] = wav
  lengths = np.array([wav.size] + [0] * (SERVER_SLOTS - 1))
  (res, *_) = session_lib.translate_stream(decoder, [(block, lengths)], batch=SERVER_SLOTS)
  return res


@pytest.fixture(scope="module")
def running(serving_decoder):
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS, max_frame_bytes=FRAME_BYTES, idle_timeout_s=20))
  with srv.start_in_thread() as r:
    yield r


@pytest.fixture(scope="module")
def refs(serving_decoder, running):
  del running  # compiled by the server's warm-up
  wavs = {"a": _audio(2.3, 1), "b": _audio(4.1, 2), "c": _audio(1.5, 3)}
  return wavs, {k: _reference(serving_decoder, w) for k, w in wavs.items()}


def _check_equal(res: client.ClientResult, ref, wav, chunk_samples):
  assert res.text == ref.text
  np.testing.assert_allclose(res.audio, ref.speech, rtol=0, atol=1e-6)
  assert res.done["chunks"] == -(-wav.size // chunk_samples)
  assert res.done["text"] == ref.text
  assert res.done["audio_s"] == pytest.approx(ref.speech.size / 16000)
  # One turn message per chunk that wrote something, with its text and speech length.
  assert [t["chunk"] for t in res.turns] == [s.chunk for s in ref.segments]
  assert [t["text"] for t in res.turns] == [s.text for s in ref.segments]
  assert [t["speech_ms"] for t in res.turns] == pytest.approx(
      [s.audio_ms for s in ref.segments])
  for t in res.turns:
    assert t["end_ms"] == (t["chunk"] + 1) * res.chunk_ms
    assert t["ready_ms"] > t["end_ms"]


def test_one_session_equals_translate_stream(running, refs, serving_decoder):
  wavs, ref = refs
  assert ref["a"].text and ref["a"].speech.size, "the seed-2 decoder should write turns"
  for fmt in ("pcm16", "float32"):
    wav = wavs["a"]
    if fmt == "pcm16":  # what the server decodes: the int16 rounding of the samples
      wav = np.frombuffer(protocol.encode_frame(wav, fmt), "<i2").astype(np.float32) / 32768
      expect = _reference(serving_decoder, wav)
    else:
      expect = ref["a"]
    res = asyncio.run(client.stream(running.url, wavs["a"], 16000, speed=0, fmt=fmt,
                                    frame_ms=70))
    _check_equal(res, expect, wav, serving_decoder.chunk_samples)
  stats = running.server.stats()
  assert stats["latency_ms"]["n"] >= 2 * res.done["chunks"]


def test_concurrent_sessions_are_independent_and_slots_reused(running, refs,
                                                              serving_decoder):
  wavs, ref = refs

  async def both():
    long = asyncio.create_task(client.stream(running.url, wavs["b"], 16000, speed=8,
                                             fmt="float32"))
    short = await client.stream(running.url, wavs["a"], 16000, speed=0, fmt="float32")
    # The short one's slot is free again while the long one still streams.
    assert not long.done()
    reuse = await client.stream(running.url, wavs["c"], 16000, speed=0, fmt="float32")
    assert not long.done()
    return short, reuse, await long

  short, reuse, long = asyncio.run(both())
  c = serving_decoder.chunk_samples
  _check_equal(short, ref["a"], wavs["a"], c)
  _check_equal(reuse, ref["c"], wavs["c"], c)
  _check_equal(long, ref["b"], wavs["b"], c)


def test_lanes_step_concurrently_and_each_session_equals_its_stream_alone(
    serving_decoder, refs):
  """Two lanes of SERVER_SLOTS slots (max_sessions 4): new sessions go to the emptier
  lane, both lanes step, and every session still equals its stream decoded alone."""
  wavs, ref = refs
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=2 * SERVER_SLOTS, lanes=2, max_frame_bytes=FRAME_BYTES,
      idle_timeout_s=20))
  assert srv.lane_batch == SERVER_SLOTS
  with srv.start_in_thread() as r:

    async def three():
      return await asyncio.gather(*(client.stream(r.url, wavs[k], 16000, speed=4,
                                                   fmt="float32") for k in "abc"))
    results = asyncio.run(three())
    stats = srv.stats()
  for k, res in zip("abc", results):
    _check_equal(res, ref[k], wavs[k], serving_decoder.chunk_samples)
  assert stats["lanes"] == 2
  assert stats["counts"]["steps:lane0"] > 0 and stats["counts"]["steps:lane1"] > 0
  with pytest.raises(ValueError, match="lanes=3: expected an integer >= 1 that divides "
                     "max_sessions=4"):
    server_lib.ServerConfig(max_sessions=4, lanes=3).check()
  with pytest.raises(ValueError, match="lanes=0"):
    server_lib.ServerConfig(lanes=0).check()


async def _violate(url, first, then=()):
  """Opens a session, sends `first` then `then`; returns (error message, close code)."""
  async with connect(url) as ws:
    err = None
    try:
      await ws.send(first)  # a refused session may be closed before it is sent
      for m in then:
        await ws.send(m)
      async for msg in ws:
        if isinstance(msg, str) and json.loads(msg)["type"] == "error":
          err = json.loads(msg)
    except ConnectionClosed:
      pass
    if err is None:  # closed while sending: the error may still be unread
      with contextlib.suppress(ConnectionClosed):
        async for msg in ws:
          if isinstance(msg, str) and json.loads(msg)["type"] == "error":
            err = json.loads(msg)
    await ws.wait_closed()
    return err, ws.close_code


def test_bad_sessions_are_closed_while_a_healthy_one_finishes(running, refs,
                                                              serving_decoder):
  wavs, ref = refs
  url = running.url
  good_start = protocol.start(16000, "pcm16")
  ok_frame = protocol.encode_frame(wavs["c"][:1600], "pcm16")
  cases = [
      ("odd pcm16", good_start, [ok_frame, b"\x00\x01\x02"], "bad_frame"),
      ("oversize", good_start, [ok_frame, b"\x00" * (FRAME_BYTES + 2)], "too_large"),
      ("non-JSON", good_start, [ok_frame, "hello?"], "bad_frame"),
      ("unknown text", good_start, [json.dumps({"type": "pause"})], "bad_frame"),
      ("NaN float32", protocol.start(16000, "float32"),
       [np.array([0.0, np.nan], "<f4").tobytes()], "bad_frame"),
      ("wrong start", json.dumps({"type": "hello"}), [], "bad_start"),
      ("binary first", ok_frame, [], "bad_start"),
      ("non-JSON start", "start please", [], "bad_start"),
      ("wrong rate", protocol.start(8000, "pcm16"), [], "bad_format"),
      ("wrong format", json.dumps({"type": "start", "sample_rate": 16000,
                                   "format": "mp3"}), [], "bad_format"),
  ]
  done_at = {}

  async def run():
    healthy = asyncio.create_task(client.stream(
        url, wavs["b"], 16000, speed=6, fmt="pcm16",
        on_message=lambda m: done_at.setdefault(m["type"], time.perf_counter())))
    await asyncio.sleep(0.1)
    got = {}
    for name, first, then, _ in cases:
      got[name] = await _violate(url, first, then)
    bad_over = time.perf_counter()
    return await healthy, got, bad_over

  healthy, got, bad_over = asyncio.run(run())
  for name, _, _, code in cases:
    err, close = got[name]
    assert err is not None, name
    assert err["code"] == code, (name, err)
    assert err["message"], name
    assert close == 1008, name
  assert done_at["done"] > bad_over  # the healthy session outlived every bad one
  wav = (np.frombuffer(protocol.encode_frame(wavs["b"], "pcm16"), "<i2")
         .astype(np.float32) / 32768)
  _check_equal(healthy, _reference(serving_decoder, wav), wav, serving_decoder.chunk_samples)


def test_session_bound_refuses_with_busy(running, refs):
  wavs, ref = refs

  async def run():
    held = []
    for _ in range(SERVER_SLOTS):
      ws = await connect(running.url)
      await ws.send(protocol.start(16000, "pcm16"))
      assert json.loads(await ws.recv())["type"] == "ready"
      held.append(ws)
    err, close = await _violate(running.url, protocol.start(16000, "pcm16"))
    for ws in held:
      await ws.close()
    await asyncio.sleep(0.2)  # the server frees the slots
    after = await client.stream(running.url, wavs["c"], 16000, speed=0)
    return err, close, after

  err, close, after = asyncio.run(run())
  assert err["code"] == "busy" and str(SERVER_SLOTS) in err["message"]
  assert close == 1013
  assert after.text == ref["c"].text
  assert running.server.stats()["counts"]["refused"] >= 1


def test_fast_client_is_back_pressured_within_the_buffer_bound(serving_decoder, refs):
  """A client sending as fast as it can is slowed (not dropped): the server never holds
  more than max_buffer_s (+ one frame) of its audio, and the output is unchanged."""
  wavs, ref = refs
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS, max_buffer_s=0.5))
  frame = 1600
  with srv.start_in_thread() as r:
    res = asyncio.run(client.stream(r.url, wavs["b"], 16000, speed=0, fmt="float32",
                                    frame_ms=100))
    for _ in range(500):  # the handler files the session's stats after the close
      if srv.stats()["sessions"]:
        break
      time.sleep(0.01)
    (sess,) = srv.stats()["sessions"]
  _check_equal(res, ref["b"], wavs["b"], serving_decoder.chunk_samples)
  assert sess["outcome"] == "done"
  assert srv.buffer_cap == 8000
  assert srv.buffer_cap <= sess["peak_buffered_samples"] <= srv.buffer_cap + frame
  assert wavs["b"].size > 2 * (srv.buffer_cap + frame)  # the bound was binding


@pytest.mark.parametrize("wait_ms", [0.0, 600.0])
def test_batch_wait_gathers_staggered_sessions_into_one_step(serving_decoder, refs,
                                                             wait_ms):
  """Two real-time streams started 150 ms apart: with `batch_wait_ms` above that offset
  every chunk of the shorter stream is decoded in the same step as the longer stream's
  chunk of that index (steps = the longer stream's chunks); without it they step apart.
  Either way each session's output equals its audio decoded alone."""
  wavs, ref = refs
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS, batch_wait_ms=wait_ms))

  async def run(url):
    async def late():
      await asyncio.sleep(0.15)
      return await client.stream(url, wavs["a"], 16000, speed=1.0, fmt="float32")
    return await asyncio.gather(
        client.stream(url, wavs["c"], 16000, speed=1.0, fmt="float32"), late())

  with srv.start_in_thread() as r:
    res_c, res_a = asyncio.run(run(r.url))
    stats = srv.stats()
  c = serving_decoder.chunk_samples
  _check_equal(res_c, ref["c"], wavs["c"], c)
  _check_equal(res_a, ref["a"], wavs["a"], c)
  chunks = [-(-wavs[k].size // c) for k in ("c", "a")]
  assert stats["counts"]["chunks"] == sum(chunks)
  if wait_ms:
    assert stats["counts"]["steps"] == max(chunks)
  else:
    assert stats["counts"]["steps"] > max(chunks)


def test_batch_wait_is_checked():
  with pytest.raises(ValueError, match="batch_wait_ms=-1"):
    server_lib.ServerConfig(batch_wait_ms=-1).check()


def test_idle_sessions_are_closed(serving_decoder):
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS, idle_timeout_s=0.3))

  async def run(url):
    silent = await _violate(url, protocol.start(16000, "pcm16"))
    async with connect(url) as ws:  # never sends a start
      msg = json.loads(await ws.recv())
      await ws.wait_closed()
    return silent, (msg, ws.close_code)

  with srv.start_in_thread() as r:
    t0 = time.perf_counter()
    (err1, close1), (err2, close2) = asyncio.run(run(r.url))
    assert time.perf_counter() - t0 < 10
  assert err1["code"] == "idle" and close1 == 1008
  assert err2["code"] == "idle" and close2 == 1008


def _get(url):
  try:
    with urllib.request.urlopen(url, timeout=10) as f:
      return f.status, f.read().decode()
  except urllib.error.HTTPError as e:
    return e.code, e.read().decode()


def test_http_serves_the_page_and_404s(running, serving_decoder, tmp_path):
  status, body = _get(running.http_url)
  assert status == 200 and "<html" in body.lower()
  status, body = _get(running.http_url + "static/app.js")
  assert status == 200 and "WebSocket" in body
  for path in ("static/nope.js", "static/../server.py", "other"):
    status, body = _get(running.http_url + path)
    assert status == 404 and "404" in body, path
  srv = server_lib.StreamServer(serving_decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SERVER_SLOTS, static_dir=str(tmp_path)))
  with srv.start_in_thread() as r:
    status, body = _get(r.http_url)
  assert status == 404 and "index.html not found" in body


def test_protocol_validation_names_the_problem():
  with pytest.raises(protocol.ProtocolError, match="sample_rate=22050.*16000") as e:
    protocol.parse_start(protocol.start(22050), 16000)
  assert e.value.code == "bad_format"
  with pytest.raises(protocol.ProtocolError, match="unknown field") as e:
    protocol.parse_start(json.dumps({"type": "start", "sample_rate": 16000,
                                     "format": "pcm16", "rate": 1}), 16000)
  assert e.value.code == "bad_start"
  x = np.array([0.5, -0.25, 0.0], np.float32)
  np.testing.assert_array_equal(
      protocol.decode_frame(protocol.encode_frame(x, "float32"), "float32", 64), x)
  np.testing.assert_allclose(
      protocol.decode_frame(protocol.encode_frame(x, "pcm16"), "pcm16", 64), x, atol=1e-4)
  assert protocol.close_code("busy") == 1013 and protocol.close_code("idle") == 1008
