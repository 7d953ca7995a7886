"""How every command-line entry point reports a user error: one line, exit code 2.

A user error is a mistake the person at the command line can fix: a bad flag or config
value (`ConfigError`), a missing or unreadable input, an output that cannot be written,
bad input audio or corpus files. It is printed as one line on stderr,

    python -m liveinterp.train: error: train.batch_size=3 is not divisible by ...

and the process exits with EXIT_USAGE (2, as argparse does for bad arguments). Anything
else is a bug and keeps its traceback; `--verbose` shows the traceback of user errors too.
The other exit codes are the training loop's (liveinterp/train/loop.py): 3 diverged, 75
preempted.

    cli.run(main, prog="liveinterp.train")        # absl entry points, instead of app.run
    sys.exit(cli.call(main, argv, prog=..., verbose=...))   # argparse entry points

Config overrides: every entry point that loads a config takes ml_collections-style
`--config.a.b=v` flags (also `--config.a.b v`; a bare `--config.a.b` is `=true` and
`--noconfig.a.b` is `=false`, absl's bool spellings). They are taken out of the command
line before absl or argparse parse it (absl would reject them as unknown flags):
`split_config_overrides(argv)` for argparse entry points, `run(main, ...,
config_overrides=True)` for absl ones, which then read them with `config_overrides()`.
Both hand them as `"a.b=v"` strings to `liveinterp.common.config.load(spec, overrides)`,
the one place that parses and applies them (by each field's type, as config_flags
does), so a bad one is a ConfigError naming the field: one line, exit code 2. An entry
point that loads no config does not opt in, and absl rejects `--config.*` there as an
unknown flag (one line, exit code 2) instead of ignoring it.

The user-error types of modules that are slow to import (audio, tokenizer, corpus
sources) are named in USER_ERROR_NAMES instead of imported here; a test imports each.
"""

from __future__ import annotations

import argparse
import errno
import functools
import os
import re
import sys
from typing import Callable, Sequence

EXIT_USAGE = 2

# Exception classes (module.QualName) that are user errors wherever they are raised.
USER_ERROR_NAMES = (
    "liveinterp.common.config.ConfigError",
    "liveinterp.common.mesh.MeshConfigError",
    "liveinterp.inference.audio_io.AudioError",
    "liveinterp.common.checkpointing.CheckpointRestoreError",
    "data_pipelines.tokenizer.TokenizerError",
    "data_pipelines.sources.SourceFormatError",
    "absl.app.UsageError",
)
# OS errors that name a path the user gave (missing, not readable or writable, full).
_USER_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC,
                          errno.EDQUOT, errno.EISDIR, errno.ENOTDIR, errno.EEXIST})


class UserError(Exception):
  """A mistake in the command (flags, paths); the message says what and how to fix it."""


class ArgumentParser(argparse.ArgumentParser):
  """argparse with bad arguments reported like every other user error (one line)."""

  def error(self, message):
    raise UserError(f"{message} (see --help)")


def is_user_error(e: BaseException, extra: Sequence[type] = ()) -> bool:
  if isinstance(e, (UserError, FileNotFoundError, PermissionError, IsADirectoryError,
                    NotADirectoryError, *extra)):
    return True
  if isinstance(e, OSError) and e.errno in _USER_ERRNOS:
    return True
  names = {f"{c.__module__}.{c.__qualname__}" for c in type(e).__mro__}
  return any(n in names for n in USER_ERROR_NAMES)


def one_line(e: BaseException | str) -> str:
  """The message of `e` on one line (an OSError as 'strerror: filename')."""
  if isinstance(e, OSError) and e.strerror and e.filename:
    msg = f"{e.strerror}: {e.filename}"
  elif isinstance(e, BaseException):
    # absl/ml_collections wrap messages in other exceptions (AttributeError(KeyError(..)))
    while e.args and isinstance(e.args[0], BaseException):
      e = e.args[0]
    msg = str(e.args[0]) if len(e.args) == 1 and isinstance(e.args[0], str) else str(e)
  else:
    msg = str(e)
  return " ".join(msg.split()) or type(e).__name__


