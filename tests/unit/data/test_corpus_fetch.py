"""apt download helper: offline switch gives a clear error; the cache skips apt."""

import os

import pytest

from data_pipelines import fetch


def test_offline_raises_clear_error(tmp_path, monkeypatch):
  monkeypatch.setenv(fetch.OFFLINE_ENV, "1")
  ok, why = fetch.apt_available()
  assert not ok and fetch.OFFLINE_ENV in why
  with pytest.raises(fetch.FetchError, match="trans-de-en.*apt unavailable"):
    fetch.fetch_packages(["trans-de-en"], str(tmp_path))


def test_cached_packages_need_no_apt(tmp_path, monkeypatch):
  monkeypatch.setenv(fetch.OFFLINE_ENV, "1")
  debs = tmp_path / "debs"
  debs.mkdir()
  (debs / "trans-de-en.done").write_text("trans-de-en\n")
  root = fetch.fetch_packages(["trans-de-en"], str(tmp_path))
  assert root == fetch.package_root(str(tmp_path)) and os.path.isdir(root)


def test_failed_command_names_it(tmp_path):
  with pytest.raises(fetch.FetchError, match="no-such-tool-xyz"):
    fetch._run(["no-such-tool-xyz", "--version"], cwd=str(tmp_path), timeout_s=5)
  with pytest.raises(fetch.FetchError, match=r"exit 3"):
    fetch._run(["sh", "-c", "echo boom >&2; exit 3"], cwd=str(tmp_path), timeout_s=5)
