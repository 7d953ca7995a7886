"""Voice span (issue #10): a turn is voiced from the source audio its words were spoken in.

The speaker window of `speaker_samples` ends `d = voice_lag_chunks` chunks before the
chunk whose turn speaks (`liveinterp.inference.decode_step` docstring). A synthetic
two-speaker stream (speaker A: low noise; speaker B: a loud chirp) through the micro
decoder with random weights and forced turns: the embedding a turn is voiced with
(`StepOutputs.speaker`) must be `embed_audio` of the window the rule names, computed
directly from the same audio; d = 0 must be the rule before the span; the state must
keep one shape (no recompiles) and rows must not see each other.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import decode_step
from liveinterp.inference import decoder as decoder_lib
from liveinterp.inference import sampling

B = 2
N_CHUNKS = 8
CHANGE = 4          # speaker B starts at chunk 4 (row 0) / chunk 5 (row 1)
TURN_TOKENS = 8
WINDOW_CHUNKS = 2   # speaker window = 2 chunks
LAG = 2


def _decoder(cfg, models, lag, donate=False):
  model, codec, speaker = models
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_config(cfg), cfg,
      temperature=0.0, grammar=True, max_turn_tokens=TURN_TOKENS,
      speaker_window_ms=WINDOW_CHUNKS * cfg.stream.chunk_ms, codec_blocks=(),
      voice_lag_chunks=lag, prompt_ids=(), donate=donate)


@pytest.fixture(scope="module")
def decoders(cfg, models):
  return {d: _decoder(cfg, models, d) for d in (0, LAG)}


def _two_speaker_audio(c: int) -> np.ndarray:
  """[N, B, C]: each row speaks as A (noise), then as B (chirp) from its change chunk."""
  rng = np.random.default_rng(0)
  t = np.arange(N_CHUNKS * c) / 16000.0
  a = 0.03 * rng.standard_normal(N_CHUNKS * c)
  b = 0.5 * np.sin(2 * np.pi * (300 + 900 * t) * t) + 0.01 * rng.standard_normal(t.size)
  rows = []
  for r, change in enumerate((CHANGE, CHANGE + 1)):
    x = np.where(np.arange(t.size) < change * c, a * (1 + 0.5 * r), b)
    rows.append(x)
  return np.stack(rows).astype(np.float32).reshape(B, N_CHUNKS, c).transpose(1, 0, 2)


def _speaking_turn(layout) -> list[int]:
  q = layout.num_codebooks
  frames = [int(layout.speech_id(k, 3 + f)) for f in range(2) for k in range(q)]
  return [sampling.TEXT, layout.text_offset + 4, sampling.SPEECH, *frames, sampling.EOT]


def _forced(layout, speak_nb: np.ndarray):
  """Forced turns: a speaking turn where `speak_nb`, else a wait (`<eot>`)."""
  turn = _speaking_turn(layout)
  forced = np.zeros(speak_nb.shape + (TURN_TOKENS,), np.int32)
  flen = np.zeros(speak_nb.shape, np.int32)
  forced[speak_nb, :len(turn)] = turn
  flen[speak_nb] = len(turn)
  return forced, flen


def _run_steps(dec, audio, speak_nb, valid_nb=None):
  forced, flen = _forced(dec.layout, speak_nb)
  state = dec.init_stream(B, 0)
  sig0 = decoder_lib.state_signature(state)
  outs = []
  for t in range(audio.shape[0]):
    valid = None if valid_nb is None else valid_nb[t]
    state, out = dec.step(state, audio[t], valid, forced[t], flen[t])
    assert decoder_lib.state_signature(state) == sig0      # nothing grew
    outs.append(jax.device_get(out))
  return state, outs


_EMBED = {}


def _embed(speaker, window_bn: np.ndarray, mask_bn: np.ndarray) -> np.ndarray:
  """`embed_audio` of explicit windows (jitted once per speaker encoder)."""
  from flax import nnx
  if id(speaker) not in _EMBED:
    g, p = nnx.split(speaker)
    fn = jax.jit(lambda p, a, m: nnx.merge(g, p).embed_audio(a, m))
    _EMBED[id(speaker)] = lambda a, m: fn(p, a, m)
  return np.asarray(_EMBED[id(speaker)](jnp.asarray(window_bn), jnp.asarray(mask_bn)))


def _expected(speaker, heard_b: list[np.ndarray], n_win: int, lag_samples: int):
  """The rule from first principles: row b has heard `heard_b[b]` (its valid chunks, in
  order); the window is the `n_win` samples ending `min(lag, heard - n_win)` (>= 0)
  before the newest, masked where it precedes the stream."""
  wins, masks = [], []
  for x in heard_b:
    lag = int(np.clip(x.size - n_win, 0, lag_samples))
    end = x.size - lag
    seg = x[max(0, end - n_win):end]
    win = np.zeros(n_win, np.float32)
    mask = np.zeros(n_win, bool)
    win[n_win - seg.size:], mask[n_win - seg.size:] = seg, True
    wins.append(win)
    masks.append(mask)
  return _embed(speaker, np.stack(wins), np.stack(masks))


def test_turn_after_speaker_change_is_voiced_from_the_pre_change_window(decoders, models,
                                                                        cfg):
  """Row 0 speaks at every chunk; the turn written d chunks after its speaker change is
  voiced from the pre-change window (speaker A), the d = 0 decoder from B's audio."""
  speaker = models[2]
  dec = decoders[LAG]
  c, n_win = dec.chunk_samples, dec.spec.speaker_samples
  assert n_win == WINDOW_CHUNKS * c
  assert dec.spec.speaker_buffer_samples == n_win + LAG * c
  audio = _two_speaker_audio(c)
  speak = np.ones((N_CHUNKS, B), bool)
  _, outs = _run_steps(dec, audio, speak)
  _, outs0 = _run_steps(decoders[0], audio, speak)
  stream = audio.transpose(1, 0, 2).reshape(B, -1)
  for t in range(N_CHUNKS):
    heard = [stream[b, :(t + 1) * c] for b in range(B)]
    for d, o in ((LAG, outs[t]), (0, outs0[t])):
      assert np.all(o.n_speech > 0), (d, t)                      # the turn speaks
      np.testing.assert_allclose(o.speaker, _expected(speaker, heard, n_win, d * c),
                                 atol=1e-5, rtol=1e-5, err_msg=f"d={d} chunk {t}")
  # Row 0, turn written at chunk CHANGE + d - 1 (d chunks after the change: chunks
  # CHANGE..CHANGE+d-1 are B's): voiced from chunks CHANGE-2..CHANGE-1, all speaker A.
  n = CHANGE + LAG - 1
  pre = stream[:1, (CHANGE - WINDOW_CHUNKS) * c:CHANGE * c]
  np.testing.assert_allclose(outs[n].speaker[:1], _embed(speaker, pre, np.ones_like(pre, bool)),
                             atol=1e-5, rtol=1e-5)
  post = stream[:1, (n + 1 - WINDOW_CHUNKS) * c:(n + 1) * c]                # d = 0: B
  np.testing.assert_allclose(outs0[n].speaker[:1], _embed(speaker, post, np.ones_like(post, bool)),
                             atol=1e-5, rtol=1e-5)
  assert not np.allclose(outs[n].speaker[0], outs0[n].speaker[0], atol=1e-3)
  # Stream start: until a full window is heard the lag is 0 (same embedding as d = 0).
  for t in range(WINDOW_CHUNKS):
    np.testing.assert_array_equal(outs[t].speaker, outs0[t].speaker)