def report(prog: str, e: BaseException | str) -> int:
  """Prints `prog: error: <message>` on stderr; returns EXIT_USAGE."""
  sys.stdout.flush()
  sys.stderr.write(f"{prog}: error: {one_line(e)}\n")
  sys.stderr.flush()
  return EXIT_USAGE


def call(fn: Callable, *args, prog: str, verbose: bool = False,
         user_errors: Sequence[type] = ()):
  """`fn(*args)`; a user error (`is_user_error`) is reported in one line and exits with
  EXIT_USAGE, unless `verbose` (then it propagates with its traceback)."""
  try:
    return fn(*args)
  except Exception as e:  # pylint: disable=broad-except
    if verbose or not is_user_error(e, user_errors):
      raise
    sys.exit(report(prog, e))


_CONFIG_FLAG = re.compile(r"^--?(no)?config\.(.*)$")
_CONFIG_OVERRIDES: list[str] = []


def split_config_overrides(argv: Sequence[str]) -> tuple[list[str], list[str]]:
  """(the `--config.a.b=v` overrides of `argv` as `"a.b=v"` strings, in order; the other
  arguments). Arguments after a bare `--` are left alone."""
  overrides, rest = [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    if arg == "--":
      rest.extend(args[i:])
      break
    m = _CONFIG_FLAG.match(arg)
    if not m:
      rest.append(arg)
      i += 1
      continue
    negated, body = m.group(1), m.group(2)
    if "=" in body:
      if negated:
        raise UserError(f"{arg}: --noconfig.* takes no value")
      overrides.append(body)
    elif negated:
      overrides.append(f"{body}=false")
    elif i + 1 < len(args) and not args[i + 1].startswith("--"):
      overrides.append(f"{body}={args[i + 1]}")
      i += 1
    else:  # a bare --config.a.b: absl's spelling of a true bool
      overrides.append(f"{body}=true")
    i += 1
  return overrides, rest


def config_overrides() -> tuple[str, ...]:
  """The `--config.*` overrides `run(..., config_overrides=True)` took off the command
  line, as `"a.b=v"` strings for `config.load`."""
  return tuple(_CONFIG_OVERRIDES)


def run(main: Callable, *, prog: str, user_errors: Sequence[type] = (),
        config_overrides: bool = False):
  """`absl.app.run(main)` with user errors (and bad flags) as one line + exit code 2.

  Defines `--verbose` (tracebacks of user errors too). Flag parsing errors are user
  errors. With `config_overrides`, `--config.a.b=v` arguments are taken off the command
  line before absl parses it and handed to `main` through `config_overrides()` (main
  passes them to `config.load`); without it absl rejects them as unknown flags.
  """
  from absl import app, flags  # pylint: disable=g-import-not-at-top
  if "verbose" not in flags.FLAGS:
    flags.DEFINE_bool("verbose", False, "show the traceback of user errors (bad flags, "
                                        "config values, paths) too")

  def parse(argv):
    try:
      if config_overrides:
        overrides, argv = split_config_overrides(argv)
        _CONFIG_OVERRIDES[:] = overrides
      return flags.FLAGS(argv)
    except Exception as e:  # pylint: disable=broad-except
      # flags.Error (bad value, missing required flag), UserError (split_config_overrides),
      # or AttributeError/KeyError of an ml_collections config flag (none of ours: they
      # take --config.* through config.load, whose ConfigError main reports).
      if "--verbose" in argv:
        raise
      if isinstance(e, (flags.Error, UserError)):
        msg = one_line(e)
      elif isinstance(e, (AttributeError, KeyError)):
        msg = f"unknown config field in a --config.* override: {one_line(e)}"
      else:  # e.g. an error inside a config file's get_config()
        msg = (f"{type(e).__name__} while parsing the flags (loading --config?): "
               f"{one_line(e)} (--verbose shows the traceback)")
      sys.exit(report(prog, msg))

  @functools.wraps(main)
  def guarded(argv):
    return call(main, argv, prog=prog, verbose=flags.FLAGS.verbose, user_errors=user_errors)

  app.run(guarded, flags_parser=parse)


def run_config_path(config: str | None, workdir: str | None) -> str:
  """The config an entry point taking `--config` and/or `--workdir` runs with: `--config`
  when given, else the run directory's own `<workdir>/config.json` (the recipe and the
  train CLI write it); UserError when there is neither."""
  if config:
    return config
  candidate = os.path.join(workdir, "config.json") if workdir else None
  if candidate and os.path.exists(candidate):
    return candidate
  raise UserError("--config is required (no config.json in --workdir)")


def check_writable_file(path: str, what: str):
  """UserError unless a file can be written at `path` (named `what` in the message): it is
  not a folder or a read-only file, and its folder is writable or can be created."""
  if os.path.isdir(path):
    raise UserError(f"{what}={path}: is a directory, expected a file path")
  if os.path.exists(path) and not os.access(path, os.W_OK):
    raise UserError(f"{what}={path}: not writable")
  check_writable_dir(os.path.dirname(os.path.abspath(path)), what, shown=path)


def check_writable_dir(path: str, what: str, *, shown: str | None = None):
  """UserError unless `path` is (or can be created as) a writable folder; the message
  names `what`=`shown` (default `path`)."""
  shown = path if shown is None else shown
  p = os.path.abspath(path)
  if os.path.exists(p) and not os.path.isdir(p):
    raise UserError(f"{what}={shown}: {p} exists and is not a directory")
  probe = p
  while not os.path.exists(probe):
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise UserError(f"{what}={shown}: cannot be created, {probe} is not a directory")
  if not os.access(probe, os.W_OK):
    raise UserError(f"{what}={shown}: {probe} is not writable")


# ---- the argparse entry points that decode (translate, export, serve, client) -----------
def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None
               ) -> tuple[list[str], argparse.Namespace]:
  """(the `--config.a.b=v` overrides of `argv` (default: sys.argv[1:]), the rest parsed
  by `parser`)."""
  overrides, rest = split_config_overrides(sys.argv[1:] if argv is None else argv)
  return overrides, parser.parse_args(rest)


