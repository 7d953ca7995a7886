"""The streaming decoder against the teacher-forced training forward, and long streams.

Most tests share one compiled `step` (the session `decoder`: batch 2, greedy, grammar,
16-token turns, logits returned, the `<bos> <simul> <zh> <en>` prompt of the micro
config) and one compiled training forward (5 chunks, padded stream length), so the suite
pays for few compilations. One test takes its reference stream from the training
pipeline itself (`stream_format.simul_example` of a micro record, micro tokenizer).
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from liveinterp.common import token_layout
from liveinterp.inference import decode_step, loading, sampling
from liveinterp.inference import decoder as decoder_lib
from liveinterp.inference import session as session_lib
from liveinterp.models import s2st
from tests.unit.inference import grammar_ref
from tests.unit.inference.conftest import TURN_TOKENS

B = 2
N_CHUNKS = 5


def _forward_fn(model):
  """Jitted `S2ST.__call__` on a fixed padded length (one compile for every test)."""
  graphdef, params = nnx.split(model)
  fn = jax.jit(lambda p, tok, audio, slot: nnx.merge(graphdef, p)(tok, audio, slot))
  return lambda tok, audio, slot: fn(params, tok, audio, slot)


_FORWARD = {}


def _full_forward(model, turns, audio_bn, spc, prompt):
  """Builds `prompt [A1][Y1]...` per row from the turns and runs the training forward.

  Returns (logits [B, T, V], values [B, T], positions[b][t] = stream index of turn t's
  first token).
  """
  t_pad = len(prompt) + N_CHUNKS * (spc + TURN_TOKENS)
  tokens = np.full((B, t_pad), sampling.PAD, np.int32)
  slots = np.zeros((B, t_pad), bool)
  starts = [[] for _ in range(B)]
  for b in range(B):
    seq, slot = list(prompt), [False] * len(prompt)
    for turn in turns[b]:
      seq += [sampling.AUDIO] * spc
      slot += [True] * spc
      starts[b].append(len(seq))
      seq += list(turn)
      slot += [False] * len(turn)
    tokens[b, :len(seq)], slots[b, :len(seq)] = seq, slot
  if id(model) not in _FORWARD:
    _FORWARD[id(model)] = _forward_fn(model)
  logits, values = _FORWARD[id(model)](jnp.asarray(tokens), jnp.asarray(audio_bn),
                                       jnp.asarray(slots))
  return np.asarray(logits), np.asarray(values), starts


def _audio(decoder, seed, periodic=False):
  """[N_CHUNKS, B, C]: two different sources (noise vs. a louder chirp + noise)."""
  rng = np.random.default_rng(seed)
  c = decoder.chunk_samples
  n = 1 if periodic else N_CHUNKS
  t = np.arange(n * c) / 16000.0
  row0 = 0.05 * rng.standard_normal(n * c)
  row1 = 0.4 * np.sin(2 * np.pi * (200 + 600 * t) * t) + 0.02 * rng.standard_normal(n * c)
  x = np.stack([row0, row1]).astype(np.float32).reshape(B, n, c).transpose(1, 0, 2)
  return np.repeat(x, N_CHUNKS, axis=0) if periodic else x


def _run(decoder, audio, forced=None, lens=None):
  state = decoder.init_stream(B, 0)
  outs = []
  for t in range(N_CHUNKS):
    kw = {} if forced is None else dict(forced_tokens_bm=forced[t], forced_len_b=lens[t])
    state, out = decoder.step(state, audio[t], **kw)
    outs.append(jax.device_get(out))
  return state, outs


def _turns(outs):
  return [[list(o.tokens[b, :o.n_tokens[b]]) for o in outs] for b in range(B)]


def test_greedy_stream_is_self_consistent_with_training_forward(decoder, models):
  model = models[0]
  audio = _audio(decoder, 0)
  state, outs = _run(decoder, audio)
  turns = _turns(outs)
  spc = model.slots_per_chunk
  logits, values, starts = _full_forward(model, turns, audio.transpose(1, 0, 2).reshape(B, -1),
                                         spc, decoder.prompt_ids)
  layout = decoder.layout
  checked = 0
  for b in range(B):
    for t, turn in enumerate(turns[b]):
      assert 1 <= len(turn) <= TURN_TOKENS and turn[-1] == sampling.EOT
      assert grammar_ref.min_close(turn, layout) == 0, turn        # the turn parses
      for i, tok in enumerate(turn):
        p = starts[b][t] + i - 1                                   # predicts token i
        np.testing.assert_allclose(outs[t].logits[b, i], logits[b, p], atol=2e-4,
                                   rtol=2e-4, err_msg=f"row {b} chunk {t} token {i}")
        np.testing.assert_allclose(outs[t].values[b, i], values[b, p], atol=2e-4, rtol=2e-4)
        allowed = grammar_ref.allowed_mask(turn[:i], TURN_TOKENS, layout, allow_src=False)
        assert tok == int(np.argmax(np.where(allowed, logits[b, p], -np.inf))), (b, t, i)
        ref_lp = logits[b, p, tok] - np.log(np.exp(logits[b, p] - logits[b, p].max()).sum()) \
            - logits[b, p].max()
        np.testing.assert_allclose(outs[t].log_probs[b, i], ref_lp, atol=2e-4)
        checked += 1
      src, text, speech = grammar_ref.sections(turn, layout)
      o = outs[t]
      assert list(o.text[b, :o.n_text[b]]) == text and list(o.speech[b, :o.n_speech[b]]) == speech
      assert o.n_samples[b] == len(speech) // layout.num_codebooks * decoder.spec.hop
  # The prompt and every generated token are in the cache except the last turn's pending
  # <eot>.
  assert decoder.prompt_ids == (1, 12, 13, 14)       # <bos> <simul> <zh> <en> (zh-en)
  total = [len(decoder.prompt_ids) + N_CHUNKS * spc + sum(len(x) for x in turns[b]) - 1
           for b in range(B)]
  np.testing.assert_array_equal(np.asarray(state.model.cache.length), total)
  assert checked > 2 * N_CHUNKS
  # The two streams were decoded from their own audio.
  assert not np.allclose(outs[0].logits[0, 0], outs[0].logits[1, 0], atol=1e-3)


def _forced_policy(layout):
  """Per chunk and row: (forced ids [M], forced length). Mixed wait/content/odd turns."""
  w = lambda k: layout.text_offset + k                                  # noqa: E731
  s = lambda k: layout.speech_offset + k                                # noqa: E731
  T, S, E, SRC = sampling.TEXT, sampling.SPEECH, sampling.EOT, sampling.SRC
  ws = lambda *k: [w(i) for i in k]                                      # noqa: E731
  ss = lambda *k: [s(i) for i in k]                                      # noqa: E731
  rows = [
      [[E], [T, *ws(1, 2, 3, 4, 5, 6, 7, 8), S, *ss(3, 4, 5, 6, 7), E],
       [T, *ws(9, 8, 7, 6, 5, 4, 3, 2), S, *ss(9, 8, 7, 6, 5), E], [T, w(7), S, s(9), E],
       [SRC, w(4), T, w(5), S, s(1), s(2), E]],
      # chunk 3 is not grammatical (no <text> tag): forcing bypasses the grammar, the
      # words are not collected as text, the speech after <speech> is.
      [[T, w(3), S, *ss(6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17), E], [E],
       [T, *ws(8, 9, 2, 1, 0), S, *ss(11, 10, 9, 8, 7, 6, 5, 4), E],
       [w(5), w(6), S, *ss(12, 13, 14, 15, 16, 17, 18, 19, 20, 21), E], [E]],
  ]
  lens = [[None] * N_CHUNKS for _ in range(B)]
  lens[0][3] = 3            # cut after `<text> w <speech>`: the decoder appends <eot>
  lens[1][2] = TURN_TOKENS  # full length, but the turn stops at its own <eot>
  forced = np.zeros((N_CHUNKS, B, TURN_TOKENS), np.int32)
  flen = np.zeros((N_CHUNKS, B), np.int32)
  expect = [[None] * N_CHUNKS for _ in range(B)]
  for b in range(B):
    for t in range(N_CHUNKS):
      turn = rows[b][t]
      forced[t, b, :len(turn)] = turn
      flen[t, b] = len(turn) if lens[b][t] is None else lens[b][t]
      cut = list(turn[:flen[t, b]])
      if E in cut:
        cut = cut[:cut.index(E) + 1]
      expect[b][t] = cut if cut and cut[-1] == E else cut + [E]
  return forced, flen, expect


def test_forced_turns_give_training_forward_logits_and_codec_audio(decoder, models):
  model, codec, speaker = models
  layout = decoder.layout
  forced, flen, expect = _forced_policy(layout)
  # Periodic source (each chunk the same samples per row) and a one-chunk speaker
  # window: every chunk's speaker embedding is the embedding of that one chunk.
  audio = _audio(decoder, 1, periodic=True)
  state, outs = _run(decoder, audio, forced, flen)
  turns = _turns(outs)
  assert turns == expect
  window = model.llm.window
  assert all(N_CHUNKS * model.slots_per_chunk + sum(map(len, turns[b])) > window
             for b in range(B))                      # the ring cache wraps in both rows
  spc = model.slots_per_chunk
  logits, values, starts = _full_forward(model, turns, audio.transpose(1, 0, 2).reshape(B, -1),
                                         spc, decoder.prompt_ids)
  for b in range(B):
    for t, turn in enumerate(turns[b]):
      p0 = starts[b][t] - 1
      np.testing.assert_allclose(outs[t].logits[b, :len(turn)], logits[b, p0:p0 + len(turn)],
                                 atol=2e-4, rtol=2e-4, err_msg=f"row {b} chunk {t}")
      np.testing.assert_allclose(outs[t].values[b, :len(turn)], values[b, p0:p0 + len(turn)],
                                 atol=2e-4, rtol=2e-4)
      src, text, speech = grammar_ref.sections(turn, layout)
      o = outs[t]
      assert list(o.src[b, :o.n_src[b]]) == src
      assert list(o.text[b, :o.n_text[b]]) == text
      assert list(o.speech[b, :o.n_speech[b]]) == speech

  # Speaker embedding = the speaker encoder on one chunk of the source.
  spk_ref = np.asarray(jax.jit(lambda a: speaker.embed_audio(a))(jnp.asarray(audio[0])))
  for t in (1, 3):  # chunks where somebody speaks
    np.testing.assert_allclose(outs[t].speaker, spk_ref, atol=1e-4)
  # Streaming codec audio (frame by frame, rows idle on their wait turns) == one full
  # decode of each row's codes.
  codes = [np.concatenate([o.speech[b, :o.n_speech[b]] for o in outs]) - layout.speech_offset
           for b in range(B)]
  n_max = max(len(c) for c in codes)
  padded = np.zeros((B, n_max, 1), np.int32)
  for b in range(B):
    padded[b, :len(codes[b]), 0] = codes[b]
  full = np.asarray(jax.jit(lambda c, e: codec.decode(c, e))(jnp.asarray(padded),
                                                            jnp.asarray(spk_ref)))
  for b in range(B):
    streamed = np.concatenate([o.audio[b, :o.n_samples[b]] for o in outs])
    assert streamed.size == len(codes[b]) * codec.hop
    np.testing.assert_allclose(streamed, full[b, :streamed.size], atol=1e-4)


def _pipeline_example(cfg, tok, window):
  """A micro train record's SFT stream, as the training pipeline builds it: longer than
  the LLM window (the ring cache wraps), several content turns, turns within budget."""
  from data_pipelines import stream_format as sfmt
  from tests.unit.data.test_formats_fixtures import micro_source
  spec = sfmt.StreamSpec.from_config(cfg)
  source = micro_source("train")
  for i in range(len(source)):
    rec = source[i]
    try:
      ex = sfmt.simul_example(rec, tok, spec)
    except sfmt.FormatError:
      continue
    turns = sfmt.turns(ex)
    if (ex["tokens"].size > window + 8 and sum(len(t) > 1 for _, t in turns) >= 2
        and max(len(t) for _, t in turns) <= TURN_TOKENS):
      return rec, ex, turns
  raise AssertionError("no micro train record gives a long enough SFT stream")


def test_decoder_reproduces_training_forward_on_a_pipeline_stream():
  """Reference = the training forward on `simul_example`'s own output (prompt included);
  the decoder, fed the example's audio chunk by chunk and forced to its turns, gives the
  same logits at every turn token. Without the prompt it does not."""
  from data_pipelines import stream_format as sfmt, tokenizer as tokmod
  from liveinterp.train.stages import stream_lm
  from tests.unit.data.test_formats_fixtures import micro_config, micro_tokenizer
  cfg = micro_config("sft")
  tok = micro_tokenizer()
  model, codec, speaker = loading.build_models(cfg, seed=0)
  rec, ex, turns = _pipeline_example(cfg, tok, model.llm.window)

  # The training forward, on exactly the pipeline's example (one row, as the sft stage).
  batch = {k: jnp.asarray(ex[k])[None] for k in
           ("tokens", "audio_slot_mask", "positions", "segment_ids", "audio")}
  batch["audio_segment_ids"] = jnp.ones(ex["audio"].shape[:1], jnp.int32)[None]
  tokens, audio, audio_mask, slots = stream_lm.model_inputs(batch)
  graphdef, params = nnx.split(model)
  fwd = jax.jit(lambda p, *a: nnx.merge(graphdef, p)(
      a[0], a[1], a[2], positions_bt=a[3], segment_ids_bt=a[4], audio_mask_bn=a[5]))
  logits, values = fwd(params, tokens, audio, slots, batch["positions"],
                       batch["segment_ids"], audio_mask)
  logits, values = np.asarray(logits[0]), np.asarray(values[0])

  # The decoder's prompt is the pipeline's, from the config's pair and the tokenizer.
  prompt = decoder_lib.prompt_for(cfg, tok)
  n_prompt = int(np.sum(ex["chunk_index"] < 0))
  assert prompt == tuple(int(i) for i in ex["tokens"][:n_prompt])
  assert prompt == tuple(sfmt.simul_prompt_ids(tok, rec["src_lang"], rec["tgt_lang"]))
  assert prompt == decoder_lib.prompt_for(cfg)      # fixed control table, no tokenizer

  kw = dict(max_turn_tokens=TURN_TOKENS, return_logits=True, codec_blocks=(),
            speaker_window_ms=cfg.stream.chunk_ms)
  with_prompt = decoder_lib.StreamingDecoder(model, codec, speaker, tok, cfg, **kw)
  assert with_prompt.prompt_ids == prompt         # default: prompt_for(cfg, tokenizer)
  # Same spec (TokenLayout of that tokenizer): shares the compiled step.
  no_prompt = decoder_lib.StreamingDecoder(model, codec, speaker,
                                         token_layout.TokenLayout.from_tokenizer(tok), cfg,
                                         prompt_ids=(), **kw)
  flat = np.asarray(audio[0])
  c = with_prompt.chunk_samples
  assert flat.size == len(turns) * c and [t for t, _ in turns] == list(range(len(turns)))
  slot = ex["audio_slot_mask"].astype(bool)

  def decode(decoder):
    state, outs = decoder.init_stream(1, 0), []
    for t, ids in turns:
      forced = np.zeros((1, TURN_TOKENS), np.int32)
      forced[0, :len(ids)] = ids
      state, out = decoder.step(state, flat[None, t * c:(t + 1) * c],
                                forced_tokens_bm=forced,
                                forced_len_b=np.asarray([len(ids)], np.int32))
      outs.append(jax.device_get(out))
    return state, outs

  state, outs = decode(with_prompt)
  checked = 0
  for (t, ids), o in zip(turns, outs):
    assert list(o.tokens[0, :o.n_tokens[0]]) == list(ids)
    start = int(np.nonzero((ex["chunk_index"] == t) & ~slot)[0][0])  # turn's first token
    np.testing.assert_array_equal(ex["tokens"][start:start + len(ids)], ids)
    p0 = start - 1                                  # logits that predict token 0
    np.testing.assert_allclose(o.logits[0, :len(ids)], logits[p0:p0 + len(ids)],
                               atol=1e-4, rtol=1e-4, err_msg=f"chunk {t}")
    np.testing.assert_allclose(o.values[0, :len(ids)], values[p0:p0 + len(ids)],
                               atol=1e-4, rtol=1e-4, err_msg=f"chunk {t}")
    checked += len(ids)
  n_eos = int(ex["tokens"][-1] == tokmod.EOS)
  assert checked == int((~slot[n_prompt:]).sum()) - n_eos  # every token but the <eos>
  # The cache holds the stream up to the last turn's (pending) <eot>, and it wrapped.
  last_eot = int(np.nonzero(ex["tokens"] == sampling.EOT)[0][-1])
  assert int(state.model.cache.length[0]) == last_eot > model.llm.window

  # Not vacuous: the same decoding without the prompt is off from the first token.
  _, bare = decode(no_prompt)
  for (t, ids), o, b in zip(turns[:3], outs, bare):
    assert np.abs(o.logits[0, :len(ids)] - b.logits[0, :len(ids)]).max() > 1e-2, t


def _scan_compiles() -> int:
  """Executables compiled so far by the jitted chunk scans (both donation variants)."""
  return decode_step._scan_donate._cache_size() + decode_step._scan_keep._cache_size()


@pytest.mark.xla_optimized  # runs 10,000 chunks: optimizing its one scan pays back
def test_long_stream_keeps_state_flat(decoder):
  """10,000 chunks (mostly waits, a content turn every 7th chunk) in jitted scans."""
  layout = decoder.layout
  n, reps = 2500, 4
  c = decoder.chunk_samples
  audio = np.tile((0.05 * np.random.default_rng(2).standard_normal((1, B, c))).astype(
      np.float32), (n, 1, 1))
  content = [sampling.TEXT, layout.text_offset + 3, sampling.SPEECH,
             layout.speech_offset + 1, layout.speech_offset + 2, sampling.EOT]
  forced = np.zeros((n, B, TURN_TOKENS), np.int32)
  flen = np.zeros((n, B), np.int32)                    # length 0 = wait (<eot>)
  for b in range(B):
    rows = np.arange(n)[(np.arange(n) + 3 * b) % 7 == 0]
    forced[rows, b, :len(content)] = content
    flen[rows, b] = len(content)
  state = decoder.init_stream(B, 0)
  sig0, bytes0 = decoder_lib.state_signature(state), decoder_lib.state_bytes(state)
  compiles, tokens = [], 0
  for r in range(reps):
    state, counts = decoder.scan(state, audio, None, forced, flen)
    jax.block_until_ready(state)
    compiles.append(_scan_compiles())
    tokens += np.asarray(counts["n_tokens"]).sum(0)
    assert decoder_lib.state_signature(state) == sig0
    assert decoder_lib.state_bytes(state) == bytes0
    assert np.asarray(counts["n_samples"]).sum() > 0
  spc = s2st.slots_per_chunk(decoder.cfg)
  np.testing.assert_array_equal(np.asarray(state.chunks), reps * n)
  np.testing.assert_array_equal(np.asarray(state.model.cache.length),
                                len(decoder.prompt_ids) + reps * n * spc + tokens - 1)
  for leaf in jax.tree.leaves((state.model, state.codec, state.speaker)):
    assert np.all(np.isfinite(np.asarray(leaf)))
  # Flat cost, counted rather than timed (a wall-clock bound fails on a loaded machine):
  # every scan after the first reuses the first one's executable (no recompilation as the
  # stream grows), and the state it runs on keeps its signature and size (above), so each
  # 2,500 chunks run the same fixed-shape program.
  assert compiles == [compiles[0]] * reps, compiles


def test_rows_without_audio_are_left_untouched(decoder):
  state = decoder.init_stream(B, 0)
  chunk = (0.1 * np.random.default_rng(3).standard_normal((B, decoder.chunk_samples))
           ).astype(np.float32)
  state, _ = decoder.step(state, chunk)
  before = jax.device_get(state)
  state, out = decoder.step(state, chunk, valid_b=np.asarray([True, False]))
  after = jax.device_get(state)
  assert int(out.n_tokens[1]) == 0 and int(out.n_samples[1]) == 0
  assert list(np.asarray(after.chunks)) == [2, 1]
  row1 = lambda c: [*(x[1] for x in c.k + c.v), c.slot_pos[1], c.length[1]]  # noqa: E731
  for x, y in zip(row1(before.model.cache), row1(after.model.cache)):
    np.testing.assert_array_equal(x, y)
  for x, y in zip(jax.tree.leaves((before.model.encoder, before.codec)),
                  jax.tree.leaves((after.model.encoder, after.codec))):
    if np.ndim(x):
      np.testing.assert_array_equal(np.asarray(x)[1], np.asarray(y)[1])
  assert not np.array_equal(before.model.cache.k[0][0], after.model.cache.k[0][0])


def test_bad_step_inputs_raise_clear_errors(decoder):
  state = decoder.init_stream(B, 0)
  c = decoder.chunk_samples
  with pytest.raises(ValueError, match=r"expected \[2, %d\]" % c):
    decoder.step(state, np.zeros((B, c - 1), np.float32))
  bad = np.zeros((B, c), np.float32)
  bad[1, 10] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    decoder.step(state, bad)
  with pytest.raises(ValueError, match="forced_tokens_bm"):
    decoder.step(state, np.zeros((B, c), np.float32), forced_tokens_bm=np.zeros((B, 3)))
  with pytest.raises(ValueError, match="batch"):
    decoder.init_stream(0)


def test_write_from_forces_waits_before_it_and_decodes_freely_after(decoder):
  """`iter_translate(write_from=...)` (the offline row: whole source first): the turns
  after chunks before a stream's `write_from` are exactly `<eot>`; later turns are what
  the decoder writes after that same forced history."""
  audio = _audio(decoder, 3)
  write_from = [2, 4]
  _, free = _run(decoder, audio)
  # Precondition: left alone, this random model writes before those chunks.
  assert any(free[t].n_tokens[b] > 1 for b in range(B) for t in range(write_from[b]))
  m = decoder.max_turn_tokens
  forced = np.full((N_CHUNKS, B, m), sampling.EOT, np.int32)
  lens = np.asarray([[1 if t < w else -1 for w in write_from] for t in range(N_CHUNKS)],
                    np.int32)
  _, ref = _run(decoder, audio, forced, lens)
  block = audio.transpose(1, 0, 2).reshape(B, -1)
  events = list(session_lib.iter_translate(decoder, [block], batch=B, write_from=write_from))
  assert len(events) == N_CHUNKS
  for t, ev in enumerate(events):
    for b in range(B):
      if t < write_from[b]:
        assert ref[t].n_tokens[b] == 1 and ev.text_ids[b] == [] and ev.speech_tokens[b] == 0
      else:
        assert ev.text_ids[b] == list(ref[t].text[b, :ref[t].n_text[b]])
        assert ev.speech_tokens[b] == ref[t].n_speech[b]
  with pytest.raises(ValueError, match="write_from has 1 entries for 2 streams"):
    list(session_lib.iter_translate(decoder, [block], batch=B, write_from=[1]))
