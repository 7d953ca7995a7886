"""The turn grammar of DESIGN §1: its state machine and its allowed-id masks.

The one owner of the grammar: the streaming decoder masks its sampling with it, and the RL
format reward is to judge turns by the same rules. `TurnGrammar` (over a `TokenLayout`,
see `sampling.py`) encodes it as an id mask:

    turn := <eot>                                         (wait)
          | <src> w+ <eot>                                (source words heard, nothing
                                                           to say yet: a wait with a
                                                           live transcript)
          | [<src> w+] <text> w+ <speech> s+ <eot>        (s+ a whole number of frames)

with speech ids in frame-major order (codebook 0, 1, ..., Q-1 of frame 0, then frame 1 ...),
so the k-th speech token of a turn must come from codebook `k % Q`. A model trained
without speech codes (text-only turns, `TurnGrammar(..., speech=False)`) has

    turn := <eot> | <src> w+ <eot> | [<src> w+] <text> w+ <eot>

The mask is also *budget-feasible*: at step i of a turn of at most M tokens, an id is
allowed only when the turn can still be closed within the remaining `M - 1 - i` tokens, so
every turn ends with `<eot>` by token M and always parses. `budget_mask` is the mask
without the grammar (only "the last token of the budget is `<eot>`").
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from liveinterp.common.token_layout import (C_EOT, C_SPEECH, C_SPEECH_TAG, C_SRC_TAG,
                                            C_TEXT_TAG, C_WORD, EOT, TokenLayout)

# Phases of a turn. `n` counts the tokens written in the current section.
START, SRC_PHASE, TEXT_PHASE, SPEECH_PHASE, DONE = range(5)


class GrammarState(NamedTuple):
  phase: jax.Array  # [B] int32
  n: jax.Array      # [B] int32 tokens in the current section


def grammar_init(batch: int) -> GrammarState:
  return GrammarState(jnp.full((batch,), START, jnp.int32), jnp.zeros((batch,), jnp.int32))


def grammar_advance(state: GrammarState, tokens_b: jax.Array,
                    layout: TokenLayout) -> GrammarState:
  """Phase after writing `tokens` (defined for any id, grammatical or not).

  `<eot>` ends the turn; `<src>`, `<text>`, `<speech>` open their section; a text id in
  the src/text section or a speech id in the speech section counts; anything else leaves
  the state unchanged.
  """
  cls = jnp.asarray(layout.id_classes())[tokens_b]
  phase, n = state
  opened = jnp.select([cls == C_SRC_TAG, cls == C_TEXT_TAG, cls == C_SPEECH_TAG],
                      [SRC_PHASE, TEXT_PHASE, SPEECH_PHASE], -1)
  counts = (((cls == C_WORD) & ((phase == SRC_PHASE) | (phase == TEXT_PHASE)))
            | ((cls == C_SPEECH) & (phase == SPEECH_PHASE)))
  new_phase = jnp.where(opened >= 0, opened, phase)
  new_n = jnp.where(opened >= 0, 0, n + counts.astype(jnp.int32))
  done = (cls == C_EOT) | (phase == DONE)
  return GrammarState(jnp.where(done, DONE, new_phase).astype(jnp.int32),
                      jnp.where(done, 0, new_n).astype(jnp.int32))


def min_tokens_to_close(phase: jax.Array, n: jax.Array, num_codebooks: int,
                        speech: bool = True) -> jax.Array:
  """Fewest further tokens that end a turn in state (phase, n) with a valid parse
  (`speech=False`: the text-only grammar, where a text section closes with `<eot>`)."""
  q = num_codebooks
  k = n % q
  speech_close = jnp.where((n > 0) & (k == 0), 1, q - k + 1)
  need_word = (n == 0).astype(jnp.int32)
  tail = q + 1 if speech else 0            # `<speech> s*Q` after the text words
  return jnp.select(
      [phase == DONE, phase == START, phase == SPEECH_PHASE, phase == TEXT_PHASE,
       phase == SRC_PHASE],
      [0, 1, speech_close, need_word + 1 + tail, need_word + 1], 0)


def min_content_turn(num_codebooks: int, speech: bool = True) -> int:
  """Length of the shortest turn that says something: `<text> w <speech> s*Q <eot>`
  (`<text> w <eot>` when `speech=False`)."""
  return 3 + (num_codebooks + 1 if speech else 0)


@dataclasses.dataclass(frozen=True)
class TurnGrammar:
  """Allowed-id masks for the turn grammar (module docstring), budget-feasible.

  speech=False: the text-only grammar of a model trained without speech codes (no
  `<speech>` section; `<eot>` closes a text section).
  """
  layout: TokenLayout
  max_turn_tokens: int
  allow_src: bool = False
  speech: bool = True

  def __post_init__(self):
    need = min_content_turn(self.layout.num_codebooks, self.speech)
    if self.max_turn_tokens < need:
      shortest = (f"<text> w <speech> {self.layout.num_codebooks} speech <eot>"
                  if self.speech else "<text> w <eot>")
      raise ValueError(f"stream.max_turn_tokens={self.max_turn_tokens} cannot hold the "
                       f"shortest content turn ({shortest} = {need} tokens)")

  def mask(self, state: GrammarState, step: jax.Array) -> jax.Array:
    """`[B, V]` bool: ids allowed as token number `step` (0-based) of the turn."""
    q = self.layout.num_codebooks
    phase, n = state
    remaining = self.max_turn_tokens - 1 - step          # tokens left after this one
    b = phase.shape[0]
    cls_v = jnp.asarray(self.layout.id_classes())
    cb_v = jnp.asarray(self.layout.id_codebooks())
    # Per class: allowed by the grammar here, and the state it leads to.
    in_start, in_src, in_text, in_speech = (phase == START, phase == SRC_PHASE,
                                            phase == TEXT_PHASE, phase == SPEECH_PHASE)
    k = n % q
    zeros = jnp.zeros((b,), jnp.int32)
    if self.speech:
      ok_eot = in_start | (in_speech & (n > 0) & (k == 0))
    else:
      ok_eot = in_start | (in_text & (n > 0))
    ok_eot |= in_src & (n > 0)               # `<src> w+ <eot>`: heard, nothing to say
    ok_text_tag = in_start | (in_src & (n > 0))
    ok_src_tag = in_start & self.allow_src
    ok_speech_tag = in_text & (n > 0) & self.speech
    ok_word = in_src | in_text
    ok_speech = in_speech & self.speech

    def close(ph, nn):
      return min_tokens_to_close(ph, nn, q, self.speech)

    def feasible(next_phase, next_n):  # the turn can still close after this token
      ph = jnp.full((b,), next_phase, jnp.int32)
      return close(ph, next_n) <= remaining

    # <eot> leads to DONE, which needs nothing more: always feasible where allowed.
    ok_text_tag &= feasible(TEXT_PHASE, zeros)
    ok_src_tag &= feasible(SRC_PHASE, zeros)
    ok_speech_tag &= feasible(SPEECH_PHASE, zeros)
    ok_word &= close(phase, n + 1) <= remaining
    ok_speech &= close(phase, n + 1) <= remaining
    table = jnp.stack([jnp.zeros((b,), bool), ok_eot, ok_text_tag, ok_speech_tag,
                       ok_src_tag, ok_word, ok_speech], axis=1)     # [B, classes]
    allowed = jnp.take(table, cls_v, axis=1)                         # [B, V]
    right_codebook = (cls_v[None, :] != C_SPEECH) | (cb_v[None, :] == k[:, None])
    return allowed & right_codebook


def budget_mask(batch: int, vocab_size: int, step: jax.Array,
                max_turn_tokens: int) -> jax.Array:
  """Without the grammar: any id, except that the last token of the budget is `<eot>`."""
  last = step >= max_turn_tokens - 1
  ids = jnp.arange(vocab_size)
  return jnp.broadcast_to(jnp.where(last, ids == EOT, True), (batch, vocab_size))


__all__ = ["TurnGrammar", "GrammarState", "grammar_init", "grammar_advance",
           "min_tokens_to_close", "min_content_turn", "budget_mask", "START", "SRC_PHASE",
           "TEXT_PHASE", "SPEECH_PHASE", "DONE"]
