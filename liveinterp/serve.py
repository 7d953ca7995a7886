"""Serve live speech translation over websockets: `python -m liveinterp.serve --export=DIR`.

    python -m liveinterp.serve --export=runs/tiny/export        # the exported artifact
    python -m liveinterp.serve --workdir=runs/tiny              # in-process, a trained run
    python -m liveinterp.serve --config=configs/tiny.py --init=random   # smoke run
    python -m liveinterp.client talk.wav --out o.wav            # then, in another shell
    open http://127.0.0.1:8765/                                 # or the browser page

One server (`liveinterp.serving.server.StreamServer`) around one streaming decoder with
`--max_sessions` slots: every active session's next chunk goes through one batched decoder
step. The protocol is documented in `liveinterp/serving/protocol.py`. Binds 127.0.0.1
unless `--host` says otherwise (the server has no authentication: expose it only behind
something that has).

Decoders: `--export=DIR` loads the artifact of `python -m liveinterp.export`
(`liveinterp.serving.loader.load_export`, no training code); `--workdir=RUN` builds the
in-process decoder as `python -m liveinterp.translate` does (config from
`RUN/config.json` or `--config`, `--config.a.b=v` overrides, the latest LLM stage or
`--stage`, the run's tokenizer); `--init=random` with `--config` uses random weights.

Mistakes in flags, paths or the config are one line on stderr and exit code 2
(liveinterp/common/cli.py).
"""

from __future__ import annotations

import asyncio
import os
import sys

from liveinterp.common import cli


def _parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m liveinterp.serve",
                         description=__doc__.split("\n")[0])
  src = p.add_argument_group("decoder (one of --export, --workdir, --init=random)")
  src.add_argument("--export", default=None, help="exported artifact directory")
  src.add_argument("--workdir", default=None, help="trained run directory (in-process)")
  src.add_argument("--config", default=None, help="config file[:stage] or config.json; "
                   "override fields with --config.a.b=v")
  src.add_argument("--init", choices=("trained", "random"), default="trained",
                   help="weights of the in-process decoder (random: smoke runs)")
  src.add_argument("--stage", default=None, help="LLM stage to load (default: latest)")
  src.add_argument("--tokenizer", default=None, help="sentencepiece prefix (default: the "
                   "run's; without one, text is sent as token ids)")
  cli.add_decoding_args(src, seed_help="random weights; the server's sampling seed "
                        "(each session folds in its own)")
  srv = p.add_argument_group("server")
  srv.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
  srv.add_argument("--port", type=int, default=8765, help="0: any free port")
  srv.add_argument("--max_sessions", type=int, default=16,
                   help="concurrent sessions = decoder batch (one more gets busy)")
  srv.add_argument("--idle_timeout_s", type=float, default=30.0,
                   help="close a session with no message for this long")
  srv.add_argument("--max_frame_bytes", type=int, default=1 << 18,
                   help="largest binary audio frame accepted")
  srv.add_argument("--max_buffer_s", type=float, default=5.0,
                   help="unprocessed audio buffered per session before back-pressure")
  srv.add_argument("--codec_rows", type=int, default=None,
                   help="in-process decoder: run the codec on the speaking slots only, "
                   "this many at a time (default 1: measured fastest; 0: on every slot)")
  srv.add_argument("--turn_rows", default="auto",
                   help="in-process decoder: comma-separated sizes (e.g. 8,4): once at most "
                   "that many slots are still writing their turn, the token loop runs on "
                   "those slots only; 'auto' (default): halvings of --max_sessions down to "
                   "1; 'none': every slot until the last turn ends")
  srv.add_argument("--lanes", default="auto",
                   help="decoder batches stepped concurrently, --max_sessions / lanes "
                   "slots each (must divide --max_sessions); 'auto' (default): 1 on an "
                   "accelerator, on CPU the most lanes of >= 4 slots up to 2 per core "
                   "(auto_lanes)")
  srv.add_argument("--batch_wait_ms", type=float, default=None,
                   help="dynamic batching: once a session has a chunk, wait up to this "
                   "long for the other sessions' chunks before the step (0: at once; "
                   "default: ServerConfig.batch_wait_ms)")
  srv.add_argument("--static_dir", default=None, help="the page's directory (default: "
                   "liveinterp/serving/static)")
  p.add_argument("--verbose", action="store_true", help="tracebacks of user errors too")
  return p