def test_d0_is_the_rule_before_the_span(decoders, models):
  """d = 0: the buffer is the window (no slice), the mask marks its last `fill` samples,
  bit for bit the embedding of the last `speaker_samples` source samples."""
  dec = decoders[0]
  c, n_win = dec.chunk_samples, dec.spec.speaker_samples
  assert dec.spec.speaker_buffer_samples == n_win
  audio = _two_speaker_audio(c)
  speak = np.zeros((N_CHUNKS, B), bool)
  speak[[0, 3, 5], :] = True
  state, outs = _run_steps(dec, audio, speak)
  stream = audio.transpose(1, 0, 2).reshape(B, -1)
  np.testing.assert_array_equal(np.asarray(state.speaker_audio), stream[:, -n_win:])
  np.testing.assert_array_equal(np.asarray(state.speaker_fill), [n_win, n_win])
  for t in range(N_CHUNKS):
    if speak[t, 0]:   # the embedding of [zeros, heard][-n_win:], masked before the stream
      heard = stream[:, :(t + 1) * c]
      win = np.concatenate([np.zeros((B, n_win), np.float32), heard], 1)[:, -n_win:]
      mask = np.arange(n_win)[None] >= n_win - min(heard.shape[1], n_win)
      np.testing.assert_array_equal(outs[t].speaker,
                                    _embed(models[2], win, np.broadcast_to(mask, win.shape)))
    else:            # waits keep the last embedding
      np.testing.assert_array_equal(outs[t].speaker, outs[t - 1].speaker)


