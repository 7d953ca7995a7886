"""Every drop of a training pipeline counted by reason (issue #12): format errors,
`max_audio_slots`, codec utterances without a second one of their speaker; counted in
this process (worker_count 0) or carried back from grain worker processes; reported in
the stage's result (`data_drops`) and as one line when the stage ends."""

import copy
import json
import os

import numpy as np
import pytest

from configs import micro
from data_pipelines import pipelines as pl
from data_pipelines import stream_format as sfmt
from data_pipelines.tokenizer import Tokenizer
from tests.unit.data import test_formats_fixtures as fx


@pytest.fixture(scope="module")
def recs():
  rng = np.random.default_rng(3)
  return [fx.make_record(rng, i, "zh", "en", "train") for i in range(4)]


@pytest.fixture(scope="module")
def tok(recs):
  texts = [t for r in recs for t in (r["src_text"], r["tgt_text"])] * 3
  return Tokenizer.train(texts, None, text_vocab_size=64, num_codebooks=2, codebook_size=16,
                         llm_vocab_size=256)


def _cfg(seq_len=128):
  c = micro.get_config("sft")
  c.data.seq_len = seq_len
  return c


def _no_ready_times(rec):
  r = copy.deepcopy(rec)
  r["id"] = "bad-ready"
  r["tgt_ready_ms"] = np.full_like(r["tgt_ready_ms"], -1.0)
  return r


def _text_too_long(rec, n=400):
  """Hundreds of target words ready at the end of a short clip: the last turn alone is
  longer than seq_len (and any task's text is)."""
  r = copy.deepcopy(rec)
  r["id"] = "bad-long-text"
  words = (list(r["tgt_words"]) * n)[:n]
  r["tgt_words"], r["tgt_text"] = words, " ".join(words)
  r["src_text"] = "".join((list(r["src_words"]) * n)[:n])
  end = float(len(r["src_audio"]) / 16.0)
  r["tgt_ready_ms"] = np.full((n,), end, np.float32)
  tgt_end = float(len(r["tgt_audio"]) / 16.0)  # word times inside the target audio
  r["tgt_word_start_ms"] = np.linspace(0, tgt_end - 1, n, dtype=np.float32)
  r["tgt_word_end_ms"] = r["tgt_word_start_ms"] + 1
  return r


def _long_audio(rec, factor=3):
  r = copy.deepcopy(rec)
  r["id"] = "bad-many-slots"
  r["src_audio"] = np.tile(r["src_audio"], factor)
  return r


def _run(source, tok, stage="sft", worker_count=0, **kw):
  drops = pl.DropCounts()
  ds = pl.stream_dataset(source, _cfg(), tok, stage, batch_size=1, num_epochs=1,
                         shuffle=False, packing=False, shard=pl.shard_options(0, 1),
                         drops=drops, read_threads=1, worker_count=worker_count, **kw)
  rows = list(ds)
  return rows, drops


def _slots(rec, tok):
  sp = sfmt.StreamSpec.from_config(_cfg())
  return sfmt.simul_example(rec, tok, sp)["audio"].shape[0]


def test_sft_drops_counted_by_reason(recs, tok):
  good = recs
  max_slots = max(_slots(r, tok) for r in good)
  long_audio = _long_audio(good[0])
  assert _slots(long_audio, tok) > max_slots
  source = [good[0], _no_ready_times(good[1]), _text_too_long(good[2]), long_audio,
            _no_ready_times(good[3]), good[1], good[2], good[3]]
  rows, drops = _run(source, tok, max_audio_slots=max_slots)
  assert dict(drops) == {"format:no_ready_times": 2, "format:turn_too_long": 1,
                         "max_audio_slots": 1}
  assert len(rows) == 4
  assert all(pl.DROPS_FIELD not in b for b in rows)  # in-process: nothing carried
  assert drops.summary("training data") == (
      "training data: dropped 4 examples: format:no_ready_times 2, "
      "format:turn_too_long 1, max_audio_slots 1")
  json.dumps({"data_drops": drops})  # the result holds it as a plain dict


def test_pretrain_drops_counted_by_reason(recs, tok):
  source = [recs[0], _text_too_long(recs[1]), recs[2]]
  rows, drops = _run(source, tok, "pretrain", task_weights={"asr": 1.0, "st": 1.0})
  assert dict(drops) == {"format:too_long": 1} and len(rows) == 2


def test_unknown_format_reason_is_counted_as_other():
  assert pl.format_drop_reason(sfmt.FormatError("x", reason="new_thing")) == "format:other"
  assert pl.format_drop_reason(sfmt.FormatError("x", reason="too_long")) == "format:too_long"
  assert set(pl.DROP_REASONS) >= {f"format:{r}" for r in sfmt.FORMAT_REASONS}


