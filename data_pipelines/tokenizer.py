"""One tokenizer for text in every language and for codec speech tokens.

Id layout (fixed by the config, independent of what sentencepiece actually learned, so the
speech range never moves when the text model is retrained); its one owner is
`liveinterp.common.token_layout.TokenLayout` (`Tokenizer.layout`):

```
[0, 32)                                control tokens (CONTROL_TOKENS, NUM_SPECIAL_TOKENS)
[32, 32 + text_vocab_size)             sentencepiece pieces (piece p -> id 32 + p)
[speech_offset, speech_offset + K*C)   codec tokens: codebook k, code c -> speech_offset + k*C + c
[used_vocab_size, llm.vocab_size)      unused (padding of the embedding table)
```

with `speech_offset = 32 + text_vocab_size`, `K = codec.num_codebooks`, `C = codec.codebook_size`.
A sentencepiece model trained with `hard_vocab_limit=False` on a tiny corpus may hold fewer
pieces than `text_vocab_size`; the unused text ids are simply never produced.

Usage:
  tok = Tokenizer.train(texts, model_prefix, text_vocab_size=..., num_codebooks=...,
                        codebook_size=..., llm_vocab_size=...)
  tok = Tokenizer.load(model_prefix)          # reads PREFIX.model + PREFIX.json
  tok = Tokenizer.from_config(cfg, path)      # checks the layout against a config
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
from typing import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from liveinterp.common import files
from liveinterp.common.config import NUM_SPECIAL_TOKENS
from liveinterp.common.token_layout import (AUDIO, BOS, EOS, EOT, PAD, SPEECH, SRC, TEXT,
                                            TokenLayout)

# The control tokens, in id order. Append new ones by replacing a `<reserved_k>` entry:
# ids of existing tokens must never change.
_NAMED_CONTROL = (
    "<pad>",     # 0: padding (never predicted)
    "<bos>",     # 1: start of a sequence
    "<eos>",     # 2: end of a sequence
    "<text>",    # 3: start of the text part of a turn / output
    "<speech>",  # 4: start of the speech-token part of a turn / output
    "<eot>",     # 5: end of a turn; a bare <eot> means "wait"
    "<src>",     # 6: start of the (optional) source transcript of a turn
    "<audio>",   # 7: placeholder slot for one adapter frame of source audio
    "<asr>",     # 8: task tags
    "<st>",      # 9
    "<tts>",     # 10
    "<s2st>",    # 11
    "<simul>",   # 12
    "<zh>",      # 13: language tags
    "<en>",      # 14
    "<es>",      # 15
    "<de>",      # 16
    "<fr>",      # 17
    "<ja>",      # 18
    "<spk>",     # 19: the speaker changes here (long-form streams)
    "<codec>",   # 20: task tag for speech-token language modelling
)
CONTROL_TOKENS = _NAMED_CONTROL + tuple(
    f"<reserved_{i}>" for i in range(len(_NAMED_CONTROL), NUM_SPECIAL_TOKENS))
assert len(CONTROL_TOKENS) == NUM_SPECIAL_TOKENS

# The control ids themselves are owned by `liveinterp.common.token_layout`; their names:
assert tuple(CONTROL_TOKENS[i] for i in (PAD, BOS, EOS, TEXT, SPEECH, EOT, SRC, AUDIO)) == (
    "<pad>", "<bos>", "<eos>", "<text>", "<speech>", "<eot>", "<src>", "<audio>")
TASK_TOKENS = {"asr": "<asr>", "st": "<st>", "tts": "<tts>", "s2st": "<s2st>",
               "simul": "<simul>", "codec": "<codec>"}
LANGUAGES = ("zh", "en", "es", "de", "fr", "ja")


class TokenizerError(ValueError):
  """The tokenizer cannot be built or loaded as asked; the message says why."""


def layout_size(text_vocab_size: int, num_codebooks: int, codebook_size: int) -> int:
  """Number of ids the layout uses: control + text + speech."""
  return NUM_SPECIAL_TOKENS + text_vocab_size + num_codebooks * codebook_size


def check_fits(text_vocab_size: int, num_codebooks: int, codebook_size: int,
               llm_vocab_size: int) -> int:
  """Raises TokenizerError unless the layout fits `llm_vocab_size`; returns its size."""
  for name, v in (("text_vocab_size", text_vocab_size), ("num_codebooks", num_codebooks),
                  ("codebook_size", codebook_size), ("llm_vocab_size", llm_vocab_size)):
    if not isinstance(v, (int, np.integer)) or v <= 0:
      raise TokenizerError(f"tokenizer: {name}={v!r} must be a positive integer")
  need = layout_size(text_vocab_size, num_codebooks, codebook_size)
  if need > llm_vocab_size:
    raise TokenizerError(
        f"tokenizer layout needs {need} ids ({NUM_SPECIAL_TOKENS} control + "
        f"{text_vocab_size} text (tokenizer.text_vocab_size) + {num_codebooks}x"
        f"{codebook_size} speech (codec.num_codebooks x codec.codebook_size)) but "
        f"llm.vocab_size={llm_vocab_size}; raise llm.vocab_size or shrink the others")
  return need


def _restrict_characters(texts: Sequence[str], max_chars: int) -> tuple[list[str], int]:
  """Drops all but the `max_chars` most frequent characters from the training text.

  Sentencepiece needs a piece for every character it must cover (coverage >= 0.98) and
  fails when those outnumber the vocab (common for Chinese with a small vocab). Training
  on text without the rare characters keeps it within budget; at encode time they map to
  `<unk>`. Returns (texts, number of characters dropped).
  """
  counts = collections.Counter()
  for t in texts:
    counts.update(ch for ch in t if not ch.isspace())
  if len(counts) <= max_chars:
    return list(texts), 0
  keep = {ch for ch, _ in counts.most_common(max_chars)}
  out = []
  for t in texts:
    t2 = "".join(ch for ch in t if ch.isspace() or ch in keep).strip()
    if t2:
      out.append(t2)
  return out, len(counts) - max_chars


class Tokenizer:
  """Text (sentencepiece) + control + speech token ids in one fixed layout."""

  def __init__(self, sp_model_proto: bytes, *, text_vocab_size: int, num_codebooks: int,
               codebook_size: int, llm_vocab_size: int, model_type: str = "unigram"):
    self.text_vocab_size = int(text_vocab_size)
    self.model_type = str(model_type)
    self.num_codebooks = int(num_codebooks)
    self.codebook_size = int(codebook_size)
    self.llm_vocab_size = int(llm_vocab_size)
    self.used_vocab_size = check_fits(self.text_vocab_size, self.num_codebooks,
                                      self.codebook_size, self.llm_vocab_size)
    self._proto = bytes(sp_model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    self.num_pieces = self._sp.get_piece_size()
    if self.num_pieces > self.text_vocab_size:
      raise TokenizerError(
          f"sentencepiece model has {self.num_pieces} pieces but the layout reserves only "
          f"tokenizer.text_vocab_size={self.text_vocab_size} text ids")
    # The id ranges, derived in one place (`liveinterp.common.token_layout`).
    self.layout = TokenLayout.create(
        text_vocab_size=self.text_vocab_size, num_codebooks=self.num_codebooks,
        codebook_size=self.codebook_size, vocab_size=self.llm_vocab_size,
        num_text=self.num_pieces)
    assert self.layout.speech_end == self.used_vocab_size
    self.text_offset = self.layout.text_offset
    self.speech_offset = self.layout.speech_offset
    self._control = {t: i for i, t in enumerate(CONTROL_TOKENS)}

  # ---- construction ------------------------------------------------------------------
  @classmethod
  def train(cls, texts: Iterable[str], model_prefix: str | None, *, text_vocab_size: int,
            num_codebooks: int, codebook_size: int, llm_vocab_size: int,
            character_coverage: float = 0.9995, model_type: str = "unigram",
            byte_fallback: bool = False, max_sentences: int = 2_000_000,
            seed_sentencepiece_size: int = 100_000) -> "Tokenizer":
    """Trains one sentencepiece model over all `texts` (every language together).

    `hard_vocab_limit=False` lets tiny corpora produce fewer pieces than asked. When
    `model_prefix` is given the model is saved as PREFIX.model + PREFIX.json.
    """
    check_fits(text_vocab_size, num_codebooks, codebook_size, llm_vocab_size)
    texts = [t.strip() for t in texts if t and t.strip()]
    if not texts:
      raise TokenizerError("tokenizer: no non-empty training text was given")
    texts = texts[:max_sentences]
    budget = max(8, int(0.8 * (text_vocab_size - 1)))  # 1 = <unk>
    texts, dropped = _restrict_characters(texts, budget)
    if dropped:
      logging.warning("tokenizer: %d rare characters left out of training so the required "
                      "characters fit text_vocab_size=%d (they encode as <unk>)", dropped,
                      text_vocab_size)
    buf = io.BytesIO()
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(texts), model_writer=buf, vocab_size=text_vocab_size,
          hard_vocab_limit=False, model_type=model_type,
          character_coverage=character_coverage,
          unk_id=0, bos_id=-1, eos_id=-1, pad_id=-1, byte_fallback=byte_fallback,
          split_digits=True, num_threads=1, minloglevel=2,
          input_sentence_size=max_sentences, shuffle_input_sentence=True,
          seed_sentencepiece_size=seed_sentencepiece_size, train_extremely_large_corpus=False)
    except RuntimeError as e:
      raise TokenizerError(f"sentencepiece training failed on {len(texts)} sentences "
                           f"(text_vocab_size={text_vocab_size}): {e}") from e
    tok = cls(buf.getvalue(), text_vocab_size=text_vocab_size, num_codebooks=num_codebooks,
              codebook_size=codebook_size, llm_vocab_size=llm_vocab_size,
              model_type=model_type)
    if model_prefix:
      tok.save(model_prefix)
    return tok

  @classmethod
  def train_from_config(cls, texts: Iterable[str], model_prefix: str | None,
                        cfg) -> "Tokenizer":
    """`train` with sizes read from `cfg.tokenizer`, `cfg.codec` and `cfg.llm`."""
    return cls.train(texts, model_prefix, text_vocab_size=cfg.tokenizer.text_vocab_size,
                     model_type=cfg.tokenizer.get("model_type", "unigram"),
                     num_codebooks=cfg.codec.num_codebooks,
                     codebook_size=cfg.codec.codebook_size,
                     llm_vocab_size=cfg.llm.vocab_size)

  def save(self, model_prefix: str) -> tuple[str, str]:
    """Writes PREFIX.model (sentencepiece) and PREFIX.json (layout); returns both paths."""
    os.makedirs(os.path.dirname(os.path.abspath(model_prefix)), exist_ok=True)
    model_path, meta_path = model_prefix + ".model", model_prefix + ".json"
    files.write_atomic(model_path, self._proto)
    meta = dict(text_vocab_size=self.text_vocab_size, num_codebooks=self.num_codebooks,
                codebook_size=self.codebook_size, llm_vocab_size=self.llm_vocab_size,
                num_pieces=self.num_pieces, model_type=self.model_type,
                control_tokens=list(CONTROL_TOKENS))
    files.write_json_atomic(meta_path, meta, indent=1)
    return model_path, meta_path

  @classmethod
  def load(cls, model_prefix: str) -> "Tokenizer":
    """Loads PREFIX.model + PREFIX.json written by `save` (a `.model` suffix is accepted)."""
    if model_prefix.endswith(".model"):
      model_prefix = model_prefix[:-len(".model")]
    model_path, meta_path = model_prefix + ".model", model_prefix + ".json"
    for p in (model_path, meta_path):
      if not os.path.exists(p):
        raise TokenizerError(f"tokenizer: {p} does not exist (train it with "
                             f"`python -m data_pipelines.build`)")
    with open(meta_path) as f:
      meta = json.load(f)
    if tuple(meta.get("control_tokens", ())) != CONTROL_TOKENS:
      raise TokenizerError(f"tokenizer: {meta_path} was written with a different control "
                           f"token table; retrain the tokenizer")
    with open(model_path, "rb") as f:
      proto = f.read()
    return cls(proto, text_vocab_size=meta["text_vocab_size"],
               num_codebooks=meta["num_codebooks"], codebook_size=meta["codebook_size"],
               llm_vocab_size=meta["llm_vocab_size"],
               model_type=meta.get("model_type", "unigram"))  # older metas: unigram

  @classmethod
  def from_config(cls, cfg, model_prefix: str | None = None) -> "Tokenizer":
    """Loads `model_prefix` (default `cfg.tokenizer.model_path`); checks it matches `cfg`."""
    path = model_prefix or cfg.tokenizer.model_path
    if not path:
      raise TokenizerError("tokenizer.model_path is empty: pass the path of a trained model")
    tok = cls.load(path)
    want = (cfg.tokenizer.text_vocab_size, cfg.codec.num_codebooks, cfg.codec.codebook_size)
    got = (tok.text_vocab_size, tok.num_codebooks, tok.codebook_size)
    if want != got:
      raise TokenizerError(
          f"tokenizer {path}: layout (text_vocab_size, num_codebooks, codebook_size)={got} "
          f"differs from the config's {want}")
    check_fits(*want, cfg.llm.vocab_size)
    return tok

  # ---- ids ---------------------------------------------------------------------------
  def id_of(self, token: str) -> int:
    """Id of a control token such as '<eot>'."""
    try:
      return self._control[token]
    except KeyError:
      raise KeyError(f"{token!r} is not a control token; known: {CONTROL_TOKENS[:21]}")

  def lang_id(self, lang: str) -> int:
    """Id of the language tag of `lang` ('zh', 'en', ..., or a locale like 'zh-CN')."""
    base = lang.split("-")[0].split("_")[0].lower()
    if base not in LANGUAGES:
      raise KeyError(f"language {lang!r} has no tag; known: {LANGUAGES}")
    return self._control[f"<{base}>"]

  def task_id(self, task: str) -> int:
    """Id of a task tag: 'asr', 'st', 'tts', 's2st', 'simul', 'codec'."""
    if task not in TASK_TOKENS:
      raise KeyError(f"task {task!r} has no tag; known: {tuple(TASK_TOKENS)}")
    return self._control[TASK_TOKENS[task]]

  def token_of(self, i: int) -> str:
    """Readable name of id `i` (control token, text piece, `<s:k:c>` or `<unused_i>`)."""
    i = int(i)
    if 0 <= i < NUM_SPECIAL_TOKENS:
      return CONTROL_TOKENS[i]
    if self.is_text(i):
      return self._sp.id_to_piece(i - self.text_offset)
    if self.is_speech(i):
      k, c = self.speech_code(i)
      return f"<s:{k}:{c}>"
    if 0 <= i < self.llm_vocab_size:
      return f"<unused_{i}>"
    raise ValueError(f"id {i} is outside the vocabulary [0, {self.llm_vocab_size})")

  @property
  def vocab_size(self) -> int:
    """Size of the embedding table (llm.vocab_size)."""
    return self.llm_vocab_size

  # ---- text ----------------------------------------------------------------------------
  def encode_text(self, text: str) -> list[int]:
    """Text -> ids in the text range (no control tokens added)."""
    return [p + self.text_offset for p in self._sp.encode(text)]

  def char_ids(self, text: str) -> list[int]:
    """One text id per letter/digit/ideograph of `text` (spaces and punctuation skipped):
    the id of the piece that is that single character (word-initial form when only that
    exists, `<unk>` when neither does). Character-level targets for the encoder."""
    out = []
    unk = self._sp.unk_id()
    for ch in text:
      if not ch.isalnum():
        continue
      i = self._sp.piece_to_id(ch)
      if i == unk:
        i = self._sp.piece_to_id("\u2581" + ch)
      out.append(i + self.text_offset)
    return out

  def decode_text(self, ids: Iterable[int]) -> str:
    """Ids -> text; ids outside the text range (control, speech) are dropped."""
    arr = np.asarray(list(ids), np.int64).reshape(-1)
    keep = arr[self.is_text(arr)] - self.text_offset
    return self._sp.decode([int(x) for x in keep])

  def text_pieces(self, text: str) -> list[str]:
    """The sentencepiece pieces of `text` (for inspection)."""
    return self._sp.encode(text, out_type=str)

  # ---- speech --------------------------------------------------------------------------
  def speech_token_id(self, codebook: int, code: int) -> int:
    """Id of codec `code` in `codebook` (0-based)."""
    if not 0 <= codebook < self.num_codebooks:
      raise ValueError(f"codebook={codebook} outside [0, {self.num_codebooks})")
    if not 0 <= code < self.codebook_size:
      raise ValueError(f"code={code} outside [0, {self.codebook_size})")
    return int(self.layout.speech_id(codebook, code))

  def speech_ids(self, codes_tk: np.ndarray) -> np.ndarray:
    """Codes `[T, K]` (or `[T]` for K=1) -> ids int32[T*K], frame-major (t0k0 t0k1 t1k0 ...)."""
    codes = np.asarray(codes_tk)
    if codes.ndim == 1:
      codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[1] != self.num_codebooks:
      raise ValueError(f"speech codes of shape {codes.shape}: expected [T, "
                       f"{self.num_codebooks}] (num_codebooks)")
    if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
      raise ValueError(f"speech codes outside [0, {self.codebook_size}): "
                       f"min {codes.min()}, max {codes.max()}")
    ids = self.layout.speech_id(np.arange(self.num_codebooks)[None, :], codes.astype(np.int64))
    return ids.reshape(-1).astype(np.int32)

  def speech_code(self, i) -> tuple:
    """Inverse of `speech_token_id`: id(s) -> (codebook, code); vectorised over arrays."""
    arr = np.asarray(i)
    if not np.all(self.is_speech(arr)):
      raise ValueError(f"ids {arr} are not all speech tokens")
    k, c = self.layout.speech_code(arr)
    if arr.ndim == 0:
      return int(k), int(c)
    return k, c

  def speech_codes(self, ids: Sequence[int]) -> np.ndarray:
    """Flattened speech ids (frame-major) -> codes int32[T, K]; inverse of `speech_ids`."""
    arr = np.asarray(ids, np.int64).reshape(-1)
    if arr.size % self.num_codebooks:
      raise ValueError(f"{arr.size} speech ids are not a multiple of num_codebooks="
                       f"{self.num_codebooks}")
    k, c = self.speech_code(arr)
    k = k.reshape(-1, self.num_codebooks)
    if arr.size and not np.all(k == np.arange(self.num_codebooks)[None, :]):
      raise ValueError("speech ids are not in frame-major codebook order")
    return c.reshape(-1, self.num_codebooks).astype(np.int32)

  # ---- classes of ids (vectorised) ------------------------------------------------------
  def is_control(self, ids):
    a = np.asarray(ids)
    return (a >= 0) & (a < NUM_SPECIAL_TOKENS)

  def is_text(self, ids):
    return self.layout.is_text(ids)

  def is_speech(self, ids):
    return self.layout.is_speech(ids)

  def describe(self, ids: Iterable[int], max_items: int = 200) -> str:
    """Space-separated readable tokens (debugging / notebooks)."""
    ids = list(ids)
    out = [self.token_of(i) for i in ids[:max_items]]
    if len(ids) > max_items:
      out.append(f"... (+{len(ids) - max_items})")
    return " ".join(out)
