"""The live source transcript (issue #10, DESIGN §1): turns `<src> w+ [<text> ...] <eot>`.

The streaming decoder is forced (its `forced` argument: a fixed policy, the real jitted
step, speech decoded by the codec) to write, in two rows fed the same audio,

    row 0 (transcript on):  <src> a b <text> x y <speech> s s <eot> | <eot> | <src> c <eot>
    row 1 (transcript off):           <text> x y <speech> s s <eot> | <eot> | <eot>

and `session.translate_stream` must give row 0 the transcript "a b c" with per-word
emission times (chunk ends) and computation-aware ready times, keep it out of the target
text, and give both rows exactly the same target text, text ids and speech.
"""

from __future__ import annotations

import numpy as np
import pytest

from liveinterp.common import token_layout
from liveinterp.inference import decoder as decoder_lib, session
from liveinterp.inference.decode_step import EOT

N_CHUNKS = 3


class WordTokenizer:
  """Detokenization of a few known text ids (the `Detokenizer` interface of
  `data_pipelines.tokenizer.Tokenizer`: `decode_text`, `token_of`)."""

  def __init__(self, pieces: dict):
    self.pieces = pieces

  def token_of(self, i: int) -> str:
    return self.pieces[int(i)]

  def decode_text(self, ids) -> str:
    return "".join(self.pieces[int(i)] for i in ids).replace("\u2581", " ").lstrip()


class ForcedDecoder:
  """The real decoder, writing `turns[t][row]` after chunk t (teacher forcing)."""

  def __init__(self, decoder, turns):
    self.decoder, self.t = decoder, 0
    m = decoder.max_turn_tokens
    self.forced = np.full((len(turns), len(turns[0]), m), EOT, np.int32)
    self.lens = np.zeros((len(turns), len(turns[0])), np.int32)
    for t, rows in enumerate(turns):
      for r, turn in enumerate(rows):
        self.forced[t, r, :len(turn)] = turn
        self.lens[t, r] = len(turn)

  def __getattr__(self, name):
    return getattr(self.decoder, name)

  def step(self, state, chunk, valid=None, forced=None, forced_n=None):
    assert forced is None and forced_n is None
    t, self.t = self.t, self.t + 1
    return self.decoder.step(state, chunk, valid, self.forced[t], self.lens[t])


@pytest.fixture(scope="module")
def transcribed(decoder):
  layout = decoder.layout
  w = lambda k: layout.text_offset + k                                  # noqa: E731
  a, b, c, x, y = (w(k) for k in range(5))
  q = layout.num_codebooks
  speech = [layout.speech_id(k % q, 3 + k) for k in range(2 * q)]       # two frames
  SRC, TEXT, SPEECH = token_layout.SRC, token_layout.TEXT, token_layout.SPEECH
  content = [TEXT, x, y, SPEECH, *speech, EOT]
  turns = [[[SRC, a, b, *content], content],
           [[EOT], [EOT]],
           [[SRC, c, EOT], [EOT]]]
  tok = WordTokenizer({a: "\u2581a", b: "\u2581b", c: "\u2581c", x: "\u2581x",
                       y: "\u2581y"})
  rng = np.random.default_rng(0)
  src = (0.1 * rng.standard_normal(N_CHUNKS * decoder.chunk_samples)).astype(np.float32)
  audio = np.stack([src, src])
  events = []
  res = session.translate_stream(ForcedDecoder(decoder, turns), [audio], batch=2,
                                 tokenizer=tok, on_chunk=events.append)
  return res, events, (a, b, c, x, y)


