"""Text-side options of the streaming decoder: the text-only turn grammar (models trained
without speech codes), text-only decoding (no codec run), and swapping weights into a
compiled decoder (`set_model`, what the SFT dev evaluation does at every evaluation).

Random micro models (`conftest.models`); three compiled steps in all (the session
`decoder`, one with `decode_speech=False`, one with text-only turns).
"""

import jax
import numpy as np
import pytest

from configs import micro
from liveinterp.common import token_layout
from liveinterp.inference import decode_step, grammar, loading, sampling
from liveinterp.inference import decoder as decoder_lib
from tests.unit.inference import grammar_ref
from tests.unit.inference.conftest import TURN_TOKENS

B, N_CHUNKS = 2, 4


# ---- the text-only grammar against a plain-Python reference ------------------------------
LAYOUT = token_layout.TokenLayout(vocab_size=60, text_offset=32, num_text=10, speech_offset=42,
                              num_codebooks=2, codebook_size=8)


def _ref_min_close(seq, allow_src):
  """Fewest tokens completing `seq` into `<eot> | <src> w+ <eot> | [<src> w+] <text> w+
  <eot>`, or None."""
  word = lambda x: LAYOUT.text_offset <= x < LAYOUT.text_offset + LAYOUT.num_text  # noqa
  t = list(seq)
  if not t:
    return 1
  if t == [sampling.EOT]:
    return 0
  i = 0
  if t[0] == sampling.SRC:
    if not allow_src:
      return None
    j = 1
    while j < len(t) and word(t[j]):
      j += 1
    if j == len(t):                   # <src> w*: [w] <eot>
      return (1 if j == 1 else 0) + 1
    if t[j] == sampling.EOT and j == len(t) - 1 and j > 1:   # <src> w+ <eot>
      return 0
    if t[j] != sampling.TEXT or j == 1:
      return None
    i = j
  if t[i] != sampling.TEXT:
    return None
  j = i + 1
  while j < len(t) and word(t[j]):
    j += 1
  if j == len(t):                     # <text> w*: [w] <eot>
    return (1 if j == i + 1 else 0) + 1
  if j == len(t) - 1 and t[j] == sampling.EOT and j > i + 1:
    return 0
  return None


def _ref_mask(prefix, m, allow_src):
  remaining = m - len(prefix) - 1
  out = np.zeros(LAYOUT.vocab_size, bool)
  for c in range(LAYOUT.vocab_size):
    need = _ref_min_close(prefix + [c], allow_src)
    out[c] = need is not None and need <= remaining
  return out


@pytest.mark.parametrize("allow_src", [False, True])
def test_text_only_grammar_matches_reference(allow_src):
  m = 7
  gram = grammar.TurnGrammar(LAYOUT, m, allow_src=allow_src, speech=False)
  for prefix in grammar_ref.random_walks(gram, LAYOUT,
                                         lambda p: _ref_mask(p, m, allow_src), 7 + allow_src):
    assert prefix[-1] == sampling.EOT and _ref_min_close(prefix, allow_src) == 0
  # `<eot>` may close a text section (it may not with speech), speech never appears.
  text_open = [sampling.TEXT, LAYOUT.text_offset]
  assert _ref_mask(text_open, m, allow_src)[sampling.EOT]
  assert not _ref_mask(text_open, m, allow_src)[sampling.SPEECH]
  assert grammar.min_content_turn(2, speech=False) == 3
  with pytest.raises(ValueError, match="<text> w <eot>"):
    grammar.TurnGrammar(LAYOUT, 2, speech=False)


# ---- decoders ----------------------------------------------------------------------------
def _decoder(cfg, models, temperature=0.0, **kw):
  model, codec, speaker = models
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg,
      temperature=temperature, max_turn_tokens=TURN_TOKENS,
      speaker_window_ms=cfg.stream.chunk_ms, return_logits=True, codec_blocks=(4,), **kw)


@pytest.fixture(scope="module")
def silent_decoder(cfg, models):
  """The session decoder's settings, but `decode_speech=False`."""
  return _decoder(cfg, models, decode_speech=False)


def _audio(decoder, seed):
  rng = np.random.default_rng(seed)
  return (0.1 * rng.standard_normal((N_CHUNKS, B, decoder.chunk_samples))).astype(np.float32)


def _speech_policy(layout):
  """Forced content turns with speech in every chunk and row: `<text> w <speech> s s <eot>`."""
  forced = np.zeros((N_CHUNKS, B, TURN_TOKENS), np.int32)
  for t in range(N_CHUNKS):
    for b in range(B):
      turn = [sampling.TEXT, layout.text_offset + t + b, sampling.SPEECH,
              layout.speech_offset + 3 * t + b, layout.speech_offset + 5 + t, sampling.EOT]
      forced[t, b, :len(turn)] = turn
  return forced, np.full((N_CHUNKS, B), TURN_TOKENS, np.int32)


