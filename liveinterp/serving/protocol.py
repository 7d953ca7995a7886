"""The streaming protocol of `python -m liveinterp.serve`: one websocket per session.

The server listens on `ws://HOST:PORT/ws` (127.0.0.1 by default); the same port answers
HTTP `GET /` with the browser page (`liveinterp/serving/static/index.html`) and
`GET /static/<file>` with its files.

Client -> server
----------------
1. First message, text JSON::

     {"type": "start", "sample_rate": 16000, "format": "pcm16" | "float32",
      "transcript": true | false, "seed": 1234}

   `transcript` is optional (default false): also send the live source transcript when
   the model writes one. `seed` is optional, an integer in [0, 2**31): a sampling decoder
   (temperature > 0) draws this session's tokens from its own key
   `fold_in(key(server seed), seed)`, so the same audio with the same seed gives the same
   output whichever other sessions run next to it (absent: the session's number on this
   server, 0, 1, ...; greedy decoding ignores it). A sample rate other than the model's, an unknown format, a
   message that is not this JSON object, or any other first message: `error` and close.
2. Then binary messages: raw little-endian mono samples in the declared format (`pcm16`:
   int16, scaled by 1/32768; `float32`: IEEE floats in [-1, 1], finite), any length up
   to `max_frame_bytes`, whole samples only. The server re-chunks them into model chunks
   (`chunk_ms` of audio each); how they are framed has no effect on the output.
3. Text `{"type": "end"}`: the stream is over. The last partial chunk is zero-padded; the
   server sends what remains, then `done`, then closes (code 1000).

Server -> client (text JSON unless said otherwise)
--------------------------------------------------
- `{"type": "ready", "session": "<id>", "sample_rate": 16000, "chunk_ms": 640,
  "output_sample_rate": <rate of the translated speech>, "audio_format": "float32"}`
  after a valid start.
- `{"type": "source", "chunk": t, "text": "<delta>"}`: source-transcript delta (only if
  the start asked for the transcript and the model writes one).
- `{"type": "text", "chunk": t, "text": "<delta>"}`: translation text delta.
- `{"type": "audio", "chunk": t, "samples": n}` immediately followed by ONE binary
  message of n little-endian float32 samples of translated speech at
  `output_sample_rate`.
- `{"type": "turn", "chunk": t, "end_ms": <source ms read>, "ready_ms": <when computed,
  computation-aware>, "text": "<turn text>", "speech_ms": <speech duration>}` after each
  chunk on which the model wrote something (a non-wait turn). `end_ms` is the end of
  chunk t in ms of source; `ready_ms` adds the measured compute of the decoder steps
  (`liveinterp.inference.session.ReadyClock`: max(end_ms, previous ready) + compute).
- `{"type": "error", "code": "<code>", "message": "<what and why>"}`, always followed
  by a close (code 1008 "policy violation"; 1013 "try again later" for `busy`; 1011 for
  `internal`). Codes: `bad_start` (first message missing or invalid), `bad_format`
  (unsupported sample rate or format), `bad_frame` (a binary frame that is not whole
  samples or holds NaN/Inf, a text message that is not JSON or not a known type),
  `too_large` (a frame over `max_frame_bytes`), `busy` (every session slot is taken),
  `idle` (no message for `idle_timeout_s`), `internal` (a server fault). Other sessions
  are never affected.
- `{"type": "done", "chunks": N, "text": "<whole translation>", "audio_s": x}` at the
  end: N model chunks read, the whole translated text, seconds of speech sent.

Chunks are numbered from 0 per session; all messages of chunk t come before any of
chunk t + 1, in the order source, text, audio (+ binary), turn.

Flow control: the server buffers at most `max_buffer_s` of a session's unprocessed audio;
beyond that it stops reading that session's socket until the decoder has caught up (TCP
back-pressure), so a client streaming faster than real time is slowed down, never
dropped, and a session's memory stays bounded for any stream length. While a session is
back-pressured the server does not read its control frames either: a client that sends
websocket keepalive pings must tolerate unanswered pings for as long as the decoder lags
(`liveinterp.client` sends none; browsers send none; the server pings its clients).

This module holds the protocol as code: message builders (`ready`, `text`, ...),
`parse_start` / `parse_client_text` (validation with errors naming what is wrong, as
`ProtocolError` with its error code) and `decode_frame` (binary frame -> float32
samples).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

FORMATS = ("pcm16", "float32")
_SAMPLE_BYTES = {"pcm16": 2, "float32": 4}
AUDIO_FORMAT = "float32"  # the format of the translated speech the server sends

# Error codes and the websocket close code that follows each.
ERROR_CODES = ("bad_start", "bad_format", "bad_frame", "too_large", "busy", "idle",
               "internal")
CLOSE_POLICY = 1008     # policy violation
CLOSE_TRY_LATER = 1013  # try again later (busy)
CLOSE_INTERNAL = 1011   # server error
CLOSE_NORMAL = 1000


def close_code(code: str) -> int:
  """The websocket close code sent after an error of `code`."""
  if code not in ERROR_CODES:
    raise ValueError(f"unknown error code {code!r}; one of {ERROR_CODES}")
  return {"busy": CLOSE_TRY_LATER, "internal": CLOSE_INTERNAL}.get(code, CLOSE_POLICY)


MAX_SEED = 1 << 31  # session seeds: 0 <= seed < MAX_SEED


class ProtocolError(Exception):
  """A client broke the protocol: `code` (one of ERROR_CODES) and a message saying what
  and why; the server answers it with `error(code, message)` and closes."""

  def __init__(self, code: str, message: str):
    if code not in ERROR_CODES:
      raise ValueError(f"unknown error code {code!r}; one of {ERROR_CODES}")
    super().__init__(message)
    self.code = code
    self.message = message


# ---- client -> server ------------------------------------------------------------------
def start(sample_rate: int, fmt: str = "pcm16", transcript: bool = False,
          seed: int | None = None) -> str:
  """The client's first message (`seed`: the session's sampling seed, module docstring)."""
  obj = {"type": "start", "sample_rate": int(sample_rate), "format": fmt,
         "transcript": bool(transcript)}
  if seed is not None:
    obj["seed"] = int(seed)
  return json.dumps(obj)


def end() -> str:
  """The client's last message."""
  return json.dumps({"type": "end"})


