"""One owner of the token-id layout (issue #11): `liveinterp.common.token_layout`.

The tokenizer, the config and the decoder's codec read-out agree on every id range, on a
real tokenizer (trained on the micro build) and on a small hand-made layout.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines import tokenizer as tok_lib
from liveinterp.common import token_layout
from liveinterp.common.config import NUM_SPECIAL_TOKENS
from liveinterp.common.token_layout import TokenLayout
from tests.unit.data.test_formats_fixtures import micro_config, micro_tokenizer


@pytest.fixture(scope="module")
def tok():
  return micro_tokenizer()


def test_tokenizer_ids_and_layout_agree(tok):
  cfg = micro_config()
  lay = TokenLayout.from_tokenizer(tok)
  assert lay is tok.layout
  # Config layout: same ranges, every reserved text id usable; the tokenizer's own has
  # only the pieces sentencepiece learned.
  full = TokenLayout.from_config(cfg)
  assert (full.vocab_size, full.text_offset, full.speech_offset, full.num_codebooks,
          full.codebook_size) == (lay.vocab_size, lay.text_offset, lay.speech_offset,
                                  lay.num_codebooks, lay.codebook_size)
  assert full.num_text == cfg.tokenizer.text_vocab_size >= lay.num_text == tok.num_pieces
  assert lay.text_offset == NUM_SPECIAL_TOKENS
  assert lay.speech_offset == NUM_SPECIAL_TOKENS + cfg.tokenizer.text_vocab_size
  assert lay.speech_end == tok.used_vocab_size <= tok.vocab_size == lay.vocab_size

  # Control ids: the tokenizer's names sit at the layout's ids.
  for i, name in ((token_layout.PAD, "<pad>"), (token_layout.BOS, "<bos>"),
                  (token_layout.EOT, "<eot>"), (token_layout.TEXT, "<text>"),
                  (token_layout.SPEECH, "<speech>"), (token_layout.SRC, "<src>"),
                  (token_layout.AUDIO, "<audio>")):
    assert tok.id_of(name) == i

  # Every text id the tokenizer produces is a C_WORD of the layout, and back.
  cls = lay.id_classes()
  ids = np.asarray(tok.encode_text("the quick brown fox jumps over the lazy dog 你好"))
  assert ids.size and np.all(cls[ids] == token_layout.C_WORD)
  assert np.array_equal(tok.is_text(np.arange(lay.vocab_size)), cls == token_layout.C_WORD)
  assert cls[token_layout.EOT] == token_layout.C_EOT

  # Speech: the tokenizer's ids are the layout's, in both directions, for every code.
  k, c = lay.num_codebooks, lay.codebook_size
  codes = (np.arange(c)[:, None] * 7 + np.arange(k)[None, :] * 3) % c     # [c, k]
  sid = tok.speech_ids(codes)
  assert np.all(cls[sid] == token_layout.C_SPEECH)
  assert np.array_equal(lay.id_codebooks()[sid], np.tile(np.arange(k), c))
  for kk in range(k):
    for cc in (0, 1, c - 1):
      i = tok.speech_token_id(kk, cc)
      assert i == lay.speech_id(kk, cc) and tok.speech_code(i) == (kk, cc)
  np.testing.assert_array_equal(tok.speech_codes(sid), codes)
  # The decoder's read-out (jax, inside the jitted codec step) gives the same codes.
  np.testing.assert_array_equal(np.asarray(lay.frame_codes(jnp.asarray(sid)[None], jnp))[0],
                                codes)
  np.testing.assert_array_equal(lay.frame_codes(sid), codes)
  assert np.array_equal(tok.is_speech(np.arange(lay.vocab_size)), cls == token_layout.C_SPEECH)


def test_small_layout_by_hand():
  lay = TokenLayout.create(text_vocab_size=10, num_codebooks=2, codebook_size=4,
                           vocab_size=60, num_text=7)
  assert (lay.text_offset, lay.speech_offset, lay.speech_end) == (32, 42, 50)
  assert lay.speech_id(1, 3) == 42 + 4 + 3 and lay.speech_code(49) == (1, 3)
  # Frame-major ids of 2 frames; padding (0) and out-of-range ids clip into the codebook.
  ids = np.asarray([42 + 1, 46 + 2, 42 + 3, 46 + 0, 0, 0])
  np.testing.assert_array_equal(lay.frame_codes(ids), [[1, 2], [3, 0], [0, 0]])
  cls = lay.id_classes()
  assert list(np.flatnonzero(cls == token_layout.C_WORD)) == list(range(32, 39))
  assert list(np.flatnonzero(cls == token_layout.C_SPEECH)) == list(range(42, 50))
  with pytest.raises(ValueError, match="not a multiple of num_codebooks=2"):
    lay.frame_codes(np.zeros(3, np.int64))
  with pytest.raises(ValueError, match="llm.vocab_size=45"):
    TokenLayout.create(text_vocab_size=10, num_codebooks=2, codebook_size=4, vocab_size=45)
  with pytest.raises(tok_lib.TokenizerError, match="llm.vocab_size"):
    tok_lib.check_fits(10, 2, 4, 45)
