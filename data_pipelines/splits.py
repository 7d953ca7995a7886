"""Deterministic train/dev/test split by a hash of the normalised source sentence.

The split of a pair depends only on its source sentence (after `normalize_key`), never on
the rest of the corpus or on the order of reading, so:
- the same source sentence (with any of its translations, any punctuation or case) is in
  exactly one split;
- growing the corpus (micro → tiny → full) never moves a sentence to another split.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence, TypeVar

from data_pipelines.text_cleaning import normalize_key

SPLITS = ("train", "dev", "test")
SALT = "liveinterp-split-v1"
T = TypeVar("T")


def hash_unit(text: str, salt: str = SALT) -> float:
  """Uniform number in [0, 1) from sha256(salt + normalize_key(text))."""
  digest = hashlib.sha256((salt + "\0" + normalize_key(text)).encode("utf-8")).digest()
  return int.from_bytes(digest[:8], "big") / 2.0**64


def split_of(text: str, dev_fraction: float = 0.02, test_fraction: float = 0.02,
             salt: str = SALT) -> str:
  """The split ("train", "dev" or "test") of a source sentence."""
  if dev_fraction < 0 or test_fraction < 0 or dev_fraction + test_fraction >= 1:
    raise ValueError(f"bad split fractions dev={dev_fraction} test={test_fraction}: "
                     "need non-negative values summing below 1")
  u = hash_unit(text, salt)
  if u < test_fraction:
    return "test"
  if u < test_fraction + dev_fraction:
    return "dev"
  return "train"


def assign_splits(items: Iterable[T], key: Callable[[T], str],
                  dev_fraction: float = 0.02, test_fraction: float = 0.02,
                  salt: str = SALT) -> dict[str, list[T]]:
  """Groups `items` by the split of `key(item)` (the source sentence), keeping order."""
  out: dict[str, list[T]] = {s: [] for s in SPLITS}
  for item in items:
    out[split_of(key(item), dev_fraction, test_fraction, salt)].append(item)
  return out


def hash_order(items: Sequence[T], key: Callable[[T], str], salt: str = SALT) -> list[T]:
  """`items` sorted by a second, independent hash of `key(item)`: a deterministic
  shuffle used to pick subsets (e.g. the first N for a smaller corpus size)."""
  return sorted(items, key=lambda it: (hash_unit(key(it), salt + "-order"), key(it)))