def test_drops_come_back_from_worker_processes(recs, tok):
  from absl import flags
  flags.FLAGS.mark_as_parsed()
  max_slots = max(_slots(r, tok) for r in recs)
  # the bad records come before good ones: a worker's counts travel with its next example
  source = [_no_ready_times(recs[1]), _long_audio(recs[0]), recs[0], recs[1],
            _text_too_long(recs[2]), recs[2], recs[3]]
  rows, drops = _run(source, tok, worker_count=1, max_audio_slots=max_slots)
  assert len(rows) == 4
  assert all(pl.DROPS_FIELD not in b for b in rows)  # taken out in this process
  assert dict(drops) == {"format:no_ready_times": 1, "format:turn_too_long": 1,
                         "max_audio_slots": 1}


def test_codec_utterances_left_out_are_counted(recs, tmp_path):
  source = []
  for i, r in enumerate(recs):
    r = dict(r, speaker="solo" if i == 0 else "pair", source="fake")
    r["tgt_audio"] = np.zeros((0,), np.int16) if i == 0 else r["tgt_audio"]
    source.append(r)
  drops = pl.DropCounts()
  spk = pl.speaker_index(source, str(tmp_path / "spk.json"), drops)
  assert "solo" not in spk and dict(drops) == {"speaker_single_utterance": 1}
  again = pl.DropCounts()  # from the cache: the same count
  assert pl.speaker_index(source, str(tmp_path / "spk.json"), again) == spk
  assert dict(again) == dict(drops)


def test_stage_result_holds_data_drops(capsys):
  """The SFT stage on the micro build: its `info` (merged into result.json by the loop)
  holds the live `data_drops` counter the pipeline fills; the stage's data iterator logs
  one summary line when the loop lets go of it."""
  from liveinterp.train import stages
  c = fx.micro_config("sft")
  c.data.data_dir = fx.micro_build()
  tok = fx.micro_tokenizer()
  c.tokenizer.model_path = os.path.join(fx.session_root(), "tok", "zh_en_micro")
  c.data.text_only = True
  c.train.batch_size, c.train.eval_batches, c.train.eval_examples = 2, 0, 0
  src = fx.micro_source("train")
  sp = sfmt.StreamSpec.from_config(c)
  slots = sorted(sfmt.simul_windows(src[i], tok, sp)[0].example["audio"].shape[0]
                 for i in range(len(src)))
  c.data.max_audio_slots = slots[len(slots) // 2]  # about half the records are dropped
  stage = stages.build(c)
  drops = stage.info["data_drops"]
  assert isinstance(drops, pl.DropCounts)
  data = stage.make_data(0)
  for _ in range(3):
    next(data)
  assert drops.get("max_audio_slots", 0) > 0
  result = {"step": 3}
  result.update(stage.info)  # what loop.run does with stage.info
  back = json.loads(json.dumps(result))
  assert back["data_drops"] == dict(drops)
  capsys.readouterr()
  data.close()  # the loop returns: the generator ends
  out = capsys.readouterr()
  lines = [l for l in (out.out + out.err).splitlines() if "training data: dropped" in l]
  assert len(lines) == 1 and "max_audio_slots" in lines[0]


def test_codec_stage_result_holds_data_drops():
  from liveinterp.train import stages
  c = fx.micro_config("codec")
  c.data.data_dir = fx.micro_build()
  c.train.eval_batches = 0
  stage = stages.build(c)
  drops = stage.info["data_drops"]
  assert isinstance(drops, pl.DropCounts)
  assert set(drops) <= {"speaker_single_utterance"}
  next(stage.make_data(0))
  json.dumps(stage.info)


def test_loop_result_holds_data_drops_and_logs_one_line_at_the_end(tmp_path, capsys):
  """Through `loop.run` (a toy model): the live counter lands in the result (as the CLI
  writes result.json) with what the pipeline counted, and the stage's data iterator
  prints the summary line once, when the run lets go of it."""
  import jax
  from liveinterp.common import reporting
  from liveinterp.train import loop
  from tests.tiny_models import TinyLM, lm_loss
  drops = pl.DropCounts()

  def make_data(start):
    def batches():
      step = start
      while True:
        drops.add("format:no_ready_times")  # one dropped record per batch
        rng = np.random.default_rng([7, step, jax.process_index()])
        ids = rng.integers(0, 32, (8, 9)).astype(np.int32)
        yield {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
        step += 1
    return pl.report_drops_at_end(batches(), drops,
                                  lambda line: reporting.console(f"[toy] {line}"))

  c = micro.get_config()
  c.train.steps, c.train.warmup_steps = 3, 1
  c.checkpoint.every_steps, c.checkpoint.async_save = 3, False
  stage = loop.Stage("toy", lambda r: TinyLM(32, 16, 32, r), lm_loss, make_data,
                     info={"data_drops": drops})
  result = loop.run(c, str(tmp_path), stage)
  with open(tmp_path / "result.json", "w") as f:
    json.dump(dict(result), f)
  with open(tmp_path / "result.json") as f:
    back = json.load(f)
  assert back["data_drops"] == {"format:no_ready_times": 3}  # 3 batches drawn
  out = capsys.readouterr().out
  assert out.count("training data: dropped 3 examples: format:no_ready_times 3") == 1