def _run(decoder, audio, forced=None, lens=None):
  state, outs = decoder.init_stream(B, 0), []
  for t in range(N_CHUNKS):
    kw = {} if forced is None else dict(forced_tokens_bm=forced[t], forced_len_b=lens[t])
    state, out = decoder.step(state, audio[t], **kw)
    outs.append(jax.device_get(out))
  return outs


def test_decode_speech_false_gives_the_same_tokens_without_audio(decoder, silent_decoder):
  audio = _audio(decoder, 0)
  forced, lens = _speech_policy(decoder.layout)
  for kw in ({}, dict(forced=forced, lens=lens)):          # free-running and forced
    full, silent = _run(decoder, audio, **kw), _run(silent_decoder, audio, **kw)
    for a, s in zip(full, silent):
      for name in ("tokens", "n_tokens", "text", "n_text", "speech", "n_speech"):
        np.testing.assert_array_equal(getattr(a, name), getattr(s, name), err_msg=name)
      np.testing.assert_allclose(a.logits, s.logits, atol=1e-5)
      assert not s.n_samples.any() and not s.audio.any()
  # Forced speech: the full decoder made audio, the silent one none, from equal ids.
  full = _run(decoder, audio, forced, lens)
  assert all(o.n_speech.min() > 0 and o.n_samples.min() > 0 for o in full)


def test_set_model_swaps_weights_without_recompiling(cfg, models, silent_decoder):
  _, codec, speaker = models
  other = loading.random_model(lambda r: decoder_lib.s2st_lib.S2ST(cfg, rngs=r), seed=5)
  audio = _audio(silent_decoder, 1)
  before = _run(silent_decoder, audio)
  compiled = decode_step._step_donate._cache_size()
  silent_decoder.set_model(other)
  swapped = _run(silent_decoder, audio)
  assert decode_step._step_donate._cache_size() == compiled        # no new compilation
  fresh = _run(_decoder(cfg, (other, codec, speaker), decode_speech=False), audio)
  for s, f in zip(swapped, fresh):
    np.testing.assert_array_equal(s.tokens, f.tokens)
    np.testing.assert_allclose(s.logits, f.logits, atol=1e-6)
  assert not all(np.allclose(b.logits, s.logits) for b, s in zip(before, swapped))
  silent_decoder.set_model(models[0])                           # back, for other tests
  np.testing.assert_allclose(_run(silent_decoder, audio)[0].logits, before[0].logits)
  # A model of another size cannot be swapped in.
  bigger = micro.get_config()
  bigger.llm.mlp_dim = 2 * bigger.llm.mlp_dim
  wrong = loading.random_model(lambda r: decoder_lib.s2st_lib.S2ST(bigger, rngs=r))
  with pytest.raises(ValueError, match="set_model"):
    silent_decoder.set_model(wrong)


def test_text_only_turns_never_contain_speech(cfg, models):
  # Sampled hot, so the random model writes content turns too (greedy, it only waits).
  dec = _decoder(cfg, models, temperature=10.0, speech_turns=False, decode_speech=False)
  outs = _run(dec, _audio(dec, 2))
  cls = dec.layout.id_classes()
  content = 0
  for o in outs:
    for b in range(B):
      turn = [int(x) for x in o.tokens[b, :o.n_tokens[b]]]
      assert turn[-1] == sampling.EOT
      assert _ref_min_close_layout(turn, dec.layout) == 0, turn
      assert not np.isin(cls[turn], [token_layout.C_SPEECH, token_layout.C_SPEECH_TAG]).any()
      content += len(turn) > 1
      assert o.n_text[b] == max(0, len(turn) - 2)
    assert not o.n_speech.any()
  assert content >= 2, content


def _ref_min_close_layout(turn, layout):
  """Whether `turn` parses as `<eot> | <text> w+ <eot>` (0) or not (None)."""
  word = lambda x: layout.text_offset <= x < layout.text_offset + layout.num_text  # noqa
  if turn == [sampling.EOT]:
    return 0
  ok = (len(turn) >= 3 and turn[0] == sampling.TEXT and turn[-1] == sampling.EOT
        and all(word(x) for x in turn[1:-1]))
  return 0 if ok else None


def test_speech_turns_for_follows_the_codes_file(tmp_path):
  c = micro.get_config("sft")
  c.data.codes_path = ""
  assert not decoder_lib.speech_turns_for(c)
  c.data.codes_path = str(tmp_path / "codes.npz")
  assert not decoder_lib.speech_turns_for(c)                      # named, not written yet
  np.savez(c.data.codes_path, a=np.zeros((2, 1), np.int16))
  assert decoder_lib.speech_turns_for(c)
  c.data.text_only = True                                       # codes, but not used
  assert not decoder_lib.speech_turns_for(c)
