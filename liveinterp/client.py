"""Stream a speech file to a running server: `python -m liveinterp.client in.wav --out o.wav`.

    python -m liveinterp.serve --export=runs/tiny/export          # in another shell
    python -m liveinterp.client talk.wav --out talk.en.wav        # real time
    python -m liveinterp.client talk.wav --out o.wav --speed 8 --transcript
    python -m liveinterp.client talk.wav --out o.wav --speed 0    # as fast as it reads

The file is read as `translate` reads it (any rate / channel count -> mono at
`--sample_rate`, the model's rate, with soxr; `liveinterp.inference.audio_io`), sent as
`--frame_ms` frames of `--format` samples over the protocol of
`liveinterp.serving.protocol`, paced at real time (`--realtime`, the default) or `--speed`
times real time (0: no pacing; the server's back-pressure sets the pace). Received
translated speech is written back to back to `--out` (at the server's output rate); the
timeline goes next to it (`OUT.json`, or `--json`): per turn its chunk, `end_ms` (source
read), `ready_ms` (computation-aware, from the server), `arrived_ms` (when the turn
message arrived, ms after the first frame was sent), text, source text and `speech_ms`;
plus the whole translation, transcript and totals. The translation is printed on stdout;
progress and the live transcript go to stderr.

Mistakes (flags, paths, no server at `--url`, a refused session) are one line on stderr
and exit code 2 (liveinterp/common/cli.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import sys
import time
from typing import Callable

import numpy as np

from liveinterp.common import cli
from liveinterp.serving import protocol

DEFAULT_URL = "ws://127.0.0.1:8765/ws"


@dataclasses.dataclass
class ClientResult:
  """What one streamed session gave back."""
  session: str = ""
  text: str = ""
  source_text: str = ""
  audio: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.float32))
  output_sample_rate: int = 16000
  chunk_ms: int = 0
  turns: list = dataclasses.field(default_factory=list)
  done: dict | None = None
  error: dict | None = None
  wall_s: float = 0.0
  sent_s: float = 0.0          # seconds of audio sent
  messages: list = dataclasses.field(default_factory=list)  # every text message, in order

  def timeline_json(self) -> dict:
    return {"session": self.session, "text": self.text, "source_text": self.source_text,
            "audio_s": self.audio.size / self.output_sample_rate,
            "output_sample_rate": self.output_sample_rate, "chunk_ms": self.chunk_ms,
            "source_s": self.sent_s, "wall_s": self.wall_s,
            "chunks": self.done.get("chunks") if self.done else None,
            "turns": self.turns, "error": self.error}


class ServerError(Exception):
  """The server answered with an `error` message (`code`, `message`)."""

  def __init__(self, code: str, message: str):
    super().__init__(f"server error {code}: {message}")
    self.code = code
    self.message = message


async def stream(url: str, audio: np.ndarray, sample_rate: int, *, speed: float = 1.0,
                 fmt: str = "pcm16", transcript: bool = False, frame_ms: float = 100.0,
                 on_message: Callable[[dict], None] | None = None,
                 open_timeout_s: float = 30.0, seed: int | None = None) -> ClientResult:
  """Streams mono float samples to the server at `url`; returns what came back.

  speed: 1 = real time, X = X times faster, 0 = as fast as the server reads. seed: the
  session's sampling seed (`protocol`; None = the server's choice). Raises
  ServerError when the server sends an `error` (the result so far is in `.result`),
  OSError when nothing listens at `url`.
  """
  from websockets.asyncio.client import connect  # pylint: disable=g-import-not-at-top
  x = np.asarray(audio, np.float32).reshape(-1)
  frame = max(1, int(round(frame_ms * sample_rate / 1000)))
  res = ClientResult()
  pieces: list[np.ndarray] = []
  text: list[str] = []
  src: list[str] = []
  src_by_chunk: dict[int, str] = {}
  t0 = [time.perf_counter()]
  # No keepalive pings from this side: the server stops reading a session's socket while
  # it is back-pressured (protocol docstring), so a ping could go unanswered for as long
  # as the decoder lags, and websockets would drop a healthy session with 1011. The
  # server pings us instead (we always read).
  async with connect(url, max_size=None, open_timeout=open_timeout_s,
                     ping_interval=None) as ws:
    await ws.send(protocol.start(sample_rate, fmt, transcript, seed))
    first = protocol.parse_server_text(await ws.recv())
    if first["type"] == "error":
      raise ServerError(first["code"], first["message"])
    if first["type"] != "ready":
      raise ServerError("internal", f"expected a ready message, got {first}")
    res.session = first["session"]
    res.output_sample_rate = int(first["output_sample_rate"])
    res.chunk_ms = int(first["chunk_ms"])

    async def send():
      t0[0] = time.perf_counter()
      for i in range(0, x.size, frame):
        await ws.send(protocol.encode_frame(x[i:i + frame], fmt))
        res.sent_s = min(x.size, i + frame) / sample_rate
        if speed > 0:
          wait = t0[0] + res.sent_s / speed - time.perf_counter()
          if wait > 0:
            await asyncio.sleep(wait)
      await ws.send(protocol.end())

    sender = asyncio.create_task(send())
    expect_audio = None
    try:
      async for msg in ws:
        if isinstance(msg, bytes):
          if expect_audio is None:
            raise ServerError("internal", "binary message without an audio header")
          samples = np.frombuffer(msg, "<f4").astype(np.float32)
          if samples.size != expect_audio:
            raise ServerError("internal", f"audio message of {samples.size} samples, "
                              f"header said {expect_audio}")
          pieces.append(samples)
          expect_audio = None
          continue
        obj = protocol.parse_server_text(msg)
        res.messages.append(obj)
        if on_message is not None:
          on_message(obj)
        kind = obj["type"]
        if kind == "text":
          text.append(obj["text"])
        elif kind == "source":
          src.append(obj["text"])
          src_by_chunk[obj["chunk"]] = src_by_chunk.get(obj["chunk"], "") + obj["text"]
        elif kind == "audio":
          expect_audio = int(obj["samples"])
        elif kind == "turn":
          res.turns.append({
              "chunk": obj["chunk"], "end_ms": obj["end_ms"], "ready_ms": obj["ready_ms"],
              "arrived_ms": (time.perf_counter() - t0[0]) * 1000.0, "text": obj["text"],
              "source_text": src_by_chunk.pop(obj["chunk"], ""),
              "speech_ms": obj["speech_ms"]})
        elif kind == "done":
          res.done = obj
        elif kind == "error":
          res.error = obj
    finally:
      if not sender.done():
        sender.cancel()
      try:
        await sender
      except (asyncio.CancelledError, Exception):  # pylint: disable=broad-except
        pass
  res.wall_s = time.perf_counter() - t0[0]
  res.text = "".join(text)
  res.source_text = "".join(src)
  res.audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
  if res.error is not None:
    err = ServerError(res.error.get("code", "?"), res.error.get("message", ""))
    err.result = res
    raise err
  if res.done is None:
    err = ServerError("internal", "the server closed the session without done")
    err.result = res
    raise err
  return res


# ---- CLI ---------------------------------------------------------------------------------
def _parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m liveinterp.client",
                         description=__doc__.split("\n")[0])
  cli.add_audio_io_args(p, "timeline")
  p.add_argument("--url", default=DEFAULT_URL, help=f"server websocket (default {DEFAULT_URL})")
  pace = p.add_mutually_exclusive_group()
  pace.add_argument("--realtime", action="store_true", help="stream at real time (default)")
  pace.add_argument("--speed", type=float, default=None,
                    help="times real time (0: as fast as the server reads)")
  p.add_argument("--transcript", action="store_true",
                 help="ask for the live source transcript")
  p.add_argument("--format", choices=protocol.FORMATS, default="pcm16",
                 help="sample format sent (default pcm16)")
  p.add_argument("--sample_rate", type=int, default=16000,
                 help="the model's input rate (the server refuses another)")
  p.add_argument("--frame_ms", type=float, default=100.0, help="audio per frame sent")
  p.add_argument("--quiet", action="store_true", help="no progress on stderr")
  p.add_argument("--verbose", action="store_true", help="tracebacks of user errors too")
  return p


def _check_args(args):
  if not os.path.exists(args.input):
    raise cli.UserError(f"{args.input}: no such audio file")
  if os.path.isdir(args.input):
    raise cli.UserError(f"{args.input}: is a directory, expected an audio file")
  if args.speed is not None and not args.speed >= 0:
    raise cli.UserError(f"--speed={args.speed}: must be >= 0 (0 = no pacing)")
  if not args.frame_ms > 0:
    raise cli.UserError(f"--frame_ms={args.frame_ms}: must be > 0")
  if not args.url.startswith(("ws://", "wss://")):
    raise cli.UserError(f"--url={args.url}: expected ws://HOST:PORT/ws")
  cli.check_writable_file(args.out, "--out")
  cli.check_writable_file(args.json or os.path.splitext(args.out)[0] + ".json", "--json")


def main(argv=None) -> dict:
  """Runs the CLI; returns the timeline it wrote (for tests)."""
  args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
  _check_args(args)
  from liveinterp.inference import audio_io  # pylint: disable=g-import-not-at-top
  report = audio_io.InputReport()
  source = audio_io.read_audio(args.input, args.sample_rate, report=report)
  for message in report.messages:
    sys.stderr.write(f"[client] warning: {message}\n")
  speed = 1.0 if args.speed is None else args.speed

  def on_message(obj):
    if args.quiet:
      return
    if obj["type"] == "source":
      sys.stderr.write(f"[client] heard @ chunk {obj['chunk']}: {obj['text'].strip()}\n")
    elif obj["type"] == "turn":
      sys.stderr.write(f"[client] turn @ {obj['end_ms']:.0f} ms (ready {obj['ready_ms']:.0f}"
                       f" ms): {obj['text'].strip()}\n")

  from websockets.exceptions import InvalidHandshake  # pylint: disable=g-import-not-at-top
  try:
    res = asyncio.run(stream(args.url, source, args.sample_rate, speed=speed,
                             fmt=args.format, transcript=args.transcript,
                             frame_ms=args.frame_ms, on_message=on_message))
  except ServerError as e:
    raise cli.UserError(f"the server at {args.url} ended the session: {e.code}: "
                        f"{e.message}") from None
  except (OSError, InvalidHandshake) as e:
    raise cli.UserError(f"cannot connect to {args.url}: {cli.one_line(e)} (is "
                        "`python -m liveinterp.serve` running?)") from None
  audio_io.write_audio(args.out, res.audio, res.output_sample_rate)
  json_path = args.json or os.path.splitext(args.out)[0] + ".json"
  payload = dict(res.timeline_json(), input=os.path.abspath(args.input),
                 output=os.path.abspath(args.out), url=args.url, speed=speed,
                 format=args.format)
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
  with open(json_path, "w") as f:
    json.dump(payload, f, indent=1, ensure_ascii=False)
  if not args.quiet:
    sys.stderr.write(f"[client] wrote {args.out} ({res.audio.size / res.output_sample_rate:.2f}"
                     f" s) and {json_path}: {len(res.turns)} turn(s), "
                     f"{res.sent_s:.2f} s of source in {res.wall_s:.2f} s\n")
  print(res.text)
  return payload


if __name__ == "__main__":
  cli.call(main, sys.argv[1:], prog="python -m liveinterp.client",
           verbose="--verbose" in sys.argv[1:])
