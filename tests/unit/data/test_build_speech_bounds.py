"""The build records target speech ms per text token of the SFT turns and the RL format
reward's bounds derived from them (`speech_ms_per_token`, micro build, real corpus)."""

import numpy as np
import pytest

from data_pipelines import build, stream_format as sfmt
from data_pipelines import tokenizer as tokmod
from tests.unit.data.test_build_length_stats import _records, micro  # noqa: F401 (fixture)


def _from_streams(recs, tok, cfg) -> list[float]:
  """Independently of `turn_speech_ms_per_token`: read each writing turn of the SFT stream
  `simul_example` builds back (speech ids / codebooks = codec frames; text ids between
  <text> and <speech>)."""
  spec = sfmt.StreamSpec.from_config(cfg, max_len=None, speech_placeholder="zeros")
  frame_ms = 1000.0 / spec.codec_rate_hz
  out = []
  for r in recs:
    ex = sfmt.simul_example(r, tok, spec, policy=cfg.data.policy, k=cfg.data.wait_k)
    for _, ids in sfmt.turns(ex):
      ids = list(ids)
      if tokmod.TEXT not in ids:
        continue
      n_text = ids.index(tokmod.SPEECH) - ids.index(tokmod.TEXT) - 1
      n_frames = int(np.sum(tok.is_speech(ids))) // spec.num_codebooks
      out.append(n_frames * frame_ms / n_text)
  return out


def test_speech_ms_per_token_recorded(micro):  # noqa: F811
  d, summary = micro
  ls = build.length_stats(d, "zh-en", "micro")
  s = ls["speech_ms_per_token"]
  assert s == summary["length_stats"]["speech_ms_per_token"]
  assert 0 < s["p1"] <= s["p50"] <= s["p99"]
  assert s["lo"] == pytest.approx(s["p1"] / 1.5) and s["hi"] == pytest.approx(s["p99"] * 1.5)
  assert build.speech_ms_per_token_bounds(ls) == (s["lo"], s["hi"])


def test_speech_ms_per_token_matches_the_sft_streams(micro):  # noqa: F811
  _, summary = micro
  cfg = build.model_config("micro")
  tok = tokmod.Tokenizer.load(summary["tokenizer"])
  recs = _records(summary)
  want = _from_streams(recs, tok, cfg)
  spec = sfmt.StreamSpec.from_config(cfg, max_len=None, speech_placeholder="zeros")
  got = [v for r in recs for v in build.turn_speech_ms_per_token(
      r, tok, spec, policy=cfg.data.policy, k=cfg.data.wait_k)]
  np.testing.assert_allclose(got, want)
  s = summary["length_stats"]["speech_ms_per_token"]
  assert s["n"] == len(want)
  for q in (1, 50, 99):
    assert s[f"p{q}"] == pytest.approx(np.percentile(want, q))


def test_no_bounds_without_target_speech_or_in_older_builds(micro):  # noqa: F811
  _, summary = micro
  cfg = build.model_config("micro")
  tok = tokmod.Tokenizer.load(summary["tokenizer"])
  recs = [dict(r, tgt_audio=np.zeros(0, np.int16)) for r in _records(summary)[:3]]
  stats = build.compute_length_stats(recs, tok, cfg)
  assert "speech_ms_per_token" not in stats
  assert build.speech_ms_per_token_bounds(stats) is None
  old = {k: v for k, v in summary["length_stats"].items() if k != "speech_ms_per_token"}
  assert build.speech_ms_per_token_bounds(old) is None
