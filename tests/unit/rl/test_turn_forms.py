"""The decoder's turn grammar (what the RL format reward replays) accepts every turn the
training data produces, with and without the live source transcript (issue #10: before,
`<src> x+ <eot>` was rejected: 3 of 88 micro turns)."""

import numpy as np
import pytest

from data_pipelines import stream_format as sfmt
from liveinterp.common import token_layout
from liveinterp.inference import grammar
from liveinterp.rl import rollout


@pytest.mark.parametrize("src_transcript", [False, True])
def test_every_training_turn_parses_under_the_decoder_grammar(src_transcript):
  from tests.unit.data.test_formats_fixtures import micro_config, micro_source, micro_tokenizer
  cfg = micro_config("sft")
  tok = micro_tokenizer()
  spec = sfmt.StreamSpec.from_config(cfg, src_transcript=src_transcript,
                                     speech_placeholder="zeros", max_len=None)
  src = micro_source("train")
  turns = []
  for i in range(len(src)):
    try:
      ex = sfmt.simul_example(src[i], tok, spec)
    except sfmt.FormatError:
      continue
    for _, ids in sfmt.turns(ex):
      turns.append(np.asarray(ids, np.int32))
  budget = max(len(t) for t in turns)
  g = grammar.TurnGrammar(token_layout.TokenLayout.from_tokenizer(tok), budget,
                          allow_src=src_transcript)
  ok = rollout.turn_well_formed(g, turns)
  bad = [tok.token_of(int(t[0])) for t, k in zip(turns, ok) if not k]
  assert ok.all(), f"{len(bad)} of {len(turns)} turns rejected, e.g. starting {bad[:3]}"
  if src_transcript:   # the data really has source-transcript waits: `<src> x+ <eot>`
    assert any(t[0] == token_layout.SRC and token_layout.TEXT not in t for t in turns)
