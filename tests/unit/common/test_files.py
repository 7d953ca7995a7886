"""liveinterp/common/files.py: atomic writes leave the old file or the new one, never
half a file and never a stray temporary."""

import json
import os
import threading

import numpy as np
import pytest

from liveinterp.common import files


def test_write_atomic_text_bytes_and_json(tmp_path):
  p = str(tmp_path / "sub" / "a.json")
  assert files.write_json_atomic(p, {"é": 1}, indent=1, ensure_ascii=False,
                                 newline=True) == p
  assert open(p, encoding="utf-8").read() == '{\n "é": 1\n}\n'
  files.write_atomic(p, b"\x00\x01")
  assert open(p, "rb").read() == b"\x00\x01"
  assert os.listdir(tmp_path / "sub") == ["a.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
  p = str(tmp_path / "codes.npz")
  with files.replaced_on_success(p, ".npz") as tmp:
    assert tmp.endswith(".npz") and tmp != p
    np.savez(tmp, x=np.arange(3))
  with pytest.raises(RuntimeError, match="killed"):
    with files.replaced_on_success(p, ".npz") as tmp:
      np.savez(tmp, x=np.arange(5))
      raise RuntimeError("killed mid-write")
  np.testing.assert_array_equal(np.load(p)["x"], np.arange(3))
  assert os.listdir(tmp_path) == ["codes.npz"]


def test_concurrent_writers_in_threads_never_share_a_temporary(tmp_path):
  """Corpus builders write caches from threads: each write has its own temporary."""
  p = str(tmp_path / "cache.json")
  errors = []

  def write(i):
    try:
      for _ in range(20):
        files.write_json_atomic(p, {"writer": i, "pad": "x" * 5000})
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert not errors
  assert json.load(open(p))["writer"] in range(4)
  assert os.listdir(tmp_path) == ["cache.json"]
