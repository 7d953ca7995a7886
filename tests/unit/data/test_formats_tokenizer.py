"""Tokenizer: reserved ids, text round trip, speech range, vocab fit, save/load."""

import numpy as np
import pytest

from configs import base as base_cfg
from data_pipelines import tokenizer as tokmod
from data_pipelines.tokenizer import Tokenizer, TokenizerError
from liveinterp.common.config import NUM_SPECIAL_TOKENS

ZH = ["我们今天很好", "你是中国人吗", "他说明天来上海", "这个时间可以", "我要说中文"]
EN = ["we are very good today", "are you chinese", "he says he comes to shanghai tomorrow",
      "this time is fine", "i want to speak chinese"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  prefix = str(tmp_path_factory.mktemp("tok") / "zh_en")
  return Tokenizer.train(ZH * 4 + EN * 4, prefix, text_vocab_size=200, num_codebooks=2,
                         codebook_size=64, llm_vocab_size=400), prefix


def test_reserved_control_ids(tok):
  t, _ = tok
  assert len(tokmod.CONTROL_TOKENS) == NUM_SPECIAL_TOKENS == 32
  expect = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<text>": 3, "<speech>": 4, "<eot>": 5,
            "<src>": 6, "<audio>": 7, "<asr>": 8, "<st>": 9, "<tts>": 10, "<s2st>": 11,
            "<simul>": 12, "<zh>": 13, "<en>": 14, "<es>": 15, "<de>": 16}
  for name, i in expect.items():
    assert t.id_of(name) == i and t.token_of(i) == name
  assert t.lang_id("zh-CN") == 13 and t.lang_id("en") == 14
  assert t.task_id("simul") == 12
  # Text ids start right after the control block; no text id is control or speech.
  ids = t.encode_text(" ".join(EN) + "".join(ZH))
  assert min(ids) >= NUM_SPECIAL_TOKENS
  assert np.all(t.is_text(ids)) and not np.any(t.is_speech(ids) | t.is_control(ids))
  assert t.num_pieces <= 200


def test_text_round_trip(tok):
  t, _ = tok
  for s in ZH + EN:
    assert t.decode_text(t.encode_text(s)) == s
  mixed = [tokmod.BOS, tokmod.TEXT] + t.encode_text("we are good") + [
      t.speech_token_id(1, 5), tokmod.EOT]
  assert t.decode_text(mixed) == "we are good"  # control + speech ids are dropped


def test_speech_range(tok):
  t, _ = tok
  assert t.speech_offset == 32 + 200
  assert t.speech_token_id(0, 0) == 232 and t.speech_token_id(1, 63) == 232 + 127
  assert t.used_vocab_size == 232 + 128
  assert t.speech_code(t.speech_token_id(1, 7)) == (1, 7)
  codes = np.array([[1, 2], [63, 0], [5, 5]])
  ids = t.speech_ids(codes)
  assert ids.tolist() == [233, 298, 295, 296, 237, 301]  # frame-major, codebook inner
  assert np.all(t.is_speech(ids)) and not np.any(t.is_text(ids))
  np.testing.assert_array_equal(t.speech_codes(ids), codes)
  with pytest.raises(ValueError, match="codebook=2"):
    t.speech_token_id(2, 0)
  with pytest.raises(ValueError, match="code=64"):
    t.speech_token_id(0, 64)
  with pytest.raises(ValueError, match="outside"):
    t.speech_ids(np.array([[0, 64]]))


def test_fits_vocab_and_clear_error():
  c = base_cfg.get_config()
  need = tokmod.check_fits(c.tokenizer.text_vocab_size, c.codec.num_codebooks,
                           c.codec.codebook_size, c.llm.vocab_size)
  assert need == 32 + 2048 + 256 <= c.llm.vocab_size
  with pytest.raises(TokenizerError, match=r"needs 352 ids.*llm.vocab_size=300"):
    tokmod.check_fits(256, 1, 64, 300)
  with pytest.raises(TokenizerError, match="llm.vocab_size=100"):
    Tokenizer.train(EN, None, text_vocab_size=64, num_codebooks=1, codebook_size=64,
                    llm_vocab_size=100)


def test_save_load_same_ids(tok, tmp_path):
  t, prefix = tok
  t2 = Tokenizer.load(prefix + ".model")
  for s in ZH + EN:
    assert t2.encode_text(s) == t.encode_text(s)
  assert (t2.speech_offset, t2.used_vocab_size) == (t.speech_offset, t.used_vocab_size)
  with pytest.raises(TokenizerError, match="does not exist"):
    Tokenizer.load(str(tmp_path / "missing"))


def test_small_vocab_with_many_chinese_characters():
  # 300 distinct hanzi but only 64 text ids: rare characters are left out of training
  # (they encode as <unk>) instead of sentencepiece failing.
  chars = [chr(0x4E00 + i) for i in range(300)]
  texts = ["".join(chars[(i * 7 + j) % 300] for j in range(10)) for i in range(60)]
  t = Tokenizer.train(texts + EN * 30, None, text_vocab_size=64, num_codebooks=1,
                      codebook_size=8, llm_vocab_size=128)
  assert t.num_pieces <= 64
  assert t.decode_text(t.encode_text("we are good")) == "we are good"
  assert t.encode_text(chars[299])[-1] == t.text_offset  # <unk> is sentencepiece id 0
