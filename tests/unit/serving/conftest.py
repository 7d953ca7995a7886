"""Shared micro decoder for the serving tests (random weights, built once per session).

Generic fixtures: `serving_cfg` (the micro config), `serving_models` (seed 2: the greedy
decoder both writes and waits on test audio, see tests/unit/inference/conftest.py) and
`serving_decoder` (greedy, grammar-masked, 16-token turns, no logits). Tests that start
servers use one batch size (`SERVER_SLOTS`), so every server shares one compiled step.
"""

import pytest

from configs import micro
from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib, loading

TURN_TOKENS = 16
SERVER_SLOTS = 2


@pytest.fixture(scope="session")
def serving_cfg():
  return micro.get_config()


@pytest.fixture(scope="session")
def serving_models(serving_cfg):
  return loading.build_models(serving_cfg, seed=2)


def micro_decoder(cfg, models, temperature: float = 0.0):
  """The serving tests' decoder: grammar-masked, 16-token turns, no logits."""
  model, codec, speaker = models
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg,
      temperature=temperature, grammar=True, max_turn_tokens=TURN_TOKENS,
      speaker_window_ms=cfg.stream.chunk_ms, codec_blocks=(4,))


@pytest.fixture(scope="session")
def serving_decoder(serving_cfg, serving_models):
  return micro_decoder(serving_cfg, serving_models)
