"""Row compaction of the turn's token loop (`StreamingDecoder(turn_rows=...)`, issue #15):
once at most k rows are still writing, the loop goes on over k gathered rows. Every row's
tokens, log-probabilities, logits, values and state must be those of the uncompacted
loop, with one sampling key for the batch (the full batch's noise, these rows' kept) and
with one key per row (the server's sessions). Text-only decoding (`decode_speech=False`):
the codec runs after the loop on its tokens (compile time; `test_codec_tail` covers it)."""

import jax
import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import decode_step, decoder as decoder_lib

from tests.unit.inference.conftest import TURN_TOKENS

B = 6


def _forced(layout, rng, lengths):
  """Rows with a length write that many tokens (text, then speech, then `<eot>`); -1 rows
  sample."""
  forced = np.zeros((B, TURN_TOKENS), np.int32)
  for r, n in enumerate(lengths):
    if n > 0:
      ids = ([token_layout.TEXT, layout.text_offset + 1, token_layout.SPEECH]
             + [layout.speech_offset + int(x)
                for x in rng.integers(0, layout.codebook_size, TURN_TOKENS)])
      forced[r, :n] = ids[:n]
  return forced, np.asarray(lengths, np.int32)


@pytest.mark.parametrize("per_row_keys", [False, True])
def test_compacted_turn_loop_equals_the_full_batch_loop(cfg, models, per_row_keys):
  model, codec, speaker = models
  layout = token_layout.TokenLayout.from_config(cfg)
  kw = dict(temperature=1.0, max_turn_tokens=TURN_TOKENS,
            speaker_window_ms=cfg.stream.chunk_ms, codec_blocks=(4,), prompt_ids=(),
            return_logits=True, decode_speech=False)
  # "auto" here: B/2 = 3 rows, then 1; the per-row-key run uses explicit sizes (one
  # skipped: not < B).
  rows = (B, 4, 2) if per_row_keys else "auto"
  decs = {k: decoder_lib.StreamingDecoder(model, codec, speaker, layout, cfg,
                                          turn_rows=k, **kw) for k in ((), rows)}
  assert decoder_lib.StreamingDecoder(model, codec, speaker, layout, cfg,
                                      turn_rows=[2, 4, 4]).spec.turn_rows == (4, 2)
  assert decode_step.turn_sizes("auto", B) == (3, 1)
  assert decode_step.turn_sizes("auto", 16) == (8, 4, 2, 1)
  assert decode_step.turn_sizes((B, 4, 2), B) == (4, 2)  # B: skipped (not < B)
  rng = np.random.default_rng(3)
  key = jax.random.key(7)
  seed = jax.random.split(key, B) if per_row_keys else key
  states = {k: d.init_stream(B, seed) for k, d in decs.items()}
  # Per chunk: forced turn lengths (-1 = sampled) and which rows have a chunk; the long
  # forced rows keep the loop going after the others end, so the small phases run.
  plan = [([-1, TURN_TOKENS, 3, -1, 0, 8], [1, 1, 1, 1, 0, 1]),
          ([-1, -1, -1, -1, -1, -1], [1, 1, 1, 1, 1, 1]),
          ([2, 5, TURN_TOKENS, -1, 4, -1], [1, 1, 1, 0, 1, 1]),
          ([-1, 1, 1, 1, 1, TURN_TOKENS], [1, 1, 1, 1, 1, 1])]
  sampled_written = 0
  for c, (lengths, valid) in enumerate(plan):
    forced, n = _forced(layout, rng, lengths)
    audio = (0.1 * rng.standard_normal((B, decs[()].chunk_samples))).astype(np.float32)
    outs = {}
    for k, d in decs.items():
      states[k], outs[k] = d.step(states[k], audio, np.asarray(valid, bool),
                                  forced_tokens_bm=forced, forced_len_b=n)
    ref = outs[()]
    sampled_written += int(np.sum(np.asarray(ref.n_tokens)[np.asarray(lengths) < 0]))
    for k in decs:
      if not k:
        continue
      for name, a, e in zip(ref._fields, outs[k], ref):
        if e is None:
          continue
        if np.issubdtype(np.asarray(e).dtype, np.floating):
          np.testing.assert_allclose(a, e, atol=1e-5, rtol=1e-5,
                                     err_msg=f"chunk {c}, turn_rows={k}: {name}")
        else:
          np.testing.assert_array_equal(a, e, err_msg=f"chunk {c}, turn_rows={k}: {name}")
  for k in decs:
    jax.tree.map(lambda a, e: np.testing.assert_allclose(
        np.asarray(jax.random.key_data(a) if jax.dtypes.issubdtype(a.dtype,
                   jax.dtypes.prng_key) else a),
        np.asarray(jax.random.key_data(e) if jax.dtypes.issubdtype(e.dtype,
                   jax.dtypes.prng_key) else e), atol=1e-5, rtol=1e-5), states[k], states[()])
  assert sampled_written > 10  # the sampled rows did write (the noise path was used)


@pytest.mark.parametrize("bad", [0, -2, True, 2.5, (4, 0), "8", "half"])
def test_turn_rows_must_be_positive_integers(cfg, models, bad):
  model, codec, speaker = models
  layout = token_layout.TokenLayout.from_config(cfg)
  with pytest.raises(ValueError, match=r"turn_rows=.*expected 'auto' or integers >= 1"):
    decoder_lib.StreamingDecoder(model, codec, speaker, layout, cfg, prompt_ids=(),
                                 turn_rows=bad)
