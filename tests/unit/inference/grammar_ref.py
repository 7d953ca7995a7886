"""An independent (plain Python) reference of the turn grammar, for the tests.

    turn := <eot> | <src> w+ <eot> | [<src> w+] <text> w+ <speech> s+ <eot>,
            s+ frame-major, whole frames
"""

import numpy as np

from liveinterp.inference import grammar, sampling


def min_close(seq, layout, allow_src=True):
  """Fewest tokens completing `seq` into a valid turn, or None when it cannot be one."""
  q = layout.num_codebooks
  t = list(seq)
  if not t:
    return 1
  if t == [sampling.EOT]:
    return 0

  def words(a):
    return all(layout.text_offset <= x < layout.text_offset + layout.num_text for x in a)

  i = 0
  if t[0] == sampling.SRC:
    if not allow_src:
      return None
    j = 1
    while j < len(t) and t[j] != sampling.TEXT:
      j += 1
    if j == len(t) and t[-1] == sampling.EOT:      # `<src> w+ <eot>`
      return 0 if len(t) > 2 and words(t[1:-1]) else None
    if not words(t[1:j]):
      return None
    if j == len(t):
      return (0 if j > 1 else 1) + 1               # the words still needed, then <eot>
    if j == 1:
      return None
    i = j
  if t[i] != sampling.TEXT:
    return None
  j = i + 1
  while j < len(t) and t[j] != sampling.SPEECH:
    j += 1
  if not words(t[i + 1:j]):
    return None
  if j == len(t):
    return (0 if j > i + 1 else 1) + 1 + q + 1
  if j == i + 1:
    return None
  s = t[j + 1:]
  closed = bool(s) and s[-1] == sampling.EOT
  if closed:
    s = s[:-1]
  for k, x in enumerate(s):
    lo = layout.speech_offset + (k % q) * layout.codebook_size
    if not lo <= x < lo + layout.codebook_size:
      return None
  if closed:
    return 0 if s and len(s) % q == 0 else None
  return (q - len(s) % q if len(s) % q else (0 if s else q)) + 1


def allowed_mask(prefix, max_turn_tokens, layout, allow_src=True):
  """`[V]` bool: ids that keep `prefix` completable within the budget.

  The grammar only looks at an id's kind (control token, text, speech of codebook k,
  other), so one representative per kind is checked and the answer spread over the kind.
  """
  remaining = max_turn_tokens - len(prefix) - 1
  v = layout.vocab_size
  groups = {}
  kind = np.empty(v, object)
  for c in range(v):
    if c < layout.text_offset:
      k = ("ctl", c)
    elif c < layout.text_offset + layout.num_text:
      k = ("word",)
    elif layout.speech_offset <= c < layout.speech_end:
      k = ("speech", (c - layout.speech_offset) // layout.codebook_size)
    else:
      k = ("other",)
    kind[c] = k
    groups.setdefault(k, c)
  ok = {}
  for k, rep in groups.items():
    need = min_close(prefix + [rep], layout, allow_src)
    ok[k] = need is not None and need <= remaining
  return np.asarray([ok[kind[c]] for c in range(v)])


def sections(turn, layout):
  """(src ids, text ids, speech ids) of a turn, by the section each id is written in."""
  src, text, speech, where = [], [], [], None
  for x in turn:
    if x == sampling.EOT:
      break
    if x in (sampling.SRC, sampling.TEXT, sampling.SPEECH):
      where = x
      continue
    is_word = layout.text_offset <= x < layout.text_offset + layout.num_text
    if is_word and where == sampling.SRC:
      src.append(x)
    elif is_word and where == sampling.TEXT:
      text.append(x)
    elif layout.speech_offset <= x < layout.speech_end and where == sampling.SPEECH:
      speech.append(x)
  return src, text, speech


def random_walks(gram, layout, ref_mask, seed: int, walks: int = 12):
  """Samples `walks` turns uniformly among the ids `gram` allows, checking at every step
  that its mask equals `ref_mask(prefix)`; returns the finished turns (prefixes)."""
  import jax  # pylint: disable=g-import-not-at-top
  mask_fn = jax.jit(gram.mask)
  adv = jax.jit(lambda st, t: grammar.grammar_advance(st, t, layout))
  rng = np.random.default_rng(seed)
  turns = []
  for _ in range(walks):
    st, prefix = grammar.grammar_init(1), []
    for i in range(gram.max_turn_tokens):
      got = np.asarray(mask_fn(st, np.int32(i)))[0]
      np.testing.assert_array_equal(got, ref_mask(prefix), err_msg=f"prefix {prefix}")
      tok = int(rng.choice(np.flatnonzero(got)))
      prefix.append(tok)
      st = adv(st, np.asarray([tok]))
      if tok == sampling.EOT:
        break
    turns.append(prefix)
  return turns
