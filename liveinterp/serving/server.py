"""The streaming websocket server: many sessions, one batched decoder step per tick.

    server = StreamServer(decoder, tokenizer=tok, config=ServerConfig(max_sessions=16))
    asyncio.run(server.run_forever())             # `python -m liveinterp.serve`
    with server.start_in_thread() as running:     # tests, benchmarks: port 0 = any
      ... running.url ...                         # ws://127.0.0.1:PORT/ws

The protocol (messages, error codes, flow control) is `liveinterp.serving.protocol`.
`decoder` is anything with the streaming decoder's interface (`init_stream(batch, rng)`,
`step(state, audio_bc, valid_b) -> (state, outputs)`, `chunk_samples`, `chunk_ms`,
`sample_rate`): the in-process `inference.decoder.StreamingDecoder` or the exported one
of `liveinterp.serving.loader.load_export` (whose `.tokenizer` is used when no tokenizer
is given).

Batching. The server holds one decoder state of B = `max_sessions / lanes` slots per
*lane* (`ServerConfig.lanes`, default 1; `serve --lanes=auto` picks more on CPU). Each
session owns a slot for its lifetime (a new one goes to the lane with the fewest
sessions). Each lane's ticker task takes, from every
active session of its lane with a full chunk buffered (or an ended stream's zero-padded
last partial chunk), that chunk, and runs one `decoder.step` for the lane's B slots
(`valid_b` False for the rest, whose rows the step leaves untouched) in a worker thread
(`asyncio.to_thread`), so the event loop keeps receiving audio meanwhile; then it queues
each session's events. Lanes step concurrently (XLA runs each step in its worker thread
without the GIL): on a machine with several cores, lanes use them where one batch mostly
runs on one (16 trained test-split streams, 2 cores, `benchmarks/stream_replay.py`, every
lane finishing a chunk before the next: 692 ms per chunk of all streams as one batch,
534 ms as two lanes of 8; served, `benchmarks/serve_load.py`, issue #15). A session whose chunk
arrives during a step goes into the next one; with `batch_wait_ms` > 0 the ticker first
waits up to that long for every other active session's chunk (dynamic batching: the step
costs the same for 1 or B ready rows). A new session's slot is reset to a fresh
stream first: `init_stream(B)` once gives a template state, and each leaf's rows of that
slot are replaced (`jnp.where` along the leaf's batch axis). The batch axis of every leaf
is found by comparing the state's shapes for B and B + 1 streams (abstractly,
`jax.eval_shape`): exactly one axis must differ, or the leaf must be batch-free (the PRNG
key and stream-global counters such as the encoder's frame index, which no output depends
on; they are left as they are). Any other leaf is an error at start-up, never a silently
shared row. Rows are independent in the decoder, so a session's outputs equal those of
the same audio decoded alone. Sampling too: a state with a `rng` field (the in-process
decoder's `DecoderState`) or a per-row `rng` leaf (`[B, *key]` raw key data: the exported
decoder's state dict) gets one key per slot, and a new session's row is
`fold_in(key(config.seed), session seed)` (the start's `seed`, else the session's number;
`protocol`), which the decoder splits per row and advances only on that row's chunks, so
a session's draws depend on nothing but its seed and audio. A decoder whose state holds
one batch-free key keeps it shared: reproducible only greedy.

Limits. At most `max_sessions` concurrent sessions (a connection holds a slot from its
handshake): one more gets `busy` (close 1013) and the others keep going. A frame over `max_frame_bytes` is `too_large`; frames that are not
whole samples, non-finite floats, non-JSON or unknown text are `bad_frame`; a bad start is
`bad_start` / `bad_format`; a session with no message for `idle_timeout_s` is `idle`.
Each of these closes only that session (1008). Memory per session is bounded: at most
`max_buffer_s` of unprocessed audio is buffered, beyond that the server stops reading the
socket (TCP back-pressure slows a client that sends faster than real time; see the
protocol); a client that does not read its events holds at most `_OUT_CHUNKS` chunks
of them queued, then its chunks wait (and so its input, by the same back-pressure);
the text kept for `done` is the last `MAX_TEXT_CHARS` characters; websockets' own
receive queue is bounded (`max_queue` frames of at most
`max_size` bytes; frames larger than twice `max_frame_bytes` are refused by websockets
itself with close code 1009 before they are read); host-side bookkeeping per chunk is
O(1); latency samples are kept in bounded rings.

Latency: per chunk, the time from the moment the session's chunk was complete in the
server's buffer to the moment its last event was sent (`stats()`, per session and over
all sessions). Turn messages carry the computation-aware `ready_ms` of
`inference.session.ReadyClock` (source time + measured compute).

HTTP: `GET /` serves `static/index.html`, `GET /static/<file>` the page's files (404 with
a message when missing); the websocket endpoint is `/ws`.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import mimetypes
import os
import threading
import time
import uuid
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from liveinterp.inference.session import Detokenizer, ReadyClock
from liveinterp.serving import protocol

log = logging.getLogger("liveinterp.serve")

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
WS_PATH = "/ws"
_LATENCY_RING = 100_000   # server-wide latency samples kept
_SESSION_RING = 4096      # per session
_OUT_CHUNKS = 32          # chunks of events queued for a client before its input waits
PING_TIMEOUT_S = 60.0     # websockets keepalive: a peer silent this long is dropped
MAX_TEXT_CHARS = 1 << 20  # translation text kept per session for `done` (the last ones)


@dataclasses.dataclass
class ServerConfig:
  """Server settings (the CLI flags of `python -m liveinterp.serve`)."""
  host: str = "127.0.0.1"
  port: int = 8765            # 0: any free port (see `RunningServer.port`)
  max_sessions: int = 16      # B: decoder slots = concurrent sessions
  idle_timeout_s: float = 30.0
  max_frame_bytes: int = 1 << 18   # 256 KiB: 8 s of pcm16, 4 s of float32 at 16 kHz
  max_buffer_s: float = 5.0   # unprocessed audio buffered per session before back-pressure
  static_dir: str = STATIC_DIR
  seed: int = 0               # server PRNG seed; session keys fold in the session's seed
  # Dynamic batching: a step costs the same for 1 or B ready slots, so once one session
  # has a chunk the ticker waits up to this long for the other active sessions' chunks
  # (0: step at once with whoever is ready)
  batch_wait_ms: float = 0.0
  # Decoder batches stepped concurrently, max_sessions / lanes slots each (about one per
  # CPU core; module docstring)
  lanes: int = 1

  def check(self):
    """ValueError naming the bad field."""
    if not 1 <= int(self.max_sessions) <= 4096:
      raise ValueError(f"max_sessions={self.max_sessions}: expected 1..4096")
    if not self.idle_timeout_s > 0:
      raise ValueError(f"idle_timeout_s={self.idle_timeout_s}: must be > 0")
    if int(self.max_frame_bytes) < 4:
      raise ValueError(f"max_frame_bytes={self.max_frame_bytes}: must be >= 4")
    if not self.max_buffer_s > 0:
      raise ValueError(f"max_buffer_s={self.max_buffer_s}: must be > 0")
    if not 0 <= int(self.port) <= 65535:
      raise ValueError(f"port={self.port}: expected 0..65535")
    if not 0 <= float(self.batch_wait_ms) <= 60_000:
      raise ValueError(f"batch_wait_ms={self.batch_wait_ms}: expected 0..60000")
    lanes = self.lanes
    if (isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or lanes < 1
        or int(self.max_sessions) % lanes):
      raise ValueError(f"lanes={lanes!r}: expected an integer >= 1 that divides "
                       f"max_sessions={self.max_sessions}")


_CLOSE = object()


class _Session:
  """One websocket session: its slot, buffered input, output queue and counters."""

  def __init__(self, conn: ServerConnection, slot: int, fmt: str, transcript: bool,
               tokenizer, seed: int = 0):
    self.id = uuid.uuid4().hex[:12]
    self.seed = seed            # its row's key: fold_in(server key, seed)
    self.conn = conn
    self.slot = slot
    self.fmt = fmt
    self.transcript = transcript
    self.pieces: collections.deque = collections.deque()  # float32 arrays, oldest first
    self.buffered = 0           # samples in `pieces`
    self.peak_buffered = 0      # the most ever buffered (bounded by back-pressure)
    self.complete_at: collections.deque = collections.deque()  # per full chunk buffered
    self.ended = False          # "end" received
    self.closed = False         # no more chunks are taken (ended+done, error, gone)
    self.needs_reset = True     # the slot's rows hold another stream
    self.inflight = False       # a chunk of this session is in the running step
    self.chunks = 0
    self.detok = Detokenizer(tokenizer)
    self.said_text = self.said_src = False
    self.text: collections.deque = collections.deque()  # deltas, for `done`
    self.text_chars = 0
    self.queued_chunks = 0      # chunks whose events are queued but not all sent
    self.audio_samples = 0
    self.clock = ReadyClock()
    self.latencies_ms: collections.deque = collections.deque(maxlen=_SESSION_RING)
    self.outq: asyncio.Queue = asyncio.Queue()
    self.drained = asyncio.Event()
    self.finished = asyncio.Event()
    self.outcome = "open"       # open | done | error:<code> | disconnected

  def add(self, x: np.ndarray, chunk_samples: int, now: float):
    """Buffers samples; notes when each chunk they complete was complete."""
    if not x.size:
      return
    before = self.buffered // chunk_samples
    self.pieces.append(x)
    self.buffered += x.size
    self.peak_buffered = max(self.peak_buffered, self.buffered)
    for _ in range(self.buffered // chunk_samples - before):
      self.complete_at.append(now)

  def has_chunk(self, chunk_samples: int) -> bool:
    return self.buffered >= chunk_samples or (self.ended and self.buffered > 0)

  def take(self, chunk_samples: int) -> tuple[np.ndarray, float]:
    """The next chunk (an ended stream's last one zero-padded) and when it was complete."""
    out = np.zeros(chunk_samples, np.float32)
    pos = 0
    while pos < chunk_samples and self.pieces:
      p = self.pieces.popleft()
      n = min(p.size, chunk_samples - pos)
      out[pos:pos + n] = p[:n]
      if n < p.size:
        self.pieces.appendleft(p[n:])
      pos += n
    self.buffered -= pos
    t = self.complete_at.popleft() if self.complete_at else time.perf_counter()
    return out, t


def _batch_axes(decoder, batch: int) -> list[int | None]:
  """Per state leaf: its batch axis, or None for a batch-free leaf (module docstring)."""
  def shapes(b):
    try:
      tree = jax.eval_shape(lambda: decoder.init_stream(b, 0))
    except Exception:  # pylint: disable=broad-except
      tree = decoder.init_stream(b, 0)  # a decoder that cannot be traced abstractly
    return jax.tree_util.tree_flatten_with_path(tree)[0]
  a, b = shapes(batch), shapes(batch + 1)
  if [p for p, _ in a] != [p for p, _ in b]:
    raise ValueError("decoder.init_stream: the state's structure depends on the batch size")
  axes = []
  for (path, x), (_, y) in zip(a, b):
    name = jax.tree_util.keystr(path)
    if len(x.shape) != len(y.shape):
      raise ValueError(f"decoder state leaf {name}: rank depends on the batch size")
    diff = [i for i, (m, n) in enumerate(zip(x.shape, y.shape)) if m != n]
    if not diff:
      # The PRNG key: typed, or raw key data (the exported decoder's `rng` leaf).
      is_key = (jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                or (name.endswith(("rng", "rng']", "rng\"]")) and x.dtype == np.uint32))
      if len(x.shape) and not is_key:
        raise ValueError(f"decoder state leaf {name} {tuple(x.shape)} has no batch axis; "
                         "the server cannot give each session its own rows")
      axes.append(None)
    elif len(diff) == 1 and x.shape[diff[0]] == batch and y.shape[diff[0]] == batch + 1:
      axes.append(diff[0])
    else:
      raise ValueError(f"decoder state leaf {name}: shapes {tuple(x.shape)} / "
                       f"{tuple(y.shape)} for {batch} / {batch + 1} streams have no single "
                       "batch axis")
  return axes


def _make_reset(axes: list[int | None]):
  """jitted (state, template, mask_b) -> state with the masked slots' rows from template."""
  def reset(state, template, mask_b):
    leaves, treedef = jax.tree.flatten(state)
    fresh = jax.tree.leaves(template)
    out = []
    for x, t, ax in zip(leaves, fresh, axes):
      if ax is None:
        out.append(x)
        continue
      shape = [1] * x.ndim
      shape[ax] = -1
      out.append(jnp.where(mask_b.reshape(shape), t, x))
    return jax.tree.unflatten(treedef, out)
  return jax.jit(reset)


@jax.jit
def _seed_rows(rng_b, base, seeds_b, mask_b):
  """Per-row keys `[B]` (typed, or raw key data `[B, *key]`) with the masked rows
  replaced by `fold_in(base, seed)`."""
  keys = jax.vmap(jax.random.fold_in, (None, 0))(base, seeds_b)
  if not jax.dtypes.issubdtype(rng_b.dtype, jax.dtypes.prng_key):
    keys = jax.random.key_data(keys)
  return jnp.where(mask_b.reshape((-1,) + (1,) * (rng_b.ndim - 1)), keys, rng_b)


def _row_rng(state):
  """The per-row keys of a decoder state (a `rng` field, or the exported decoder's
  `[B, *key]` `rng` leaf), or None when it has none."""
  if hasattr(state, "_replace") and hasattr(state, "rng"):
    return state.rng
  if isinstance(state, dict) and "rng" in state and state["rng"].ndim >= 2:
    return state["rng"]
  return None


def _with_rng(state, rng):
  """`state` with its per-row keys replaced (as raw key data in a state dict)."""
  if not isinstance(state, dict):
    return state._replace(rng=rng)
  if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return {**state, "rng": rng}


_OUT_FIELDS = ("valid", "chunk_index", "text", "n_text", "src", "n_src", "n_speech",
               "audio", "n_samples")


class StreamServer:
  """Websocket server around a streaming decoder (module docstring)."""

  def __init__(self, decoder, *, tokenizer=None, config: ServerConfig | None = None):
    self.config = config or ServerConfig()
    self.config.check()
    self.decoder = decoder
    self.tokenizer = tokenizer if tokenizer is not None else getattr(decoder, "tokenizer",
                                                                     None)
    self.batch = int(self.config.max_sessions)
    self.lanes = int(self.config.lanes)
    self.lane_batch = self.batch // self.lanes  # slots of one decoder state
    self.chunk_samples = int(decoder.chunk_samples)
    self.chunk_ms = int(decoder.chunk_ms)
    self.sample_rate = int(decoder.sample_rate)
    self.output_sample_rate = int(getattr(decoder, "output_sample_rate",
                                          decoder.sample_rate))
    self.buffer_cap = max(self.chunk_samples,
                          int(self.config.max_buffer_s * self.sample_rate))
    self._axes = _batch_axes(decoder, self.lane_batch)
    self._reset = _make_reset(self._axes)
    self._template = decoder.init_stream(self.lane_batch, self.config.seed)
    # One key per slot when the state has a `rng` field or leaf (module docstring).
    self._row_keys = _row_rng(self._template) is not None
    self._base_key = jax.random.key(int(self.config.seed),
                                    impl=getattr(decoder, "key_impl", None))
    self._next_seed = 0         # the seed of a session that sends none
    self._states: list = [None] * self.lanes    # lane l: slots l * lane_batch + row
    self._slots: list[_Session | None] = [None] * self.batch
    self._works: list[asyncio.Event] = []       # per lane: a chunk or room arrived
    self._ticker_tasks: list[asyncio.Task] = []
    self._counts = collections.Counter()
    self._latencies: collections.deque = collections.deque(maxlen=_LATENCY_RING)
    self._step_ms: collections.deque = collections.deque(maxlen=_LATENCY_RING)
    self._sessions_done: collections.deque = collections.deque(maxlen=1024)
    self.warmup_s = 0.0

  # ---- lifecycle -------------------------------------------------------------------------
  def warmup(self) -> float:
    """Builds the state and compiles `step` and the slot reset (a step with no valid row
    leaves the state as it is); returns seconds taken."""
    t0 = time.perf_counter()
    b = self.lane_batch
    for lane in range(self.lanes):  # lanes share the compiled programs (same shapes)
      if self._states[lane] is not None:
        continue
      state = self._init_state()
      state = self._reset(state, self._template, np.zeros(b, bool))
      if self._row_keys:  # compiles the per-row key update too
        state = _with_rng(state, _seed_rows(_row_rng(state), self._base_key,
                                            np.zeros(b, np.uint32), np.zeros(b, bool)))
      state, out = self.decoder.step(
          state, np.zeros((b, self.chunk_samples), np.float32), np.zeros(b, bool))
      jax.block_until_ready(out)
      self._states[lane] = state
    self.warmup_s = time.perf_counter() - t0
    return self.warmup_s

  async def start(self):
    """Warms up, starts the ticker and listens; returns the websockets server."""
    if any(st is None for st in self._states):
      await asyncio.to_thread(self.warmup)
    self._works = [asyncio.Event() for _ in range(self.lanes)]
    self._ticker_tasks = [asyncio.create_task(self._ticker(lane))
                          for lane in range(self.lanes)]
    frame = int(self.config.max_frame_bytes)
    # Keepalive pings find dead peers (a client that vanished while back-pressured or
    # not reading would otherwise hold its slot); the timeout is generous because a
    # loaded machine can delay pongs by many seconds without anything being wrong.
    return await serve(self._handler, self.config.host, int(self.config.port),
                       process_request=self._process_request,
                       max_size=max(2 * frame, 1 << 16), max_queue=16,
                       ping_interval=20.0, ping_timeout=PING_TIMEOUT_S, logger=log)

  async def run_forever(self, on_ready=None):
    """Serves until cancelled; `on_ready(port)` is called once listening."""
    ws_server = await self.start()
    try:
      if on_ready is not None:
        on_ready(ws_server.sockets[0].getsockname()[1])
      await ws_server.serve_forever()
    finally:
      ws_server.close()
      for task in self._ticker_tasks:
        task.cancel()

  def start_in_thread(self) -> "RunningServer":
    """Runs the server on its own event loop in a daemon thread (tests, benchmarks)."""
    return RunningServer(self)

  # ---- HTTP ------------------------------------------------------------------------------
  def _process_request(self, connection: ServerConnection, request: Request):
    path = request.path.split("?", 1)[0]
    if path == WS_PATH:
      return None  # the websocket handshake
    if path in ("/", "/index.html"):
      return self._file_response(connection, "index.html")
    if path.startswith("/static/"):
      return self._file_response(connection, path[len("/static/"):])
    return connection.respond(404, f"404: no page at {path}; the page is at /, the "
                                   f"websocket at {WS_PATH}\n")

  def _file_response(self, connection, name: str):
    root = os.path.realpath(self.config.static_dir)
    full = os.path.realpath(os.path.join(root, name))
    if not full.startswith(root + os.sep) or not os.path.isfile(full):
      return connection.respond(404, f"404: {name} not found in {root} (the browser page "
                                     "is liveinterp/serving/static/index.html)\n")
    with open(full, "rb") as f:
      body = f.read()
    ctype = mimetypes.guess_type(full)[0] or "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript",):
      ctype += "; charset=utf-8"
    headers = Headers([("Content-Type", ctype), ("Content-Length", str(len(body))),
                       ("Cache-Control", "no-cache"), ("Connection", "close")])
    return Response(200, "OK", headers, body)

  # ---- sessions --------------------------------------------------------------------------
  async def _handler(self, conn: ServerConnection):
    slot = self._free_slot()
    if slot is None:
      self._counts["refused"] += 1
      await _send_error_and_close(conn, "busy", f"all {self.batch} session slots are in "
                                  "use (max_sessions); try again later")
      return
    self._slots[slot] = placeholder = _Placeholder()
    sess = None
    cfg = self.config
    try:
      try:
        first = await asyncio.wait_for(conn.recv(), cfg.idle_timeout_s)
        opts = protocol.parse_start(first, self.sample_rate)
      except TimeoutError:
        raise protocol.ProtocolError("idle", f"no start message within idle_timeout_s="
                                     f"{cfg.idle_timeout_s:g} s") from None
      except protocol.ProtocolError:
        raise
      seed = opts["seed"]
      if seed is None:
        seed, self._next_seed = self._next_seed, (self._next_seed + 1) % protocol.MAX_SEED
      sess = _Session(conn, slot, opts["format"], opts["transcript"], self.tokenizer,
                      seed)
      await conn.send(protocol.ready(sess.id, self.sample_rate, self.chunk_ms,
                                     self.output_sample_rate))
      self._slots[slot] = sess
      self._counts["sessions"] += 1
      sender = asyncio.create_task(self._sender(sess))
      try:
        await self._receive(sess)
      except protocol.ProtocolError as e:
        self._fail(sess, e.code, e.message)
      except ConnectionClosed:
        sess.closed = True
        sess.outcome = "disconnected"
        sess.outq.put_nowait(_CLOSE)
      await sender
    except protocol.ProtocolError as e:  # before the session existed
      self._counts[f"error:{e.code}"] += 1
      await _send_error_and_close(conn, e.code, e.message)
    except ConnectionClosed:
      self._counts["disconnected"] += 1
    except Exception as e:  # pylint: disable=broad-except
      log.exception("session failed")
      self._counts["error:internal"] += 1
      await _send_error_and_close(conn, "internal", f"{type(e).__name__}: {e}")
    finally:
      if sess is not None:
        sess.closed = True
        if sess.outcome == "disconnected":
          self._counts["disconnected"] += 1
        self._sessions_done.append(self._session_stats(sess))
      # A slot whose chunk is still in the running step is freed once it has finished.
      while sess is not None and sess.inflight:
        await asyncio.sleep(0.005)
      if self._slots[slot] in (sess, placeholder):
        self._slots[slot] = None

  async def _receive(self, sess: _Session):
    """Reads the session's messages until `end` (ProtocolError / ConnectionClosed)."""
    cfg = self.config
    while not sess.ended and not sess.closed:
      while sess.buffered >= self.buffer_cap and not sess.closed:
        sess.drained.clear()  # back-pressure: stop reading until the ticker caught up
        await sess.drained.wait()
      if sess.closed:
        return
      try:
        msg = await asyncio.wait_for(sess.conn.recv(), cfg.idle_timeout_s)
      except TimeoutError:
        raise protocol.ProtocolError("idle", f"no message for idle_timeout_s="
                                     f"{cfg.idle_timeout_s:g} s") from None
      if isinstance(msg, str):
        protocol.parse_client_text(msg)
        sess.ended = True
        if sess.buffered % self.chunk_samples:
          sess.complete_at.append(time.perf_counter())
      else:
        x = protocol.decode_frame(msg, sess.fmt, cfg.max_frame_bytes)
        sess.add(x, self.chunk_samples, time.perf_counter())
      self._wake(sess)

  def _wake(self, sess: _Session):
    """Wakes the ticker of the session's lane."""
    self._works[sess.slot // self.lane_batch].set()

  def _free_slot(self) -> int | None:
    """A free slot in the lane with the fewest sessions (None: all in use)."""
    lb = self.lane_batch
    best = None
    for lane in range(self.lanes):
      slots = self._slots[lane * lb:(lane + 1) * lb]
      free = [i for i, s in enumerate(slots) if s is None]
      if free and (best is None or len(free) > best[0]):
        best = (len(free), lane * lb + free[0])
    return None if best is None else best[1]

  def _fail(self, sess: _Session, code: str, message: str):
    """Ends a session with an error (queued after what was already queued)."""
    if sess.closed:
      return
    sess.closed = True
    sess.outcome = f"error:{code}"
    self._counts[f"error:{code}"] += 1
    sess.outq.put_nowait(protocol.error(code, message))
    sess.outq.put_nowait((_CLOSE, protocol.close_code(code), code))
    sess.drained.set()

  async def _sender(self, sess: _Session):
    """Sends the session's queued messages in order; records per-chunk latency."""
    try:
      while True:
        item = await sess.outq.get()
        if item is _CLOSE:
          return
        if isinstance(item, tuple) and item and item[0] is _CLOSE:
          await sess.conn.close(item[1], item[2])
          return
        if isinstance(item, tuple):  # ("latency", t_complete): the chunk's events are out
          ms = (time.perf_counter() - item[1]) * 1000.0
          sess.latencies_ms.append(ms)
          self._latencies.append(ms)
          sess.queued_chunks -= 1
          if sess.queued_chunks == _OUT_CHUNKS - 1:
            self._wake(sess)  # the ticker skipped this session while its queue was full
          continue
        await sess.conn.send(item)
    except ConnectionClosed:
      if sess.outcome == "open":
        sess.outcome = "disconnected"
    finally:
      sess.closed = True
      sess.drained.set()
      sess.finished.set()

  # ---- the batched ticker ----------------------------------------------------------------
  async def _ticker(self, lane: int):
    work = self._works[lane]
    while True:
      await work.wait()
      work.clear()
      try:
        while True:
          self._finish_ended()
          rows = self._ready_rows(lane)
          if not rows:
            break
          rows = await self._gather(lane, rows)
          if rows:
            await self._tick(lane, rows)
      except Exception as e:  # pylint: disable=broad-except
        # A bug in the bookkeeping: end the sessions it touched, keep serving new ones.
        log.exception("ticker failed")
        for s in self._lane_slots(lane):
          if isinstance(s, _Session):
            s.inflight = False
            self._fail(s, "internal", f"server error: {type(e).__name__}: {e}")

  def _lane_slots(self, lane: int) -> list:
    return self._slots[lane * self.lane_batch:(lane + 1) * self.lane_batch]

  def _ready_rows(self, lane: int) -> list:
    """The lane's sessions with a chunk to decode whose output queue has room."""
    return [s for s in self._lane_slots(lane) if isinstance(s, _Session) and not s.closed
            and s.has_chunk(self.chunk_samples) and s.queued_chunks < _OUT_CHUNKS]

  async def _gather(self, lane: int, rows: list) -> list:
    """Dynamic batching (`ServerConfig.batch_wait_ms`): waits until every active session
    that could join the step has a chunk, or the wait is over -> the step's sessions.

    Streams that started at different times reach their chunk boundaries at different
    times; stepping at the first one runs a full-batch step for a few rows and makes the
    rest wait for the next (each step costs the same whatever the number of ready rows).
    """
    wait_s = float(self.config.batch_wait_ms) / 1000.0
    if wait_s <= 0:
      return rows
    deadline = time.perf_counter() + wait_s
    work = self._works[lane]
    while True:
      work.clear()  # before looking: a chunk arriving from here on wakes the wait
      self._finish_ended()
      rows = self._ready_rows(lane)
      ready = set(map(id, rows))
      missing = [s for s in self._lane_slots(lane) if isinstance(s, _Session)
                 and not s.closed and not s.ended and id(s) not in ready
                 and s.queued_chunks < _OUT_CHUNKS]
      left = deadline - time.perf_counter()
      if not missing or left <= 0:
        break
      try:
        await asyncio.wait_for(work.wait(), left)
      except TimeoutError:
        pass
    # chunks arriving from here on are picked up by the ticker's next look after the step
    return rows

  def _finish_ended(self):
    """Queues `done` + close for ended sessions whose audio has all been decoded."""
    for s in self._slots:
      if (isinstance(s, _Session) and not s.closed and s.ended and not s.buffered
          and not s.inflight):
        s.closed = True
        s.outcome = "done"
        self._counts["done"] += 1
        s.outq.put_nowait(protocol.done(s.chunks, "".join(s.text),
                                        s.audio_samples / self.output_sample_rate))
        s.outq.put_nowait((_CLOSE, protocol.CLOSE_NORMAL, "done"))

  async def _tick(self, lane: int, rows: list[_Session]):
    b, c = self.lane_batch, self.chunk_samples
    audio = np.zeros((b, c), np.float32)
    valid = np.zeros(b, bool)
    reset = np.zeros(b, bool)
    seeds = np.zeros(b, np.uint32)
    complete_at = {}
    for s in rows:
      r = s.slot % b  # the session's row in its lane's state
      audio[r], complete_at[r] = s.take(c)
      valid[r] = True
      reset[r] = s.needs_reset
      seeds[r] = s.seed
      s.needs_reset = False
      s.inflight = True
      if s.buffered < self.buffer_cap:
        s.drained.set()
    t0 = time.perf_counter()
    try:
      self._states[lane], host = await asyncio.to_thread(
          self._run_step, self._states[lane], audio, valid, reset, seeds)
    except Exception as e:  # pylint: disable=broad-except
      log.exception("decoder step failed")
      # The state may have been donated: start over with a fresh one for the lane.
      self._states[lane] = self._init_state()
      for s in self._lane_slots(lane):
        if isinstance(s, _Session):
          s.inflight = False
          self._fail(s, "internal", f"decoder step failed: {type(e).__name__}: {e}")
      return
    compute_ms = (time.perf_counter() - t0) * 1000.0
    self._step_ms.append(compute_ms)
    self._counts["steps"] += 1
    self._counts[f"steps:lane{lane}"] += 1
    self._counts["chunks"] += len(rows)
    for s in rows:
      s.inflight = False
      if not s.closed:
        self._emit(s, host, s.slot % b, compute_ms, complete_at[s.slot % b])
      if s.buffered < self.buffer_cap:
        s.drained.set()

  def _init_state(self):
    """A fresh state for a lane's slots (per-row keys when the state has a `rng` field)."""
    state = self.decoder.init_stream(self.lane_batch, self.config.seed)
    if self._row_keys:
      state = _with_rng(state, jax.random.split(self._base_key, self.lane_batch))
    return state

  def _run_step(self, state, audio, valid, reset, seeds):
    """Worker thread: slot resets (a new session's key from its seed), one decoder step,
    outputs to host."""
    if reset.any():
      state = self._reset(state, self._template, reset)
      if self._row_keys:
        state = _with_rng(state, _seed_rows(_row_rng(state), self._base_key, seeds, reset))
    state, out = self.decoder.step(state, audio, valid)
    host = jax.device_get({k: getattr(out, k) for k in _OUT_FIELDS})
    return state, host

  def _emit(self, s: _Session, host: dict, r: int, compute_ms: float, t_complete: float):
    """Queues one session's events of one step (protocol order)."""
    t = int(host["chunk_index"][r])
    end_ms = (t + 1) * float(self.chunk_ms)
    ready_ms = s.clock.tick(end_ms, compute_ms)
    text_ids = [int(i) for i in host["text"][r, :int(host["n_text"][r])]]
    src_ids = [int(i) for i in host["src"][r, :int(host["n_src"][r])]]
    n = int(host["n_samples"][r])
    delta = s.detok(text_ids, s.said_text)
    src = s.detok(src_ids, s.said_src)
    s.said_text |= bool(delta)
    s.said_src |= bool(src)
    if src and s.transcript:
      s.outq.put_nowait(protocol.source(t, src))
    if delta:
      s.text.append(delta)
      s.text_chars += len(delta)
      while s.text_chars > MAX_TEXT_CHARS and len(s.text) > 1:
        s.text_chars -= len(s.text.popleft())
      s.outq.put_nowait(protocol.text(t, delta))
    if n:
      s.outq.put_nowait(protocol.audio(t, n))
      s.outq.put_nowait(protocol.audio_bytes(host["audio"][r, :n]))
      s.audio_samples += n
    if text_ids or src_ids or int(host["n_speech"][r]) or n:
      s.outq.put_nowait(protocol.turn(t, end_ms, ready_ms, delta,
                                      1000.0 * n / self.output_sample_rate))
    s.outq.put_nowait(("latency", t_complete))
    s.queued_chunks += 1
    s.chunks += 1

  # ---- statistics ------------------------------------------------------------------------
  def _session_stats(self, s: _Session) -> dict:
    lat = np.asarray(s.latencies_ms, np.float64)
    return {"session": s.id, "outcome": s.outcome, "chunks": s.chunks,
            "audio_s": s.audio_samples / self.output_sample_rate,
            "peak_buffered_samples": s.peak_buffered,
            "latency_ms_p50": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_ms_max": float(lat.max()) if lat.size else None}

  def stats(self) -> dict:
    """Counters, per-chunk latency percentiles (ms) over all sessions, finished sessions."""
    lat = np.asarray(self._latencies, np.float64)
    step = np.asarray(self._step_ms, np.float64)
    pct = lambda a, q: float(np.percentile(a, q)) if a.size else None  # noqa: E731
    return {"counts": dict(self._counts),
            "active": sum(isinstance(s, _Session) for s in self._slots),
            "latency_ms": {"n": int(lat.size), "p50": pct(lat, 50), "p95": pct(lat, 95),
                           "p99": pct(lat, 99), "max": pct(lat, 100)},
            "step_ms": {"n": int(step.size), "p50": pct(step, 50), "p99": pct(step, 99),
                        "total": float(step.sum())},
            "sessions": list(self._sessions_done), "warmup_s": self.warmup_s,
            "batch": self.batch, "lanes": self.lanes, "chunk_ms": self.chunk_ms}

  def latencies_ms(self) -> np.ndarray:
    """Every recorded per-chunk latency (ms, the last 100,000) over all sessions."""
    return np.asarray(self._latencies, np.float64)


class _Placeholder:
  """Holds a slot while a connection has not sent its start yet."""


async def _send_error_and_close(conn: ServerConnection, code: str, message: str):
  try:
    await conn.send(protocol.error(code, message))
    await conn.close(protocol.close_code(code), code)
  except ConnectionClosed:
    pass


class RunningServer:
  """A `StreamServer` on its own event loop in a daemon thread; `stop()` (or leaving the
  `with` block) shuts it down. `port` / `url` are known once the constructor returns."""

  def __init__(self, server: StreamServer, timeout_s: float = 600.0):
    self.server = server
    self.port: int | None = None
    self._loop = asyncio.new_event_loop()
    self._started = threading.Event()
    self._error: BaseException | None = None
    self._task = None
    self._thread = threading.Thread(target=self._run, daemon=True, name="stream-server")
    self._thread.start()
    if not self._started.wait(timeout_s):
      raise TimeoutError(f"the server did not start within {timeout_s} s")
    if self._error is not None:
      raise RuntimeError(f"the server failed to start: {self._error}") from self._error

  @property
  def loop(self) -> asyncio.AbstractEventLoop:
    """The server's event loop (for `asyncio.run_coroutine_threadsafe`)."""
    return self._loop

  @property
  def url(self) -> str:
    return f"ws://{self.server.config.host}:{self.port}{WS_PATH}"

  @property
  def http_url(self) -> str:
    return f"http://{self.server.config.host}:{self.port}/"

  def _run(self):
    asyncio.set_event_loop(self._loop)

    def ready(port):
      self.port = port
      self._started.set()

    self._task = self._loop.create_task(self.server.run_forever(on_ready=ready))
    try:
      self._loop.run_until_complete(self._task)
    except asyncio.CancelledError:
      pass
    except BaseException as e:  # pylint: disable=broad-except
      self._error = e
    finally:
      self._started.set()
      self._loop.close()

  def stop(self):
    if self._task is not None and self._thread.is_alive():
      self._loop.call_soon_threadsafe(self._task.cancel)
      self._thread.join(30)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


__all__ = ["ServerConfig", "StreamServer", "RunningServer", "STATIC_DIR", "WS_PATH"]
