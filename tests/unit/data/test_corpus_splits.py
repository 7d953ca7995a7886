"""Splits: deterministic, disjoint by normalised source sentence, order-independent."""

import random

import pytest

from data_pipelines import splits
from data_pipelines.sources import hsk


def test_split_disjoint_by_source_and_deterministic():
  pairs = list(hsk.read_pairs())[:1500]
  # add variants of existing sources (other punctuation/case, another translation)
  extra = [p._replace(src=p.src.rstrip("。！？") + "!", tgt="other " + p.tgt,
                      item_id=p.item_id + "-v") for p in pairs[:300]]
  items = pairs + extra
  a = splits.assign_splits(items, key=lambda p: p.src, dev_fraction=0.1, test_fraction=0.1)
  shuffled = items[:]
  random.Random(0).shuffle(shuffled)
  b = splits.assign_splits(shuffled, key=lambda p: p.src, dev_fraction=0.1,
                           test_fraction=0.1)
  for s in splits.SPLITS:
    assert sorted(a[s]) == sorted(b[s])  # independent of reading order
  keys = {s: {splits.normalize_key(p.src) for p in a[s]} for s in splits.SPLITS}
  assert not keys["train"] & keys["dev"]
  assert not keys["train"] & keys["test"]
  assert not keys["dev"] & keys["test"]
  n = len(items)
  assert 0.05 * n < len(a["dev"]) < 0.15 * n and 0.05 * n < len(a["test"]) < 0.15 * n
  assert sum(len(v) for v in a.values()) == n


def test_split_of_normalises_and_validates():
  assert splits.split_of("Hello, World!") == splits.split_of("hello world")
  assert splits.split_of("x", 0.0, 0.0) == "train"
  with pytest.raises(ValueError, match="fractions"):
    splits.split_of("x", 0.6, 0.5)


def test_hash_order_is_a_fixed_permutation():
  items = [f"sentence {i}" for i in range(50)]
  o1 = splits.hash_order(items, key=str)
  o2 = splits.hash_order(list(reversed(items)), key=str)
  assert o1 == o2 and sorted(o1) == sorted(items) and o1 != items
