"""The token-id layout: the one place that says where each kind of id lives.

```
[0, NUM_SPECIAL_TOKENS)                  control ids (PAD, BOS, ... below; names in
                                         `data_pipelines.tokenizer.CONTROL_TOKENS`)
[text_offset, text_offset + num_text)    sentencepiece pieces: piece p -> text_offset + p
[speech_offset, speech_end)              codec tokens: codebook k, code c ->
                                         speech_offset + k * codebook_size + c
[speech_end, vocab_size)                 unused (padding of the embedding table)
```

with `text_offset = NUM_SPECIAL_TOKENS` and `speech_offset = text_offset +
text_vocab_size` (the reserved text range, fixed by the config, so the speech range never
moves when the text model is retrained; `num_text` <= `text_vocab_size` are the pieces
a trained sentencepiece model really has). `TokenLayout.create` is the only derivation of
these numbers: the tokenizer (`data_pipelines.tokenizer.Tokenizer.layout`), the decoder,
its grammar and the RL code all read them from a `TokenLayout`. Importable from
data_pipelines, inference and rl alike (numpy only; no models, no training code).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from liveinterp.common.config import NUM_SPECIAL_TOKENS

# Control ids (fixed forever: checkpoints and data depend on them).
PAD, BOS, EOS, TEXT, SPEECH, EOT, SRC, AUDIO = range(8)

# Classes of ids (one small int per id, a static table: `TokenLayout.id_classes`).
C_OTHER, C_EOT, C_TEXT_TAG, C_SPEECH_TAG, C_SRC_TAG, C_WORD, C_SPEECH = range(7)


@dataclasses.dataclass(frozen=True)
class TokenLayout:
  """Where each kind of id lives (module docstring); hashable, so usable as static jit
  data."""
  vocab_size: int
  text_offset: int
  num_text: int          # usable text ids: [text_offset, text_offset + num_text)
  speech_offset: int
  num_codebooks: int
  codebook_size: int

  def __post_init__(self):
    if self.speech_offset + self.num_codebooks * self.codebook_size > self.vocab_size:
      raise ValueError(f"token layout: speech ids end at "
                       f"{self.speech_offset + self.num_codebooks * self.codebook_size} "
                       f"> llm.vocab_size={self.vocab_size}")
    if self.num_text < 1 or self.num_codebooks < 1 or self.codebook_size < 1:
      raise ValueError(f"token layout needs text and speech ids: {self}")

  # ---- construction --------------------------------------------------------------------
  @classmethod
  def create(cls, *, text_vocab_size: int, num_codebooks: int, codebook_size: int,
             vocab_size: int, num_text: int | None = None) -> "TokenLayout":
    """The layout of `text_vocab_size` reserved text ids and `num_codebooks` x
    `codebook_size` speech ids in a `vocab_size` table; `num_text` (default: all
    reserved) text ids are usable."""
    text = int(text_vocab_size)
    return cls(vocab_size=int(vocab_size), text_offset=NUM_SPECIAL_TOKENS,
               num_text=text if num_text is None else int(num_text),
               speech_offset=NUM_SPECIAL_TOKENS + text, num_codebooks=int(num_codebooks),
               codebook_size=int(codebook_size))

  @classmethod
  def from_config(cls, cfg) -> "TokenLayout":
    """The layout implied by a config (every text id usable)."""
    return cls.create(text_vocab_size=cfg.tokenizer.text_vocab_size,
                      num_codebooks=cfg.codec.num_codebooks,
                      codebook_size=cfg.codec.codebook_size, vocab_size=cfg.llm.vocab_size)

  @classmethod
  def from_tokenizer(cls, tok) -> "TokenLayout":
    """The layout of a trained `data_pipelines.tokenizer.Tokenizer` (only the pieces it
    really has are text ids)."""
    return tok.layout

  # ---- ranges and classes --------------------------------------------------------------
  @property
  def speech_end(self) -> int:
    return self.speech_offset + self.num_codebooks * self.codebook_size

  def is_text(self, ids):
    a = np.asarray(ids)
    return (a >= self.text_offset) & (a < self.text_offset + self.num_text)

  def is_speech(self, ids):
    a = np.asarray(ids)
    return (a >= self.speech_offset) & (a < self.speech_end)

  def id_classes(self) -> np.ndarray:
    """`[V]` int32 class of every id (C_*)."""
    cls_v = np.full(self.vocab_size, C_OTHER, np.int32)
    cls_v[EOT], cls_v[TEXT], cls_v[SPEECH], cls_v[SRC] = (C_EOT, C_TEXT_TAG, C_SPEECH_TAG,
                                                          C_SRC_TAG)
    cls_v[self.text_offset:self.text_offset + self.num_text] = C_WORD
    cls_v[self.speech_offset:self.speech_end] = C_SPEECH
    return cls_v

  def id_codebooks(self) -> np.ndarray:
    """`[V]` int32 codebook of every speech id, -1 for other ids."""
    out = np.full(self.vocab_size, -1, np.int32)
    rel = np.arange(self.num_codebooks * self.codebook_size)
    out[self.speech_offset:self.speech_end] = rel // self.codebook_size
    return out

  # ---- speech id <-> (codebook, code) --------------------------------------------------
  def speech_id(self, codebook, code):
    """Id of `code` in `codebook` (ints or broadcasting arrays; no range checks)."""
    return self.speech_offset + codebook * self.codebook_size + code

  def speech_code(self, ids):
    """Inverse of `speech_id`: speech id(s) -> (codebook, code) (no range checks)."""
    rel = ids - self.speech_offset
    return rel // self.codebook_size, rel % self.codebook_size

  def frame_codes(self, speech_ids, xp=np):
    """Frame-major speech ids `[..., F * K]` (t0k0 t0k1 t1k0 ...) -> codes
    `[..., F, K]` int32, each id read in the codebook of its position and clipped into
    [0, codebook_size) (so padding decodes to a valid code). `xp`: numpy or jax.numpy
    (inside jitted code)."""
    k, c = self.num_codebooks, self.codebook_size
    n = speech_ids.shape[-1]
    if n % k:
      raise ValueError(f"{n} speech ids are not a multiple of num_codebooks={k}")
    pos_codebook = xp.arange(n) % k
    codes = xp.clip(speech_ids - self.speech_id(pos_codebook, 0), 0, c - 1)
    return codes.reshape(speech_ids.shape[:-1] + (n // k, k)).astype(xp.int32)


__all__ = ["TokenLayout", "PAD", "BOS", "EOS", "TEXT", "SPEECH", "EOT", "SRC", "AUDIO",
           "C_OTHER", "C_EOT", "C_TEXT_TAG", "C_SPEECH_TAG", "C_SRC_TAG", "C_WORD",
           "C_SPEECH", "NUM_SPECIAL_TOKENS"]