def encode_frame(samples: np.ndarray, fmt: str) -> bytes:
  """Float samples in [-1, 1] -> one binary frame in `fmt` (little-endian)."""
  x = np.asarray(samples, np.float32).reshape(-1)
  if fmt == "pcm16":
    return (np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")).tobytes()
  if fmt == "float32":
    return x.astype("<f4").tobytes()
  raise ValueError(f"format {fmt!r}: expected one of {FORMATS}")


def _json_object(message: str, what: str, code: str) -> dict:
  try:
    obj = json.loads(message)
  except ValueError as e:
    raise ProtocolError(code, f"{what} is not JSON ({e.msg} at char {e.pos}): "
                              f"{message[:80]!r}") from None
  if not isinstance(obj, dict):
    raise ProtocolError(code, f"{what} is JSON {type(obj).__name__}, expected an object "
                              'with a "type"')
  return obj


def parse_start(message: Any, sample_rate: int) -> dict:
  """Validates the first message -> {"sample_rate", "format", "transcript", "seed"}
  (`seed` None when the client sent none).

  Raises ProtocolError: `bad_start` for anything but a text JSON start object
  (binary data first, other types, missing or mistyped fields), `bad_format` for a
  sample rate other than `sample_rate` or an unknown format.
  """
  if not isinstance(message, str):
    raise ProtocolError("bad_start", f"the first message is {len(message)} bytes of binary "
                        'data; send {"type": "start", ...} as text first')
  obj = _json_object(message, "the first message", "bad_start")
  if obj.get("type") != "start":
    raise ProtocolError("bad_start", f'the first message has type {obj.get("type")!r}, '
                        'expected "start"')
  unknown = sorted(set(obj) - {"type", "sample_rate", "format", "transcript", "seed"})
  if unknown:
    raise ProtocolError("bad_start", f"start has unknown field(s) {unknown}; known: "
                        "sample_rate, format, transcript, seed")
  rate = obj.get("sample_rate")
  if isinstance(rate, bool) or not isinstance(rate, int):
    raise ProtocolError("bad_start", f"start.sample_rate={rate!r}: expected an integer "
                        f"(the model reads {sample_rate} Hz)")
  if rate != int(sample_rate):
    raise ProtocolError("bad_format", f"start.sample_rate={rate}: the model reads "
                        f"{sample_rate} Hz; resample the audio to {sample_rate} Hz")
  fmt = obj.get("format")
  if fmt not in FORMATS:
    raise ProtocolError("bad_format", f"start.format={fmt!r}: expected one of "
                        f"{list(FORMATS)}")
  transcript = obj.get("transcript", False)
  if not isinstance(transcript, bool):
    raise ProtocolError("bad_start", f"start.transcript={transcript!r}: expected true or "
                        "false")
  seed = obj.get("seed")
  if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                           or not 0 <= seed < MAX_SEED):
    raise ProtocolError("bad_start", f"start.seed={seed!r}: expected an integer in "
                        f"[0, {MAX_SEED})")
  return {"sample_rate": rate, "format": fmt, "transcript": transcript, "seed": seed}


