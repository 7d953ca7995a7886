"""espeak-ng synthesis: 16 kHz int16 speech, word times, speakers, padding/noise."""

import numpy as np
import pytest

from data_pipelines import speakers, synthesis
from data_pipelines.text_cleaning import tokenize_words

EN = "The weather is very nice today and we are going to the park."
ZH = "今天天气很好，我们去公园散步吧。"


def _f0(audio, sr=16000):
  """Median F0 (Hz) of voiced 40 ms frames by autocorrelation."""
  x = audio.astype(np.float64) / 32768.0
  out = []
  for i in range(0, len(x) - 640, 160):
    fr = x[i:i + 640] - x[i:i + 640].mean()
    if np.sqrt(np.mean(fr ** 2)) < 0.02:
      continue
    ac = np.correlate(fr, fr, "full")[639:]
    lo, hi = sr // 500, sr // 60
    k = lo + int(np.argmax(ac[lo:hi]))
    if ac[k] > 0.3 * ac[0]:
      out.append(sr / k)
  return float(np.median(out))


@pytest.mark.parametrize("lang,text", [("en", EN), ("zh", ZH), ("es", "¿Dónde está la "
                                        "biblioteca de la ciudad?"),
                                       ("de", "Er hat keinen Funken Anstand.")])
def test_audio_and_word_times(lang, text):
  utt = synthesis.synthesize(text, lang, speakers.SPEAKERS[3])
  assert utt.sample_rate == 16000 and utt.audio.dtype == np.int16
  assert utt.audio.ndim == 1 and len(utt.audio) > 8000
  assert np.abs(utt.audio).max() > 3000  # not silent
  words, start, end = synthesis.word_times(text, lang, utt)
  assert words == [w.text for w in tokenize_words(text, lang)]
  assert start.dtype == end.dtype == np.float32 and len(start) == len(words)
  assert np.all(np.diff(start) >= 0) and np.all(end >= start)
  assert np.all(end[:-1] == start[1:])  # a word ends where the next begins
  assert start[0] >= 0 and end[-1] <= utt.duration_ms
  assert end[-1] == pytest.approx(utt.speech_end_ms)
  # times follow the speech: the last word starts in its second half
  assert start[-1] > 0.5 * utt.speech_end_ms


def test_mandarin_units_are_characters_and_merge_to_words():
  utt = synthesis.synthesize(ZH, "zh", speakers.SPEAKERS[0])
  assert all(len(u) <= 2 for u in utt.units) and len(utt.units) >= 10
  assert np.all(np.diff(utt.unit_start_ms) >= 0)
  words = tokenize_words(ZH, "zh")
  start, end = synthesis.merge_units_to_words(ZH, words, utt.unit_char_start,
                                              utt.unit_start_ms, utt.speech_start_ms,
                                              utt.speech_end_ms)
  # a multi-character word starts at its first character's unit
  for w, s in zip(words, start):
    first = [t for c, t in zip(utt.unit_char_start, utt.unit_start_ms) if c == w.start]
    if first:
      assert s == pytest.approx(first[0])


def test_merge_interpolates_words_without_units():
  text = "aa bb cc dd"
  words = tokenize_words(text, "en")
  # espeak gave events only for "aa" and "dd"
  start, end = synthesis.merge_units_to_words(text, words, np.array([0, 9]),
                                              np.array([100.0, 700.0]), 50.0, 900.0)
  np.testing.assert_allclose(start, [100, 300, 500, 700])
  np.testing.assert_allclose(end, [300, 500, 700, 900])


def test_same_speaker_same_voice_across_languages_and_speakers_differ():
  low, high = speakers.get_speaker("spk00"), speakers.get_speaker("spk08")
  assert low.voice_name("zh") == "cmn+m1" and low.voice_name("en") == "en-us+m1"
  f = {(s.name, lang): _f0(synthesis.synthesize(t, lang, s).audio)
       for s in (low, high) for lang, t in (("en", EN), ("zh", ZH))}
  for s in (low, high):  # one speaker: same pitch in both languages (within 20 %)
    a, b = f[(s.name, "en")], f[(s.name, "zh")]
    assert abs(a - b) / max(a, b) < 0.2
  assert min(f[("spk08", "en")], f[("spk08", "zh")]) > 1.5 * max(f[("spk00", "en")],
                                                                  f[("spk00", "zh")])


def test_speaker_table():
  assert len(speakers.SPEAKERS) >= 16
  assert len({(s.variant, s.pitch, s.rate, s.pitch_range) for s in speakers.SPEAKERS}) \
      == len(speakers.SPEAKERS)
  assert speakers.speaker_for("hsk:1", 0) == speakers.speaker_for("hsk:1", 0)
  assert len({speakers.speaker_for(f"x{i}").name for i in range(200)}) == \
      len(speakers.SPEAKERS)
  with pytest.raises(ValueError, match="xx"):
    speakers.SPEAKERS[0].voice_name("xx")


def test_padding_and_noise_are_seeded_and_shift_times():
  cfg = synthesis.SynthesisConfig(lead_silence_ms=(300, 600), trail_silence_ms=(500, 800),
                                  noise_segment_prob=1.0)
  spk = speakers.SPEAKERS[5]
  plain = synthesis.synthesize(EN, "en", spk)
  a = synthesis.synthesize(EN, "en", spk, cfg, np.random.default_rng(1))
  b = synthesis.synthesize(EN, "en", spk, cfg, np.random.default_rng(1))
  # same rng → same padding and noise (espeak itself may vary by a few samples)
  assert a.lead_ms == b.lead_ms and abs(len(a.audio) - len(b.audio)) < 100
  np.testing.assert_allclose(a.noise_segments_ms, b.noise_segments_ms, atol=10.0)
  assert 300 <= a.lead_ms <= 600
  np.testing.assert_allclose(a.unit_start_ms, plain.unit_start_ms + a.lead_ms, atol=5.0)
  assert len(a.noise_segments_ms) == 1
  s, e = a.noise_segments_ms[0]
  assert e <= a.speech_start_ms or s >= a.speech_end_ms  # noise outside the speech
  seg = a.audio[int(s * 16):int(e * 16)].astype(np.float64)
  assert np.sqrt(np.mean(seg ** 2)) > 100  # audible burst
  assert a.duration_ms > plain.duration_ms + 800


def test_bad_input_raises_naming_it():
  with pytest.raises(synthesis.SynthesisError, match="empty text"):
    synthesis.synthesize("   ", "en", speakers.SPEAKERS[0])
  with pytest.raises(ValueError, match="xx"):
    synthesis.synthesize("hello", "xx", speakers.SPEAKERS[0])


def test_measure_speed_renders_each_text_once_on_one_engine(monkeypatch):
  """Counted, not timed (a "> 20x real time" bound fails on a loaded machine): five texts
  are five espeak renders on the one process-wide engine (no re-initialisation, no
  per-word calls), and the reported rate is the rendered audio over the wall time."""
  engine = synthesis._engine()
  calls = []
  render = engine.synth
  monkeypatch.setattr(engine, "synth", lambda text, *a: calls.append(text) or render(text, *a))
  r = synthesis.measure_speed([EN] * 5, "en", speakers.SPEAKERS[1])
  assert calls == [EN] * 5
  assert synthesis._engine() is engine
  one = synthesis.synthesize(EN, "en", speakers.SPEAKERS[1]).duration_ms / 1000.0
  assert r["audio_s"] == pytest.approx(5 * one)
  assert r["wall_s"] > 0 and r["x_real_time"] == pytest.approx(r["audio_s"] / r["wall_s"])
