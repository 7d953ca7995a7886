"""Shared micro models and decoder for the inference tests (built once per session).

Weights are random, built by `loading.random_model` with its default numpy fill
(`init="fill"`): compiling the layers' own initializers (`init="real"`) costs 15-20x
more CPU, and the seed below is picked for the fill's weights.
"""

import pytest

from configs import micro
from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib, loading

# Decode budget of the shared decoder: small, so streams stay short.
TURN_TOKENS = 16


@pytest.fixture(scope="session")
def cfg():
  return micro.get_config()


@pytest.fixture(scope="session")
def models(cfg):
  # Seed 2: with these random weights the greedy decoder both writes (16-token turns) and
  # waits on the test audio, so the self-consistency tests check real turns (seed 0
  # only ever waits since the adapter output is normalised).
  return loading.build_models(cfg, seed=2)


@pytest.fixture(scope="session")
def decoder(cfg, models):
  """Greedy, grammar-masked, returns logits; speaker window = one chunk; the codec
  decodes blocks of 4 frames, then frame by frame (both paths, one small program)."""
  model, codec, speaker = models
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg, temperature=0.0,
      grammar=True, max_turn_tokens=TURN_TOKENS, speaker_window_ms=cfg.stream.chunk_ms,
      return_logits=True, codec_blocks=(4,))