def test_rows_are_independent_with_valid_masks(decoders, models):
  """Row 1 skips chunks (valid=False): its window is made of its own valid chunks only,
  and row 0's embedding is what it is when row 1 is absent from every step."""
  dec = decoders[LAG]
  c, n_win = dec.chunk_samples, dec.spec.speaker_samples
  audio = _two_speaker_audio(c)
  valid = np.ones((N_CHUNKS, B), bool)
  valid[[1, 4, 5], 1] = False
  speak = np.ones((N_CHUNKS, B), bool)
  _, outs = _run_steps(dec, audio, speak, valid)
  _, solo = _run_steps(dec, audio, speak, np.stack([valid[:, 0], np.zeros(N_CHUNKS, bool)], 1))
  for t in range(N_CHUNKS):
    heard = [audio[:t + 1, b][valid[:t + 1, b]].reshape(-1) for b in range(B)]
    exp = _expected(models[2], heard, n_win, LAG * c)
    np.testing.assert_allclose(outs[t].speaker[0], exp[0], atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(solo[t].speaker[0], outs[t].speaker[0], atol=1e-6, rtol=1e-6)
    if valid[t, 1]:
      np.testing.assert_allclose(outs[t].speaker[1], exp[1], atol=1e-5, rtol=1e-5,
                                 err_msg=f"row 1 chunk {t}")


def test_scan_equals_steps_and_compiles_once(cfg, models):
  """The lagged decoder: N steps == one scan of N chunks (same embeddings); repeated
  streams compile nothing new and keep one state signature."""
  dec = _decoder(cfg, models, LAG, donate=False)
  c = dec.chunk_samples
  audio = _two_speaker_audio(c)
  speak = np.zeros((N_CHUNKS, B), bool)
  speak[1::2, 0] = True
  speak[2::3, 1] = True
  forced, flen = _forced(dec.layout, speak)
  _, outs = _run_steps(dec, audio, speak)
  state0 = dec.init_stream(B, 0)
  sig = decoder_lib.state_signature(state0)
  state, sc = dec.scan(state0, audio, None, forced, flen, keep_outputs=True)
  for t in range(N_CHUNKS):
    np.testing.assert_allclose(np.asarray(sc.speaker[t]), outs[t].speaker, atol=1e-6,
                               rtol=1e-6)
  assert decoder_lib.state_signature(state) == sig
  before = (decode_step._step_keep._cache_size(), decode_step._scan_keep._cache_size())
  for _ in range(2):                 # more streams and chunks: no new executable
    st = dec.init_stream(B, 1)
    for t in range(3):
      st, _ = dec.step(st, audio[t], None, forced[t], flen[t])
    st, _ = dec.scan(st, audio, None, forced, flen, keep_outputs=True)
    assert decoder_lib.state_signature(st) == sig
  assert (decode_step._step_keep._cache_size(), decode_step._scan_keep._cache_size()) == before


def test_bad_voice_lag_names_the_field(cfg, models):
  for bad in (-1, 1.5, True):
    with pytest.raises(ValueError, match="stream.voice_lag_chunks"):
      _decoder(cfg, models, bad)
