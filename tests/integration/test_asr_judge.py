"""The ASR-BLEU judge end to end on the micro corpus: trained by the recipe's stage
runner on four reference clips until it has memorised them, then loaded the way the
evaluation loads it (`evaluate.speech_recognizer(RUN_DIR, lang)`: config, vocabulary and
checkpoint from RUN_DIR/asr_judge) and asked to transcribe them back. Also: the frame
labels of every clip of the corpus form a valid CTC path of its words, and a run without
a judge for the language falls back to pocketsphinx / names the missing recogniser."""

import json
import os

import numpy as np
import pytest

from configs import micro
from data_pipelines import pipelines
from liveinterp import evaluate, recipe
from liveinterp.eval import recognizers
from liveinterp.models import asr_judge
from liveinterp.train.stages import asr_judge as stage
from tests.integration import micro_corpus

CLIPS = 4
STEPS = 150


def _cfg():
  d, tok = micro_corpus.micro_corpus()
  c = micro.get_config("asr_judge")
  c.data.data_dir, c.tokenizer.model_path = d, tok
  c.judge.train_examples = CLIPS
  c.judge.eval_examples = CLIPS
  c.train.batch_size = 8  # each clip twice a step; a multiple of the 8 test devices
  c.train.learning_rate = 3e-3
  c.train.steps, c.train.warmup_steps, c.train.log_every = STEPS, 5, 50
  c.train.eval_every = STEPS
  c.checkpoint.every_steps, c.checkpoint.async_save = STEPS, False
  return c


@pytest.fixture(scope="module")
def judge_run(tmp_path_factory):
  """(run_dir, config, the training clips' records): the judge trained into
  run_dir/asr_judge by `recipe.run_stage` (which writes config.json and result.json)."""
  run = str(tmp_path_factory.mktemp("judge_run"))
  c = _cfg()
  workdir = os.path.join(run, asr_judge.STAGE)
  os.makedirs(workdir)
  assert recipe.run_stage(c, workdir) == 0
  source = pipelines.open_corpus(c, "train")
  usable, _, _ = stage.scan(source, c)
  return run, c, [source[i] for i in usable]


def test_training_records_the_vocabulary_language_and_a_falling_loss(judge_run):
  run, _, records = judge_run
  res = json.load(open(os.path.join(run, asr_judge.STAGE, "result.json")))
  words = sorted({w for r in records for w in asr_judge.words_of(r["tgt_text"], "en")})
  assert res[asr_judge.VOCAB_KEY] == words and res[asr_judge.LANG_KEY] == "en"
  assert res["step"] == STEPS and not res.get("stopped")
  rows = [json.loads(l) for l in open(os.path.join(run, asr_judge.STAGE, "metrics.jsonl"))]
  losses = [r["train/loss"] for r in rows if "train/loss" in r]
  assert losses[-1] < 0.1 * losses[0]


def test_memorised_clips_come_back_through_the_evaluation_recogniser(judge_run):
  run, c, records = judge_run
  rec = evaluate.speech_recognizer(run, "en-US")
  assert isinstance(rec, asr_judge.JudgeRecognizer) and rec.name.startswith("ctc-judge")
  assert not rec.self_judged
  scores = stage.dev_scores(rec, records, "en")
  assert scores["wer"] < 0.05, list(zip(scores["transcripts"], [r["tgt_text"] for r in records]))
  # int16 at another rate goes through the same path (resampled to the judge's rate)
  sr = int(c.audio.sample_rate)
  one = np.asarray(records[0]["tgt_audio"])
  assert rec(one, sr) == scores["transcripts"][0]
  assert rec(np.zeros(0, np.float32), sr) == ""


def test_without_a_judge_for_the_language_the_recogniser_is_pocketsphinx_or_none(judge_run):
  run, _, _ = judge_run
  assert not asr_judge.trained_for(os.path.join(run, asr_judge.STAGE), "zh")
  with pytest.raises(recognizers.NoRecognizerError, match="'zh'"):
    evaluate.speech_recognizer(run, "zh")
  assert evaluate.speech_recognizer(os.path.join(run, "elsewhere"), "en").name == "pocketsphinx-en"


def test_frame_labels_of_every_corpus_clip_are_a_ctc_path_of_its_words():
  c = _cfg()
  c.judge.train_examples = 0
  for split in ("train", "dev", "test"):
    source = pipelines.open_corpus(c, split)
    usable, vocab, _ = stage.scan(source, c)
    index = stage.vocab_index(vocab)
    made = 0
    for i in usable:
      ex, why = stage.make_example(source[i], c, index)
      assert why is None, (split, i, why, source[i]["tgt_text"])
      labels = ex["labels"][:ex["label_lengths"]].tolist()
      frames = [k for k in ex["frame_labels"].tolist() if k >= 0]
      collapsed = [k for j, k in enumerate(frames) if k and (j == 0 or frames[j - 1] != k)]
      assert collapsed == labels, (split, i, source[i]["tgt_text"])
      made += 1
    assert made >= 3, (split, made)
