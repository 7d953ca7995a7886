"""Fetch Debian packages as data: `apt-get download NAME` + `dpkg-deb -x` into a cache.

Nothing is installed: each package's files are extracted under one shared tree
`<cache_dir>/debs/root/` that mirrors `/` (e.g. `root/usr/share/trans/de-en`), which is
the layout the source readers expect. A package is fetched once; a marker file
`<cache_dir>/debs/<name>.done` records success.

When apt is unavailable (not Debian, no network, disabled with LIVEINTERP_OFFLINE=1),
`fetch_packages` raises `FetchError` with a message saying what failed and how to fix
it; the corpus builder catches it and falls back to the sources it has.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
from typing import Sequence

logger = logging.getLogger(__name__)
OFFLINE_ENV = "LIVEINTERP_OFFLINE"


class FetchError(RuntimeError):
  """A package could not be downloaded or extracted; the message names it."""


def apt_available() -> tuple[bool, str]:
  """(available, reason): whether `apt-get download` and `dpkg-deb` can be used."""
  if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
    return False, f"{OFFLINE_ENV} is set"
  for tool in ("apt-get", "dpkg-deb"):
    if shutil.which(tool) is None:
      return False, f"{tool} not found (not a Debian-based system)"
  return True, "ok"


def package_root(cache_dir: str) -> str:
  """The extracted tree (mirrors `/`) of all fetched packages."""
  return os.path.join(cache_dir, "debs", "root")


def _run(cmd: Sequence[str], cwd: str, timeout_s: float) -> None:
  try:
    proc = subprocess.run(list(cmd), cwd=cwd, capture_output=True, text=True,
                          timeout=timeout_s, check=False)
  except subprocess.TimeoutExpired as e:
    raise FetchError(f"`{' '.join(cmd)}` timed out after {timeout_s:.0f} s") from e
  except OSError as e:
    raise FetchError(f"`{' '.join(cmd)}` could not start: {e}") from e
  if proc.returncode != 0:
    err = (proc.stderr or proc.stdout).strip().splitlines()
    raise FetchError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): "
                     f"{' | '.join(err[-3:])}")


def fetch_packages(names: Sequence[str], cache_dir: str, timeout_s: float = 600.0) -> str:
  """Downloads and extracts the Debian packages `names` (cached); returns the root.

  Raises FetchError naming the first package that failed, with apt's message.
  """
  cache_dir = os.path.abspath(cache_dir)  # commands below run in another cwd
  debs = os.path.join(cache_dir, "debs")
  root = package_root(cache_dir)
  os.makedirs(root, exist_ok=True)
  todo = [n for n in names if not os.path.exists(os.path.join(debs, f"{n}.done"))]
  if not todo:
    return root
  ok, why = apt_available()
  if not ok:
    raise FetchError(f"cannot fetch {', '.join(todo)}: apt unavailable ({why}). Install "
                     f"them or extract their .deb files under {root}.")
  updated = False
  for name in todo:
    with tempfile.TemporaryDirectory(dir=debs, prefix=f"dl-{name}-") as tmp:
      logger.info("apt-get download %s", name)
      try:
        _run(["apt-get", "download", name], cwd=tmp, timeout_s=timeout_s)
      except FetchError:
        if updated:
          raise
        # A fresh machine has no package lists yet: refresh them once, then retry.
        logger.info("apt-get download %s failed; running apt-get update once", name)
        _run(["apt-get", "update", "-qq"], cwd=tmp, timeout_s=timeout_s)
        updated = True
        _run(["apt-get", "download", name], cwd=tmp, timeout_s=timeout_s)
      files = glob.glob(os.path.join(tmp, "*.deb"))
      if len(files) != 1:
        raise FetchError(f"apt-get download {name} produced {len(files)} .deb files")
      _run(["dpkg-deb", "-x", files[0], root], cwd=tmp, timeout_s=timeout_s)
    with open(os.path.join(debs, f"{name}.done"), "w", encoding="utf-8") as f:
      f.write(name + "\n")
  return root
