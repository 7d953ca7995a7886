"""A micro rollout shared by the RL tests (built once per worker).

Micro config, micro tokenizer, random weights (seed 2: the decoder both writes and
waits), temperature-1 sampling under the turn grammar, three micro train records.
"""

import jax
import pytest

from liveinterp.inference import decoder as decoder_lib, session as session_lib, loading
from liveinterp.rl import rollout

TURN_TOKENS = 24


@pytest.fixture(scope="session")
def micro_rollout():
  """(cfg, tok, model, decoder, rollout spec, records, Rollout)."""
  from tests.unit.data.test_formats_fixtures import micro_config, micro_source, micro_tokenizer
  cfg = micro_config("rl1")
  tok = micro_tokenizer()
  model, codec, speaker = loading.build_models(cfg, seed=2)
  decoder = decoder_lib.StreamingDecoder(
      model, codec, speaker, tok, cfg, temperature=1.0, max_turn_tokens=TURN_TOKENS,
      decode_speech=False, speech_turns=True)
  rs = rollout.RolloutSpec.from_config(cfg)
  src = micro_source("train")
  recs = [src[i] for i in range(len(src)) if rollout.fits(src[i], rs)][:4]
  assert len(recs) == 4
  ro = rollout.collect(decoder, recs, rs, jax.random.key(3), session_lib.Detokenizer(tok))
  return cfg, tok, model, decoder, rs, recs, ro