def _check_args(args, overrides):
  chosen = [n for n, on in (("--export", args.export), ("--workdir", args.workdir),
                            ("--init=random", args.init == "random")) if on]
  if len(chosen) != 1:
    raise cli.UserError("give exactly one of --export=DIR, --workdir=RUN_DIR or "
                        f"--init=random (got {', '.join(chosen) or 'none'})")
  if args.export:
    if not os.path.isdir(args.export):
      raise cli.UserError(f"--export={args.export}: no such directory")
    bad = [n for n, v in (("--config", args.config), ("--stage", args.stage),
                          ("--tokenizer", args.tokenizer),
                          ("--max_turn_tokens", args.max_turn_tokens),
                          ("--codec_rows", args.codec_rows),
                          ("--turn_rows", None if args.turn_rows == "auto"
                           else args.turn_rows)) if v is not None]
    if bad or overrides:
      what = ", ".join(bad) or "--config.* overrides"
      raise cli.UserError(f"--export serves the artifact as exported; {what} cannot "
                          "change it")
  if args.workdir and not os.path.isdir(args.workdir):
    raise cli.UserError(f"--workdir={args.workdir}: no such directory")
  if args.init == "random" and not args.config:
    raise cli.UserError("--init=random needs --config (e.g. configs/tiny.py)")
  if not 0 <= args.port <= 65535:
    raise cli.UserError(f"--port={args.port}: expected 0..65535")
  if args.codec_rows is None:
    args.codec_rows = 1
  if args.codec_rows < 0:
    raise cli.UserError(f"--codec_rows={args.codec_rows}: must be >= 0 (0 = the codec "
                        "runs on every slot)")
  args.turn_rows = parse_turn_rows(args.turn_rows)
  args.lanes = parse_lanes(args.lanes, args.max_sessions)
  if args.max_sessions < 1:
    raise cli.UserError(f"--max_sessions={args.max_sessions}: must be >= 1")
  if not args.idle_timeout_s > 0:
    raise cli.UserError(f"--idle_timeout_s={args.idle_timeout_s}: must be > 0")
  if args.static_dir and not os.path.isdir(args.static_dir):
    raise cli.UserError(f"--static_dir={args.static_dir}: no such directory")


def parse_turn_rows(text: str) -> tuple[int, ...] | str:
  """`--turn_rows=8,4` -> (8, 4), `auto` -> "auto", `none` -> (); a clear error for
  anything else."""
  if text in ("auto", "none"):
    return "auto" if text == "auto" else ()
  try:
    sizes = tuple(int(x) for x in str(text).split(",") if x.strip())
  except ValueError:
    sizes = (0,)
  if any(k < 1 for k in sizes):
    raise cli.UserError(f"--turn_rows={text}: expected 'auto', 'none' or comma-separated "
                        "integers >= 1 (e.g. 8,4)")
  return sizes


def auto_lanes(max_sessions: int, backend: str, cores: int) -> int:
  """Lanes for `--lanes=auto`: 1 on an accelerator (one device steps one batch); on CPU
  the largest divisor of `max_sessions` that is at most 2 per core and leaves every lane
  at least 4 slots, else 1. Measured on 2 cores with 16 and 8 trained sessions
  (`benchmarks/serve_load.py`, issue #15): 16 sessions p99 ~1.1 s with 2 lanes, 996 ms
  with 4, 2.0 s with 8 (auto: 4); 8 sessions 542 ms with 2 lanes (auto: 2)."""
  if backend != "cpu":
    return 1
  fits = [l for l in range(1, max(1, 2 * int(cores)) + 1)
          if max_sessions % l == 0 and max_sessions // l >= 4]
  return max(fits, default=1)


def parse_lanes(text, max_sessions: int) -> int:
  """`--lanes=4` -> 4; `auto` -> `auto_lanes` for this machine's backend and cores (the
  ServerConfig check then names a lane count that does not divide --max_sessions)."""
  if str(text) == "auto":
    import jax  # pylint: disable=g-import-not-at-top  (jax, not flax: still before the model)
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1)
    return auto_lanes(int(max_sessions), jax.default_backend(), cores)
  try:
    return int(text)
  except ValueError:
    raise cli.UserError(f"--lanes={text}: expected 'auto' or an integer >= 1") from None


