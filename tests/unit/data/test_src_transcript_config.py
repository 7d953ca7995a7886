"""`data.src_transcript` (issue #10) reaches the SFT training batches and the build's
length statistics, and is validated.

Micro build records and tokenizer (tests/unit/data/test_formats_fixtures.py); the SFT
batches come from the stage's own dataset function (`stream_lm._dataset`).
"""

import numpy as np
import pytest

from data_pipelines import build, stream_format as sfmt
from data_pipelines import pipelines as pl
from data_pipelines import tokenizer as tokmod
from liveinterp.common import config as config_lib
from liveinterp.train.stages import stream_lm
from tests.unit.data import test_formats_fixtures as fx


@pytest.fixture(scope="module")
def env():
  return fx.micro_source("train"), fx.micro_tokenizer()


def _cfg(on: bool):
  c = fx.micro_config("sft")
  c.data.src_transcript = on
  c.train.batch_size = 4
  return c


def _first_batch(env, on: bool):
  src, tok = env
  ds = stream_lm._dataset(_cfg(on), "sft", src, tok, None, shard=pl.shard_options(0, 1),
                          shuffle=False, num_epochs=1)
  return next(iter(ds))


def test_sft_batches_have_source_transcript_turns_only_when_on(env):
  _, tok = env
  off, on = _first_batch(env, False), _first_batch(env, True)
  assert not np.any(off["tokens"] == tokmod.SRC)
  src_at = on["tokens"] == tokmod.SRC
  assert src_at.sum() >= 4                     # each stream hears words, turn by turn
  # The transcript is trained (the model writes it), and each `<src>` opens a turn of
  # source words: `<src>` is followed by text ids, then `<eot>` or `<text>`.
  assert np.all(on["loss_mask"][src_at] > 0)
  layout = tok.layout
  for row, mask in zip(on["tokens"], src_at):
    for i in np.nonzero(mask)[0]:
      j = i + 1
      assert layout.is_text(row[j]), row[i:i + 6]
      while layout.is_text(row[j]):
        j += 1
      assert row[j] in (tokmod.EOT, tokmod.TEXT), row[i:j + 1]
  # Same records, same audio: only the turns differ.
  np.testing.assert_array_equal(on["audio"], off["audio"])


def test_spec_and_length_stats_follow_the_config(env):
  src, tok = env
  assert sfmt.StreamSpec.from_config(_cfg(True)).src_transcript is True
  assert sfmt.StreamSpec.from_config(_cfg(False)).src_transcript is False
  records = [src[i] for i in range(4)]
  off = build.compute_length_stats(records, tok, _cfg(False))["sft"]["simul"]
  on = build.compute_length_stats(records, tok, _cfg(True))["sft"]["simul"]
  for v in ("with_speech", "without_speech"):
    # `<src> w+` makes streams and turns longer: the turn budget must cover it.
    assert on[v]["turn_len"]["max"] > off[v]["turn_len"]["max"]
    assert on[v]["stream_len"]["max"] > off[v]["stream_len"]["max"]


def test_src_transcript_is_validated():
  c = fx.micro_config("sft")
  config_lib.validate(c)
  assert c.data.src_transcript is False                  # off by default
  c = config_lib.load("configs/micro.py", ["data.src_transcript=True"])
  assert c.data.src_transcript is True
  with pytest.raises(config_lib.ConfigError, match="data.src_transcript"):
    config_lib.load("configs/micro.py", ["data.src_transcript=maybe"])
  d = fx.micro_config("sft").to_dict()
  d["data"]["src_transcript"] = "yes"
  import ml_collections
  with pytest.raises(config_lib.ConfigError, match="data.src_transcript='yes'"):
    config_lib.validate(ml_collections.ConfigDict(d))
