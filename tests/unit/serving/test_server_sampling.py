"""Sampling sessions of the websocket server are reproducible (issue #15): each session
draws from its own key, `fold_in(key(server seed), session seed)`, so its tokens are the
same whether it runs alone or next to other sessions, in whichever slot; for the
in-process decoder and for its export (format 2: one key per row in the exported
state)."""

import asyncio
import json

import numpy as np
import pytest

from liveinterp import client, export as export_lib
from liveinterp.serving import loader, protocol, server as server_lib
from tests.unit.serving.conftest import micro_decoder
from tests.unit.serving.test_server import _audio

SLOTS = 3


@pytest.fixture(scope="module")
def sampling_decoder(serving_cfg, serving_models):
  return micro_decoder(serving_cfg, serving_models, temperature=1.0)


@pytest.fixture(scope="module", params=["in_process", "exported"])
def decoder(request, sampling_decoder, tmp_path_factory):
  """The sampling decoder, or its export (temperature 1) loaded back."""
  if request.param == "in_process":
    return sampling_decoder
  out = str(tmp_path_factory.mktemp("sampling_export"))
  export_lib.export_decoder(sampling_decoder, out)
  return loader.load_export(out)


def test_session_seed_alone_equals_next_to_other_sessions(decoder):
  wav, other1, other2 = _audio(2.3, 1), _audio(4.1, 2), _audio(3.1, 3)
  srv = server_lib.StreamServer(decoder, config=server_lib.ServerConfig(
      port=0, max_sessions=SLOTS, idle_timeout_s=30, seed=11))
  with srv.start_in_thread() as running:
    go = lambda w, seed: client.stream(  # noqa: E731
        running.url, w, 16000, speed=0, fmt="float32", seed=seed)
    alone = asyncio.run(go(wav, 7))                                 # slot 0, alone

    async def crowded():
      # Two other sessions (one without a seed) start first and stream with the seeded
      # one, which gets another slot.
      a = asyncio.create_task(go(other1, 8))
      b = asyncio.create_task(go(other2, None))
      await asyncio.sleep(0)
      return await go(wav, 7), await a, await b
    before = dict(running.server.stats()["counts"])
    crowd, _, _ = asyncio.run(crowded())
    after = running.server.stats()["counts"]
    # Side by side: the steps of this phase read more chunks than there were steps.
    assert after["chunks"] - before["chunks"] > after["steps"] - before["steps"]
    again = asyncio.run(go(wav, 7))                                 # later steps, same seed
    other_seed = asyncio.run(go(wav, 8))
  assert alone.turns, "the sampling decoder should write turns"
  for res in (crowd, again):
    assert res.text == alone.text
    assert [t["text"] for t in res.turns] == [t["text"] for t in alone.turns]
    np.testing.assert_allclose(res.audio, alone.audio, rtol=0, atol=1e-6)
  # The seed is what the draws depend on: another seed, another translation.
  assert [t["text"] for t in other_seed.turns] != [t["text"] for t in alone.turns]


def test_start_seed_is_validated():
  msg = lambda seed: protocol.start(16000, "float32", seed=seed)  # noqa: E731
  assert protocol.parse_start(msg(5), 16000)["seed"] == 5
  assert protocol.parse_start(protocol.start(16000), 16000)["seed"] is None
  for bad in (-1, protocol.MAX_SEED, 1.5, True, "3"):
    obj = protocol.start(16000).replace("}", f', "seed": {json.dumps(bad)}}}')
    with pytest.raises(protocol.ProtocolError, match="start.seed") as e:
      protocol.parse_start(obj, 16000)
    assert e.value.code == "bad_start"