def test_transcript_is_separated_from_the_translation_with_word_times(decoder, transcribed):
  (on, off), events, (a, b, c, x, y) = transcribed
  ms = decoder.chunk_ms
  assert on.source_text == "a b c"
  assert on.text == "x y" and "a" not in on.text.split()
  # Per turn: the newly heard words, their ids, the segment's emission time.
  by_chunk = {s.chunk: s for s in on.segments}
  assert sorted(by_chunk) == [0, 2]            # chunk 1 wrote nothing (a plain wait)
  assert by_chunk[0].source_text == "a b" and by_chunk[0].text == "x y"
  assert by_chunk[0].src_ids == [a, b] and by_chunk[0].text_ids == [x, y]
  assert by_chunk[2].source_text.strip() == "c" and by_chunk[2].text == ""
  assert by_chunk[2].src_ids == [c] and by_chunk[2].audio_ms == 0
  assert [s.emit_ms for s in on.segments] == [1.0 * ms, 3.0 * ms]
  # Each transcript word: its turn's emission time and computation-aware ready time
  # (chunk end + the measured compute of every step so far, the running clock).
  assert [wd["word"] for wd in on.source_words] == ["a", "b", "c"]
  assert [wd["emit_ms"] for wd in on.source_words] == [1.0 * ms, 1.0 * ms, 3.0 * ms]
  assert [wd["chunk"] for wd in on.source_words] == [0, 0, 2]
  ready = session.ReadyClock()
  expect_ready = [ready.tick((ev.chunk + 1) * ms, ev.compute_ms) for ev in events]
  assert [wd["ready_ms"] for wd in on.source_words] == [expect_ready[0]] * 2 + [
      expect_ready[2]]
  assert all(wd["ready_ms"] > wd["emit_ms"] for wd in on.source_words)
  # The chunk events carry each row's source ids too.
  assert [ev.src_ids[0] for ev in events] == [[a, b], [], [c]]
  assert [ev.source_text[1] for ev in events] == ["", "", ""]


def test_translation_is_the_same_with_the_transcript_on_and_off(transcribed):
  (on, off), _, _ = transcribed
  assert off.source_text == "" and off.source_words == []
  assert all(s.source_text == "" and s.src_ids == [] for s in off.segments)
  assert on.text == off.text == "x y"
  assert on.speech.size > 0
  np.testing.assert_array_equal(on.speech, off.speech)    # same speech ids, same audio
  np.testing.assert_array_equal(on.timeline(), off.timeline())
  speaking = lambda r: [(s.chunk, s.emit_ms, s.text, s.text_ids, s.speech_tokens,  # noqa
                         s.audio_ms, s.play_start_ms, s.play_end_ms)
                        for s in r.segments if s.text or s.audio_ms]
  assert speaking(on) == speaking(off)


def test_json_carries_the_transcript(transcribed):
  (on, off), _, _ = transcribed
  j = on.as_json()
  assert j["source_text"] == "a b c" and j["text"] == "x y"
  assert [wd["word"] for wd in j["source_words"]] == ["a", "b", "c"]
  assert [s["source_text"].strip() for s in j["segments"]] == ["a b", "c"]
  assert {"emit_ms", "ready_ms"} <= set(j["source_words"][0])
  assert off.as_json()["source_words"] == [] and off.as_json()["source_text"] == ""


def test_transcript_words():
  assert session.transcript_words(" hello, world") == ["hello,", "world"]
  assert session.transcript_words("你好，世界") == ["你", "好", "世", "界"]
  assert session.transcript_words(" [12] [13]") == ["[12]", "[13]"]
  assert session.transcript_words(" . ") == []


def test_decoder_grammar_follows_data_src_transcript(cfg, models):
  """`allow_src` defaults to the config (what the model was trained to write)."""
  model, codec, speaker = models
  layout = token_layout.TokenLayout.from_config(cfg)
  make = lambda c, **kw: decoder_lib.StreamingDecoder(  # noqa: E731
      model, codec, speaker, layout, c, max_turn_tokens=16,
      speaker_window_ms=cfg.stream.chunk_ms, **kw)
  assert make(cfg).spec.grammar.allow_src is False
  on = cfg.copy_and_resolve_references()
  on.data.src_transcript = True
  assert make(on).spec.grammar.allow_src is True
  assert make(on, allow_src=False).spec.grammar.allow_src is False
