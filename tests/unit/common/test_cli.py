"""The one place CLIs report user errors (issue #12): one line `prog: error: ...` and exit
code 2; tracebacks for bugs and with --verbose."""

import errno
import importlib
import os

import pytest

from liveinterp.common import cli, config as config_lib


@pytest.mark.parametrize("name", cli.USER_ERROR_NAMES)
def test_named_user_errors_exist_and_are_recognised(name):
  module, cls = name.rsplit(".", 1)
  error = getattr(importlib.import_module(module), cls)
  assert issubclass(error, Exception)
  assert cli.is_user_error(error.__new__(error))


@pytest.mark.parametrize("e,user", [
    (config_lib.ConfigError("x"), True), (cli.UserError("x"), True),
    (FileNotFoundError("x"), True), (PermissionError("x"), True),
    (IsADirectoryError("x"), True), (OSError(errno.ENOSPC, "No space left"), True),
    (OSError("something else"), False), (ValueError("a bug"), False),
    (KeyError("a bug"), False), (RuntimeError("a bug"), False)])
def test_is_user_error(e, user):
  assert cli.is_user_error(e) == user


def test_one_line():
  assert cli.one_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y")) \
      == "No such file or directory: /x/y"
  assert cli.one_line(FileNotFoundError("/x: no such audio file")) == "/x: no such audio file"
  nested = AttributeError(KeyError("'stepz'\nDid you mean \"steps\"?"))  # ml_collections
  assert cli.one_line(nested) == "'stepz' Did you mean \"steps\"?"
  assert cli.one_line(config_lib.ConfigError("a\n  b")) == "a b"


def _raise(e):
  raise e


def test_call_reports_user_errors_in_one_line_and_exits_2(capsys):
  assert cli.call(lambda a: a + 1, 1, prog="p") == 2  # the function's result otherwise
  with pytest.raises(SystemExit) as exit_:
    cli.call(_raise, config_lib.ConfigError("train.steps=0: must be positive"), prog="p")
  assert exit_.value.code == cli.EXIT_USAGE == 2
  assert capsys.readouterr().err == "p: error: train.steps=0: must be positive\n"
  with pytest.raises(SystemExit):  # extra types, e.g. data_pipelines.build.BuildError
    cli.call(_raise, LookupError("x"), prog="p", user_errors=(LookupError,))
  with pytest.raises(config_lib.ConfigError):  # --verbose: the traceback
    cli.call(_raise, config_lib.ConfigError("x"), prog="p", verbose=True)
  with pytest.raises(ValueError):  # a bug keeps its traceback
    cli.call(_raise, ValueError("x"), prog="p")


def test_argument_parser_errors_are_user_errors():
  p = cli.ArgumentParser(prog="p")
  p.add_argument("--out", required=True)
  with pytest.raises(cli.UserError, match=r"required: --out \(see --help\)"):
    p.parse_args([])


def test_writable_checks(tmp_path):
  f = tmp_path / "file"
  f.write_text("")
  cli.check_writable_file(str(tmp_path / "o.wav"), "--out")
  cli.check_writable_file(str(f), "--out")  # overwriting is fine
  cli.check_writable_file(str(tmp_path / "new" / "o.wav"), "--out")  # folder created later
  with pytest.raises(cli.UserError, match="--out=.*file/o.wav: .*file exists and is not a "
                                          "directory"):
    cli.check_writable_file(str(f / "o.wav"), "--out")
  with pytest.raises(cli.UserError, match="--out=.*file/a/o.wav: cannot be created, .*file "
                                          "is not a directory"):
    cli.check_writable_file(str(f / "a" / "o.wav"), "--out")
  with pytest.raises(cli.UserError, match="is a directory"):
    cli.check_writable_file(str(tmp_path), "--out")
  cli.check_writable_dir(str(tmp_path / "a" / "b"), "--workdir")  # created later
  assert not os.path.exists(tmp_path / "a")
  with pytest.raises(cli.UserError, match="exists and is not a directory"):
    cli.check_writable_dir(str(f), "--workdir")
  with pytest.raises(cli.UserError, match="cannot be created, .*file is not a directory"):
    cli.check_writable_dir(str(f / "run"), "--workdir")


def test_run_config_path(tmp_path):
  """--config wins; else the run directory's config.json; else one user error."""
  assert cli.run_config_path("configs/tiny.py:sft", str(tmp_path)) == "configs/tiny.py:sft"
  with pytest.raises(cli.UserError, match="no config.json in --workdir"):
    cli.run_config_path(None, str(tmp_path))
  with pytest.raises(cli.UserError, match="--config is required"):
    cli.run_config_path(None, None)
  (tmp_path / "config.json").write_text("{}")
  assert cli.run_config_path(None, str(tmp_path)) == str(tmp_path / "config.json")


def _options(parser, dests):
  return {a.dest: (tuple(a.option_strings), a.default, a.choices, a.type, a.help)
          for a in parser._actions if a.dest in dests}  # pylint: disable=protected-access


def test_decoding_entry_points_share_one_definition_of_their_flags():
  """translate, export and serve take the decoder's flags from `cli.add_decoding_args`
  (and translate and client their input/--out/--json from `cli.add_audio_io_args`):
  the same names, defaults, choices and help everywhere."""
  from liveinterp import client, export, serve, translate  # light: heavy imports are lazy
  ref = cli.ArgumentParser()
  cli.add_decoding_args(ref)
  dests = ("temperature", "top_p", "max_turn_tokens", "turns", "allow_src")
  want = _options(ref, dests)
  assert len(want) == len(dests)
  for mod in (translate, export, serve):
    assert _options(mod._parser(), dests) == want, mod.__name__  # pylint: disable=protected-access
  io = ("input", "out", "json")
  got = {m.__name__: _options(m._parser(), io) for m in (translate, client)}  # pylint: disable=protected-access
  for name, opts in got.items():
    assert set(opts) == set(io), name
    assert {k: v for k, v in opts.items() if k != "json"} == {
        k: v for k, v in got["liveinterp.translate"].items() if k != "json"}


def test_parse_args_and_load_run_config(tmp_path):
  p = cli.ArgumentParser()
  p.add_argument("--workdir")
  overrides, args = cli.parse_args(p, ["--workdir", "w", "--config.train.steps=77"])
  assert overrides == ["train.steps=77"] and args.workdir == "w"
  cfg, path = cli.load_run_config("configs/micro.py:sft", None, overrides)
  assert cfg.train.steps == 77 and path == "configs/micro.py:sft"
  with pytest.raises(config_lib.ConfigError, match="no_such"):
    cli.load_run_config("configs/micro.py:sft", None, ["data.no_such=1"])
