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


def _fixture_deb(tmp_path, with_data: bool = False):
  """A real .deb (built with dpkg-deb) named fixture-data; skips without dpkg-deb."""
  import shutil
  import subprocess
  if not shutil.which("dpkg-deb"):
    pytest.skip("dpkg-deb not available")
  pkg = tmp_path / "pkgsrc"
  (pkg / "DEBIAN").mkdir(parents=True)
  if with_data:
    (pkg / "usr" / "share" / "fixture").mkdir(parents=True)
    (pkg / "usr" / "share" / "fixture" / "data.txt").write_text("hello\n")
  (pkg / "DEBIAN" / "control").write_text(
      "Package: fixture-data\nVersion: 1.0\nArchitecture: all\n"
      "Maintainer: t <t@example.invalid>\nDescription: test fixture\n")
  deb = tmp_path / "fixture-data_1.0_all.deb"
  subprocess.run(["dpkg-deb", "--build", str(pkg), str(deb)], check=True,
                 capture_output=True)
  return deb


def test_relative_cache_dir_with_a_real_deb(tmp_path, monkeypatch):
  """apt-get download runs in a temp dir: a relative cache dir must still work."""
  deb = _fixture_deb(tmp_path, with_data=True)
  bindir = tmp_path / "bin"
  bindir.mkdir()
  fake = bindir / "apt-get"
  fake.write_text(f"#!/bin/sh\ncp {deb} .\n")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
  monkeypatch.delenv(fetch.OFFLINE_ENV, raising=False)
  monkeypatch.chdir(tmp_path)
  root = fetch.fetch_packages(["fixture-data"], "relcache")
  assert open(os.path.join(root, "usr", "share", "fixture", "data.txt")).read() == "hello\n"


def test_missing_package_lists_trigger_one_apt_update(tmp_path, monkeypatch):
  """On a fresh machine `apt-get download` fails until `apt-get update` has run."""
  deb = _fixture_deb(tmp_path)
  state = tmp_path / "updated"
  bindir = tmp_path / "bin"
  bindir.mkdir()
  fake = bindir / "apt-get"
  fake.write_text(f"""#!/bin/sh
if [ "$1" = update ]; then touch {state}; exit 0; fi
[ -e {state} ] || {{ echo "E: Unable to locate package $2" >&2; exit 100; }}
cp {deb} .
""")
  fake.chmod(0o755)
  monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
  monkeypatch.delenv(fetch.OFFLINE_ENV, raising=False)
  fetch.fetch_packages(["fixture-data"], str(tmp_path / "cache"))
  assert state.exists()