def parse_client_text(message: str) -> str:
  """A text message after the start -> its type ("end"); anything else is `bad_frame`."""
  obj = _json_object(message, "text message", "bad_frame")
  if obj.get("type") == "start":
    raise ProtocolError("bad_frame", "a second start message: one session per websocket")
  if obj.get("type") != "end":
    raise ProtocolError("bad_frame", f'text message of type {obj.get("type")!r}: after '
                        'the start only binary audio and {"type": "end"} are expected')
  return "end"


def decode_frame(data: bytes, fmt: str, max_frame_bytes: int) -> np.ndarray:
  """One binary frame -> float32 samples `[n]`.

  Raises ProtocolError: `too_large` over `max_frame_bytes`, `bad_frame` for a length
  that is not whole samples or NaN/Inf float samples.
  """
  n = len(data)
  if n > max_frame_bytes:
    raise ProtocolError("too_large", f"binary frame of {n} bytes exceeds max_frame_bytes="
                        f"{max_frame_bytes}; send smaller frames")
  size = _SAMPLE_BYTES[fmt]
  if n % size:
    raise ProtocolError("bad_frame", f"binary frame of {n} bytes is not whole {fmt} "
                        f"samples ({size} bytes each)")
  if fmt == "pcm16":
    return np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
  x = np.frombuffer(data, "<f4").astype(np.float32)
  bad = int(np.count_nonzero(~np.isfinite(x)))
  if bad:
    raise ProtocolError("bad_frame", f"binary frame holds {bad} non-finite float32 "
                        f"sample(s) (NaN/Inf) among {x.size}")
  return x


# ---- server -> client ------------------------------------------------------------------
def _dump(obj: dict) -> str:
  return json.dumps(obj, ensure_ascii=False)


def ready(session: str, sample_rate: int, chunk_ms: int, output_sample_rate: int) -> str:
  return _dump({"type": "ready", "session": session, "sample_rate": int(sample_rate),
                "chunk_ms": int(chunk_ms), "output_sample_rate": int(output_sample_rate),
                "audio_format": AUDIO_FORMAT})


def source(chunk: int, delta: str) -> str:
  return _dump({"type": "source", "chunk": int(chunk), "text": delta})


def text(chunk: int, delta: str) -> str:
  return _dump({"type": "text", "chunk": int(chunk), "text": delta})


def audio(chunk: int, samples: int) -> str:
  """The header of a binary audio message (`audio_bytes`) sent right after it."""
  return _dump({"type": "audio", "chunk": int(chunk), "samples": int(samples)})


def audio_bytes(samples: np.ndarray) -> bytes:
  return np.asarray(samples, "<f4").reshape(-1).tobytes()


def turn(chunk: int, end_ms: float, ready_ms: float, turn_text: str,
         speech_ms: float) -> str:
  return _dump({"type": "turn", "chunk": int(chunk), "end_ms": float(end_ms),
                "ready_ms": float(ready_ms), "text": turn_text,
                "speech_ms": float(speech_ms)})


def error(code: str, message: str) -> str:
  close_code(code)  # validates the code
  return _dump({"type": "error", "code": code, "message": message})


def done(chunks: int, whole_text: str, audio_s: float) -> str:
  return _dump({"type": "done", "chunks": int(chunks), "text": whole_text,
                "audio_s": float(audio_s)})


def parse_server_text(message: str) -> dict:
  """A server text message -> its JSON object (clients); ValueError if it is not one."""
  obj = json.loads(message)
  if not isinstance(obj, dict) or "type" not in obj:
    raise ValueError(f"server message without a type: {message[:80]!r}")
  return obj


__all__ = ["FORMATS", "AUDIO_FORMAT", "ERROR_CODES", "MAX_SEED", "ProtocolError",
           "close_code", "start", "end", "encode_frame", "parse_start", "parse_client_text",
           "decode_frame", "ready", "source", "text", "audio", "audio_bytes", "turn",
           "error", "done", "parse_server_text"]
