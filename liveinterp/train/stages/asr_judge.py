"""`asr_judge` stage: the word recogniser that scores ASR-BLEU (`models/asr_judge.py`).

Trains on the training split's reference target speech only (`tgt_audio`, the corpus's
TTS voices, and `tgt_text`); never on a model's output. Per example: the clip (int16,
zero-padded to `judge.max_seconds`), its word labels (`asr_judge.words_of(tgt_text)`,
classes 1..V) for CTC, and a class per 40 ms encoder frame from the corpus's target word
times (`tgt_word_start_ms` / `tgt_word_end_ms`; a corpus word that normalises to several
words, e.g. "25" -> "twenty five", splits its span evenly) for the frame loss.

Left out and counted (`data_drops` in the stage's result.json; the scan is done once, at
build time): clips longer than `judge.max_seconds`, more than `judge.max_words` words,
no words, empty audio, word times that do not match the text, or more labels than CTC
can emit in the clip's frames.

The vocabulary (sorted words of the training targets) goes into the stage's
result.json (`asr_judge.VOCAB_KEY`), from which `JudgeRecognizer.from_dir` reads it. Dev
evaluation: word error rate and ASR-BLEU of the judge on the dev split's reference
speech (`judge.eval_examples` clips).
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines import pipelines
from liveinterp.common import reporting
from liveinterp.eval import quality
from liveinterp.models import asr_judge
from liveinterp.train import loop

FIELDS = ("audio", "audio_lengths", "labels", "label_lengths", "frame_labels")


def _frame_classes(rec, words, index, n_frames: int, frame_ms: float, lang: str):
  """Class of each encoder frame (0 = no word) from the record's word times, or None
  when the times do not match the words. The frames form a valid CTC path of the
  words: every word gets at least one frame (a word shorter than a frame takes the frame
  nearest its middle when that one is free; else None), and two equal neighbouring
  words are split by a blank frame."""
  starts, ends = np.asarray(rec["tgt_word_start_ms"]), np.asarray(rec["tgt_word_end_ms"])
  corpus_words = list(rec["tgt_words"])
  if len(starts) != len(corpus_words) or len(ends) != len(corpus_words):
    return None
  spans = []
  for w, a, b in zip(corpus_words, starts, ends):
    parts = asr_judge.words_of(str(w), lang)
    if not parts:
      continue
    step = (float(b) - float(a)) / len(parts)
    spans += [(p, float(a) + k * step, float(a) + (k + 1) * step) for k, p in enumerate(parts)]
  if [p for p, _, _ in spans] != words:
    return None
  centers = (np.arange(n_frames) + 0.5) * frame_ms
  out = np.zeros(n_frames, np.int32)
  owner = np.full(n_frames, -1)  # which word (position) holds each frame
  for k, (p, a, b) in enumerate(spans):
    hit = (centers >= a) & (centers < b) & (owner < 0)
    if not hit.any():
      m = int((a + b) / 2 // frame_ms)
      if m >= n_frames or owner[m] >= 0:
        return None
      hit = np.arange(n_frames) == m
    out[hit], owner[hit] = index[p], k
  # equal neighbouring words: the earlier one's last frame becomes blank
  for t in range(n_frames - 1):
    if out[t] and out[t] == out[t + 1] and owner[t] != owner[t + 1]:
      if (owner == owner[t]).sum() < 2:
        return None
      out[t], owner[t] = 0, -1
  return out


def scan(source, config, vocab=None):
  """One pass over `source`: (usable record indices, vocabulary, drop counts). The
  vocabulary is that of the usable records unless given."""
  j, lang_words = config.judge, []
  max_samples = int(j.max_seconds * config.audio.sample_rate)
  drops = collections.Counter()
  usable = []
  for i in range(len(source)):
    rec = source[i]
    n = len(rec["tgt_audio"])
    words = asr_judge.words_of(str(rec["tgt_text"]), str(rec["tgt_lang"]))
    reason = ("empty_audio" if n == 0 else "too_long" if n > max_samples else
              "no_words" if not words else "too_many_words" if len(words) > j.max_words
              else None)
    if reason:
      drops[reason] += 1
      continue
    usable.append(i)
    lang_words.append(words)
    if j.train_examples and len(usable) >= int(j.train_examples):
      break
  if vocab is None:
    vocab = sorted({w for ws in lang_words for w in ws})
  return usable, vocab, drops


def make_example(rec, config, index) -> tuple[dict | None, str | None]:
  """(example, None) or (None, drop reason) for one record."""
  sr, j = int(config.audio.sample_rate), config.judge
  max_samples = int(j.max_seconds * sr)
  hop = int(sr * config.audio.hop_ms / 1000)
  n_frames = max_samples // hop // 4
  fms = asr_judge.frame_ms(config)
  audio = np.asarray(rec["tgt_audio"], np.int16)
  lang = str(rec["tgt_lang"])
  words = asr_judge.words_of(str(rec["tgt_text"]), lang)
  if any(w not in index for w in words):
    return None, "unknown_word"
  valid = (audio.size // hop) // 4
  labels = [index[w] for w in words]
  # CTC needs a frame per label plus one blank between equal neighbours
  if len(labels) + sum(a == b for a, b in zip(labels, labels[1:])) > valid:
    return None, "too_fast_for_ctc"
  frames = _frame_classes(rec, words, index, n_frames, fms, lang)
  if frames is None:
    return None, "bad_word_times"
  frames[valid:] = -1
  pad_audio = np.zeros(max_samples, np.int16)
  pad_audio[:audio.size] = audio
  pad_labels = np.zeros(int(j.max_words), np.int32)
  pad_labels[:len(labels)] = labels
  return dict(audio=pad_audio, audio_lengths=np.int32(audio.size), labels=pad_labels,
              label_lengths=np.int32(len(labels)), frame_labels=frames), None


def loss_fn(frame_weight: float):
  def fn(model: asr_judge.CTCJudge, batch, rng):
    del rng
    n = batch["audio"].shape[1]
    mask = jnp.arange(n)[None, :] < batch["audio_lengths"][:, None]
    logits, fmask = model(batch["audio"].astype(jnp.float32) / 32768.0, mask)
    lmask = jnp.arange(batch["labels"].shape[1])[None, :] < batch["label_lengths"][:, None]
    per_row = optax.ctc_loss(logits, (~fmask).astype(jnp.float32), batch["labels"],
                             (~lmask).astype(jnp.float32))
    ctc = jnp.mean(per_row / jnp.maximum(batch["label_lengths"], 1))
    t = logits.shape[1]
    fl = batch["frame_labels"][:, :t]
    fvalid = fmask & (fl >= 0)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(fl, 0))
    denom = jnp.maximum(fvalid.sum(), 1)
    frame = jnp.sum(jnp.where(fvalid, ce, 0.0)) / denom
    acc = jnp.sum(jnp.where(fvalid, jnp.argmax(logits, -1) == fl, False)) / denom
    return ctc + frame_weight * frame, {"ctc_loss": ctc, "frame_loss": frame,
                                        "frame_accuracy": acc}
  return fn


def dev_scores(recognizer, records, lang: str, batch: int = 16) -> dict:
  """Word error rate and ASR-BLEU/chrF of `recognizer` on the records' reference target
  speech."""
  refs = [str(r["tgt_text"]) for r in records]
  sr = int(records[0]["sample_rate"]) if records and "sample_rate" in records[0] else 16000
  hyps = []
  for k in range(0, len(records), batch):
    part = [np.asarray(r["tgt_audio"], np.float32) / 32768.0 for r in records[k:k + batch]]
    if hasattr(recognizer, "transcribe_batch"):
      hyps += recognizer.transcribe_batch(part, sr)
    else:  # any quality.Recognizer (pocketsphinx: the baseline the judge replaces)
      hyps += [recognizer(a, sr) for a in part]
  scores = quality.asr_scores(hyps, refs, lang)
  return {"wer": quality.word_error_rate(hyps, refs, lang), **scores, "transcripts": hyps}


def build(config) -> loop.Stage:
  source = pipelines.open_corpus(config, "train")
  dev = pipelines.open_corpus(config, "dev")
  usable, vocab, drops = scan(source, config)
  if not usable:
    raise ValueError(f"[asr_judge] no usable training clip in the corpus (left out: "
                     f"{dict(drops)})")
  index = {w: k + 1 for k, w in enumerate(vocab)}
  train_lang = str(source[usable[0]]["tgt_lang"])
  nproc, pid = jax.process_count(), jax.process_index()
  global_batch = int(config.train.batch_size)
  local = global_batch // nproc
  reporting.console(f"[asr_judge] {len(usable)} training clips, {len(vocab)} words; left out "
                    f"{dict(drops) or 'none'}")

  def make_data(start: int):
    """Deterministic in the step: step s reads global positions s*B .. s*B+B-1 of a
    seeded per-epoch permutation (resume needs no iterator state); this process takes
    its slice. A clip that fails `make_example` is counted and the next one taken."""
    step = start
    perms = {}
    while True:
      rows, pos = [], step * global_batch + pid * local
      while len(rows) < local:
        epoch, k = divmod(pos, len(usable))
        if epoch not in perms:
          perms = {epoch: np.random.default_rng([int(config.seed), epoch]).permutation(
              len(usable))}
        ex, reason = make_example(source[usable[perms[epoch][k]]], config, index)
        if ex is None:
          drops[reason] += 1
        else:
          rows.append(ex)
        pos += 1
      yield {f: np.stack([r[f] for r in rows]) for f in FIELDS}
      step += 1

  dev_records = [dev[i] for i in range(min(len(dev), int(config.judge.eval_examples)))]
  lang = str(dev_records[0]["tgt_lang"]) if dev_records else "en"

  def eval_fn(model, step):
    del step
    if not dev_records:
      return {}
    s = dev_scores(asr_judge.JudgeRecognizer(model, vocab, config), dev_records, lang)
    return {"eval/wer": s["wer"], "eval/asr_bleu": s["asr_bleu"], "eval/asr_chrf": s["asr_chrf"]}

  return loop.Stage("asr_judge",
                    lambda rngs: asr_judge.CTCJudge(config, len(vocab), rngs=rngs),
                    loss_fn(float(config.judge.frame_weight)), make_data, eval_fn=eval_fn,
                    info={"data_drops": drops, asr_judge.VOCAB_KEY: vocab,
                          asr_judge.LANG_KEY: train_lang})
