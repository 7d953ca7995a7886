"""Bad or unusual input: silence, NaN, other rates, stereo, empty and corrupt files."""

import numpy as np
import pytest
import soundfile as sf

from liveinterp.inference import audio_io, session as session_lib


def _tone(rate, seconds, freq=440.0):
  t = np.arange(int(rate * seconds)) / rate
  return np.sin(2 * np.pi * freq * t).astype(np.float32)


def _peak_hz(x, rate):
  spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
  return np.fft.rfftfreq(x.size, 1 / rate)[spec.argmax()]


def test_stereo_44k_is_converted_to_mono_16k(tmp_path):
  path = str(tmp_path / "stereo.wav")
  left, right = 0.5 * _tone(44100, 0.5), 0.1 * _tone(44100, 0.5)
  sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
  x = audio_io.read_audio(path, 16000)
  assert x.dtype == np.float32 and x.ndim == 1
  assert abs(x.size - 8000) <= 2
  assert abs(_peak_hz(x, 16000) - 440.0) < 5.0
  # mono = mean of the channels: amplitude (0.5 + 0.1) / 2
  np.testing.assert_allclose(np.abs(x[400:-400]).max(), 0.3, atol=0.01)


def test_8k_int_wav_is_upsampled(tmp_path):
  path = str(tmp_path / "low.wav")
  sf.write(path, (0.4 * _tone(8000, 0.25, 300.0) * 32767).astype(np.int16), 8000)
  x = audio_io.read_audio(path, 16000)
  assert abs(x.size - 4000) <= 2 and abs(_peak_hz(x, 16000) - 300.0) < 5.0


def test_empty_corrupt_nan_and_missing_files_name_the_file(tmp_path):
  empty = tmp_path / "empty.wav"
  empty.write_bytes(b"")
  with pytest.raises(audio_io.AudioError, match="empty.wav.*empty file"):
    audio_io.read_audio(str(empty))
  no_frames = str(tmp_path / "noframes.wav")
  sf.write(no_frames, np.zeros((0, 1), np.float32), 16000)
  with pytest.raises(audio_io.AudioError, match="noframes.wav.*no audio samples"):
    audio_io.read_audio(no_frames)
  corrupt = tmp_path / "corrupt.wav"
  corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
  with pytest.raises(audio_io.AudioError, match="corrupt.wav.*cannot decode"):
    audio_io.read_audio(str(corrupt))
  nan = str(tmp_path / "nan.wav")
  x = _tone(16000, 0.1)
  x[100:103] = np.nan
  sf.write(nan, x, 16000, subtype="FLOAT")
  with pytest.raises(audio_io.AudioError, match="nan.wav.*3 non-finite"):
    audio_io.read_audio(nan)
  with pytest.raises(FileNotFoundError, match="missing.wav"):
    audio_io.read_audio(str(tmp_path / "missing.wav"))


def test_write_round_trip_clips(tmp_path):
  path = str(tmp_path / "out" / "o.wav")
  audio_io.write_audio(path, np.asarray([0.0, 0.5, 2.0, -3.0], np.float32))
  y, rate = sf.read(path, dtype="float32")
  assert rate == 16000
  np.testing.assert_allclose(y, [0.0, 0.5, 1.0, -1.0], atol=1e-4)
  with pytest.raises(audio_io.AudioError, match="non-finite"):
    audio_io.write_audio(path, np.asarray([np.nan]))


def test_silence_and_ragged_batch_give_finite_results(decoder):
  """Two silent streams of different lengths through the host driver."""
  sr = decoder.sample_rate
  waves = [np.zeros(int(1.0 * sr), np.float32), np.zeros(int(0.45 * sr), np.float32)]
  results = session_lib.translate_waveforms(decoder, waves)
  c_ms = decoder.chunk_ms
  for res, w in zip(results, waves):
    n_chunks = -(-w.size // decoder.chunk_samples)
    assert res.source_ms == n_chunks * c_ms
    assert len(res.compute_ms) == n_chunks
    assert np.all(np.isfinite(res.speech))
    assert res.rtf > 0
    for seg in res.segments:
      assert seg.emit_ms % c_ms == 0 and seg.emit_ms <= res.source_ms
      assert seg.ready_ms >= seg.emit_ms
      assert seg.play_start_ms >= seg.emit_ms and seg.play_end_ms >= seg.play_start_ms
    timeline = res.timeline()
    assert np.all(np.isfinite(timeline)) and timeline.size >= res.source_ms * sr / 1000
  assert results[1].source_ms < results[0].source_ms


def test_nan_audio_block_raises(decoder):
  x = np.zeros((2, decoder.chunk_samples), np.float32)
  x[0, 5] = np.inf
  with pytest.raises(ValueError, match="audio block.*non-finite"):
    session_lib.translate_stream(decoder, [x])
  with pytest.raises(ValueError, match="waveform 1 is empty"):
    session_lib.translate_waveforms(decoder, [np.zeros(10), np.zeros(0)])


def test_detokenizer_joins_turns_with_word_gaps():
  from data_pipelines import tokenizer as tok_lib
  texts = ["the cat sat on the mat", "a dog ran in the park", "hello world again"] * 20
  tok = tok_lib.Tokenizer.train(texts, None, text_vocab_size=64, num_codebooks=1,
                                codebook_size=8, llm_vocab_size=128)
  ids = tok.encode_text("the cat sat on the mat")
  cut = next(i for i in range(1, len(ids)) if tok.token_of(ids[i]).startswith("\u2581"))
  detok = session_lib.Detokenizer(tok)
  first = detok(ids[:cut])
  text = first + detok(ids[cut:], previous=bool(first))
  assert text == "the cat sat on the mat"
  assert detok([]) == ""
  # Without a sentencepiece model the ids are shown as such.
  assert session_lib.Detokenizer()([40, 41], previous=True) == " [40] [41]"


def test_rechunking_pads_and_masks_ragged_rows():
  block = np.arange(2 * 25, dtype=np.float32).reshape(2, 25) + 1
  chunks = list(session_lib._chunks_of([(block[:, :12], [12, 7]), block[:, 12:]], 2, 10))
  assert len(chunks) == 3                                    # 25 samples -> 3 chunks of 10
  np.testing.assert_array_equal(chunks[0][0][0], block[0, :10])
  np.testing.assert_array_equal(chunks[0][0][1], np.r_[block[1, :7], 0, 0, 0])
  assert chunks[0][1].tolist() == [True, True] and chunks[1][1].tolist() == [True, False]
  np.testing.assert_array_equal(chunks[2][0][0], np.r_[block[0, 20:], np.zeros(5)])
