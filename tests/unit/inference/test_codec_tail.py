"""Rows of different speech lengths in one codec call (issue #14): `Codec.decode_step_rows`
advances each row over exactly its own frames, and the decoder's masked ragged tail
(`codec_tail="masked"`, the default) gives the audio and codec state of the frame-by-frame
path (`codec_tail="frames"`)."""

import jax
import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib

from tests.unit.inference.conftest import TURN_TOKENS


def test_decode_step_rows_matches_each_row_decoded_alone(models):
  _, codec, speaker = models
  rng = np.random.default_rng(0)
  b, t, q = 3, 6, codec.num_codebooks
  size = int(codec.quantizer.codebooks[0].codebook_size)
  spk = rng.standard_normal((b, speaker.embed_dim)).astype(np.float32)
  state = codec.init_decode_state(b)
  # Jitted (the weights are constants): eager dispatch of every conv costs minutes.
  rows_fn = jax.jit(codec.decode_step_rows)
  step_fn = jax.jit(codec.decode_step)
  # Two calls, so the second starts from the per-row states the first left.
  for n_b in ([6, 2, 0], [3, 6, 1]):
    codes = rng.integers(0, size, (b, t, q)).astype(np.int32)
    y, new = rows_fn(codes, spk, state, np.asarray(n_b, np.int32))
    assert y.shape == (b, t * codec.hop)
    for r, n in enumerate(n_b):
      row = jax.tree.map(lambda x, r=r: x[r:r + 1], state)
      if n:
        y_ref, row_ref = step_fn(codes[r:r + 1, :n], spk[r:r + 1], row)
        np.testing.assert_allclose(y[r, :n * codec.hop], y_ref[0], atol=1e-5, rtol=1e-5,
                                   err_msg=f"row {r} audio ({n} frames)")
      else:
        row_ref = row
      assert not np.any(np.asarray(y[r, n * codec.hop:])), f"row {r}: samples past its frames"
      jax.tree.map(lambda a, e, r=r: np.testing.assert_allclose(
          a[r:r + 1], e, atol=1e-5, rtol=1e-5, err_msg=f"row {r} state ({n} frames)"),
                   new, row_ref)
    state = new


def test_masked_tail_equals_frame_by_frame_tail(cfg, models):
  """... and the codec on the speaking rows only (`codec_rows=3` of 4 rows: one group
  with 3, 3 or 2 speaking rows, none with 0, and with 4 two groups, the second shifted
  back over two decoded rows) gives the same audio, codec state and speaker embeddings as
  on every row; a row that does not speak keeps its last embedding."""
  model, codec, speaker = models
  layout = token_layout.TokenLayout.from_config(cfg)
  kw = dict(max_turn_tokens=TURN_TOKENS, speaker_window_ms=cfg.stream.chunk_ms,
            codec_blocks=(4,), prompt_ids=())
  decs = {t: decoder_lib.StreamingDecoder(model, codec, speaker, layout, cfg,
                                          codec_tail=t, **kw) for t in ("masked", "frames")}
  decs["rows"] = decoder_lib.StreamingDecoder(model, codec, speaker, layout, cfg,
                                              codec_rows=3, **kw)
  dec = decs["masked"]
  rng = np.random.default_rng(1)
  b, q = 4, layout.num_codebooks

  def turn(n_frames):
    return ([token_layout.TEXT, layout.text_offset + 1, token_layout.SPEECH]
            + [layout.speech_offset + int(x)
               for x in rng.integers(0, layout.codebook_size, n_frames * q)]
            + [token_layout.EOT])
  # Per chunk, the rows' speech frame counts: common blocks, ragged ends, silent rows.
  plan = [[9, 2, 0, 5], [1, 12, 6, 0], [0, 0, 3, 7], [0, 0, 0, 0], [2, 5, 1, 4]]
  states = {t: d.init_stream(b, 0) for t, d in decs.items()}
  last_speaker = np.asarray(states["masked"].speaker)
  for c, counts in enumerate(plan):
    forced = np.zeros((b, TURN_TOKENS), np.int32)
    n = np.zeros((b,), np.int32)
    for r, k in enumerate(counts):
      ids = turn(k)
      forced[r, :len(ids)], n[r] = ids, len(ids)
    audio = (0.1 * rng.standard_normal((b, dec.chunk_samples))).astype(np.float32)
    outs = {}
    for t, d in decs.items():
      states[t], outs[t] = d.step(states[t], audio, forced_tokens_bm=forced,
                                  forced_len_b=n)
    m = jax.device_get(outs["masked"])
    np.testing.assert_array_equal(m.n_samples, np.asarray(counts) * codec.hop)
    assert (np.abs(m.audio).max() > 0) == any(counts)
    silent = np.asarray(counts) == 0
    np.testing.assert_array_equal(m.speaker[silent], last_speaker[silent])
    assert not np.any(np.all(m.speaker[~silent] == last_speaker[~silent], axis=-1)), c
    last_speaker = m.speaker
    for other in ("frames", "rows"):
      f = jax.device_get(outs[other])
      np.testing.assert_array_equal(m.n_samples, f.n_samples)
      np.testing.assert_allclose(m.audio, f.audio, atol=1e-5, rtol=1e-5,
                                 err_msg=f"{other}: chunk {c}")
      np.testing.assert_allclose(m.speaker, f.speaker, atol=1e-6, rtol=1e-6,
                                 err_msg=f"{other}: speaker chunk {c}")
      jax.tree.map(lambda a, e, other=other: np.testing.assert_allclose(
          a, e, atol=1e-5, rtol=1e-5, err_msg=f"{other}: codec state chunk {c}"),
                   states["masked"].codec, states[other].codec)


def test_codec_rows_must_be_a_non_negative_integer(cfg, models):
  layout = token_layout.TokenLayout.from_config(cfg)
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match=r"codec_rows=.*expected an integer >= 0"):
      decoder_lib.StreamingDecoder(*models, layout, cfg, prompt_ids=(), codec_rows=bad)
