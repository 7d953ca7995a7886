"""config.save / config.load(config.json) round-trip every config file's every stage
exactly (tuples included), so a run directory's config.json is the config that ran."""

import glob
import os

import pytest

from liveinterp.common import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
SIZES = sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
               if not os.path.basename(p).startswith("_")
               and os.path.basename(p) not in ("base.py",))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("stage", ["codec", "pretrain", "sft", "rl2"])
def test_saved_config_loads_back_equal(size, stage, tmp_path):
  c = config_lib.load(f"{size}:{stage}", check=False)
  path = config_lib.save(c, str(tmp_path / "config.json"))
  got = config_lib.load(path, check=False)
  assert got.to_dict() == c.to_dict()
  assert isinstance(got.codec.strides, tuple)


def test_saved_config_takes_overrides_of_tuple_fields(tmp_path):
  c = config_lib.load("micro:sft", ["train.learning_rate=0.0123"])
  path = config_lib.save(c, str(tmp_path / "run" / "config.json"))
  got = config_lib.load(path, ["codec.strides=(2, 2)"])
  assert got.train.learning_rate == 0.0123 and got.codec.strides == (2, 2)
  assert got.is_locked