def load_run_config(config: str | None, workdir: str | None, overrides: Sequence[str]):
  """(the validated config of `--config` / `--workdir` with the `--config.a.b=v`
  overrides applied (ConfigError naming a bad field), its path (`run_config_path`))."""
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  path = run_config_path(config, workdir)
  cfg = config_lib.load(path, list(overrides))
  config_lib.validate(cfg)
  return cfg, path


def add_audio_io_args(p: argparse.ArgumentParser, json_what: str):
  """`input`, `--out` (the translated speech) and `--json` (`json_what` JSON)."""
  p.add_argument("input", help="source speech (any sample rate / channel count)")
  p.add_argument("--out", required=True, help="translated speech (wav)")
  p.add_argument("--json", default=None, help=f"{json_what} JSON (default: OUT with .json)")


def add_decoding_args(p, *, seed_help: str | None = None):
  """The streaming decoder's sampling and turn-grammar flags (an ArgumentParser or an
  argument group); `--seed` too when `seed_help` is given."""
  p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  p.add_argument("--top_p", type=float, default=1.0)
  if seed_help is not None:
    p.add_argument("--seed", type=int, default=0, help=seed_help)
  p.add_argument("--max_turn_tokens", type=int, default=None)
  p.add_argument("--turns", choices=("auto", "speech", "text"), default="auto",
                 help="turn grammar: speech (<text> w+ <speech> s+ <eot>) or text "
                      "(<text> w+ <eot>, a model trained without speech codes); auto: "
                      "text when the config's data.codes_path names no file (as "
                      "training decides), speech for --init=random")
  p.add_argument("--allow_src", action="store_true", default=None,
                 help="let turns start with a source transcript (<src> ...); default: "
                      "the config's data.src_transcript (what the model was trained on)")