def build_decoder(*, config: str | None = None, overrides=(), workdir: str | None = None,
                  init: str = "trained", seed: int = 0, stage: str | None = None,
                  tokenizer_path: str | None = None, temperature: float = 0.0,
                  top_p: float = 1.0, max_turn_tokens: int | None = None,
                  turns: str = "auto", allow_src: bool | None = None,
                  codec_rows: int = 0, turn_rows=()):
  """The in-process streaming decoder and tokenizer of a run (as `translate` builds
  them): -> (decoder, tokenizer or None, cfg)."""
  cfg, _ = cli.load_run_config(config, workdir, overrides)
  # pylint: disable=g-import-not-at-top
  from liveinterp.inference import loading
  # pylint: enable=g-import-not-at-top
  tokenizer = loading.load_tokenizer(tokenizer_path, cfg, workdir)
  decoder = loading.run_decoder(
      cfg, tokenizer, workdir=workdir, init=init, seed=seed, stage=stage,
      temperature=temperature, top_p=top_p, max_turn_tokens=max_turn_tokens, turns=turns,
      allow_src=allow_src, codec_rows=codec_rows, turn_rows=turn_rows)
  return decoder, tokenizer, cfg


def main(argv=None, on_ready=None):
  """Runs the CLI until interrupted. `on_ready(running_url)` is called once listening."""
  overrides, args = cli.parse_args(_parser(), argv)
  _check_args(args, overrides)
  from liveinterp.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  # settings checked before the (slow) decoder is built
  config = server_lib.ServerConfig(
      host=args.host, port=args.port, max_sessions=args.max_sessions,
      idle_timeout_s=args.idle_timeout_s, max_frame_bytes=args.max_frame_bytes,
      max_buffer_s=args.max_buffer_s, seed=args.seed,
      lanes=args.lanes,
      **({} if args.batch_wait_ms is None else {"batch_wait_ms": args.batch_wait_ms}),
      static_dir=args.static_dir or server_lib.STATIC_DIR)
  try:
    config.check()
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  if args.export:
    try:
      from liveinterp.serving import loader  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise cli.UserError(f"--export needs liveinterp.serving.loader, which cannot be "
                          f"imported here ({e}); use --workdir") from None
    decoder = loader.load_export(args.export)
    tokenizer = getattr(decoder, "tokenizer", None)
  else:
    decoder, tokenizer, _ = build_decoder(
        config=args.config, overrides=overrides, workdir=args.workdir, init=args.init,
        seed=args.seed, stage=args.stage, tokenizer_path=args.tokenizer,
        temperature=args.temperature, top_p=args.top_p,
        max_turn_tokens=args.max_turn_tokens, turns=args.turns, allow_src=args.allow_src,
        codec_rows=args.codec_rows, turn_rows=args.turn_rows)
  srv = server_lib.StreamServer(decoder, tokenizer=tokenizer, config=config)
  sys.stderr.write(f"[serve] compiling the decoder step for {srv.lane_batch} session "
                   f"slot(s) x {srv.lanes} lane(s)...\n")
  sys.stderr.flush()

  def ready(port):
    print(f"[serve] listening: websocket ws://{args.host}:{port}{server_lib.WS_PATH}, "
          f"page http://{args.host}:{port}/ (warm-up {srv.warmup_s:.1f} s; Ctrl-C stops)",
          flush=True)
    if on_ready is not None:
      on_ready(f"ws://{args.host}:{port}{server_lib.WS_PATH}")

  try:
    asyncio.run(srv.run_forever(on_ready=ready))
  except OSError as e:  # the port is taken, the host cannot be bound
    raise cli.UserError(f"cannot listen on {args.host}:{args.port}: {cli.one_line(e)}") \
        from None
  except KeyboardInterrupt:
    print("[serve] stopped", flush=True)


if __name__ == "__main__":
  cli.call(main, sys.argv[1:], prog="python -m liveinterp.serve",
           verbose="--verbose" in sys.argv[1:])
