"""Atomic file writes: a reader (or a run killed mid-write) sees the old file or the new
one, never half of one. The one owner of the temp-file-and-rename pattern (configs,
metrics, reports, tokenizer, corpus caches, speech codes, exported parameters)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from typing import Iterator


@contextlib.contextmanager
def replaced_on_success(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path beside `path` (unique per call, so concurrent writers in
  threads or processes never share one; ending in `suffix`, e.g. ".npz" for `np.savez`;
  created with the default permissions, unlike `tempfile.mkstemp`'s 0600); when the block finishes it is renamed over `path`, when the
  block raises it is removed and `path` is left as it was."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
  try:
    yield tmp
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  os.replace(tmp, path)


def write_atomic(path: str, data: str | bytes) -> str:
  """Writes `data` (text as UTF-8, or bytes) to `path` atomically; returns `path`."""
  with replaced_on_success(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data.encode("utf-8") if isinstance(data, str) else data)
  return path


def write_json_atomic(path: str, payload, indent: int | None = None,
                      ensure_ascii: bool = True, newline: bool = False) -> str:
  """`payload` as JSON at `path`, atomically (`write_atomic`); returns `path`."""
  text = json.dumps(payload, indent=indent, ensure_ascii=ensure_ascii)
  return write_atomic(path, text + ("\n" if newline else ""))
