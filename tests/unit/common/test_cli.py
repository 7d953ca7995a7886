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
