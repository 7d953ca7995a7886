"""`asr_judge` stage: the word recogniser that scores ASR-BLEU (`models/asr_judge.py`).

Trains on the training split's reference target speech only (`tgt_audio`, the corpus's
TTS voices, and `tgt_text`); never on a model's output. Per example: the clip (int16,
zero-padded to `judge.max_seconds`), its word labels (`asr_judge.words_of(tgt_text)`,
classes 1..V) for CTC, and a class per 40 ms encoder frame from the corpus's target word
times (`tgt_word_start_ms` / `tgt_word_end_ms`; a corpus word that normalises to several
words, e.g. "25" -> "twenty five", splits its span evenly) for the frame loss.

With `judge.codec_clips` > 0 the first that many clips also get a codec twin
(`resynthesize`: the clip through the run's trained codec, in its speaker's voice; same
words and word times), made once at build time and trained on beside the originals.

Left out and counted (`data_drops` in the stage's result.json; `scan`, once, at build
time): clips longer than `judge.max_seconds`, more than `judge.max_words` words,
no words, empty audio, word times that do not match the text, or more labels than CTC
can emit in the clip's frames.

The vocabulary (sorted words of the training targets) goes into the stage's
result.json (`asr_judge.VOCAB_KEY`), from which `JudgeRecognizer.from_dir` reads it. Dev
evaluation: word error rate and ASR-BLEU of the judge on the dev split's reference
speech (`judge.eval_examples` clips).
"""

from __future__ import annotations

import collections
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from data_pipelines import pipelines
from liveinterp.common import checkpointing, reporting
from liveinterp.eval import quality
from liveinterp.models import asr_judge, voice
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
  """One pass over `source`: (usable record indices, vocabulary, drop counts). Every
  reason `make_example` has to leave a clip out is checked here, once (word times, CTC
  speed: they depend on the words, not on their class ids), so the training data never
  drops a clip. The vocabulary is that of the usable records unless given."""
  j, lang_words = config.judge, []
  max_samples = int(j.max_seconds * config.audio.sample_rate)
  drops = collections.Counter()
  usable = []
  given = vocab_index(vocab) if vocab is not None else None
  for i in range(len(source)):
    rec = source[i]
    n = len(rec["tgt_audio"])
    words = asr_judge.words_of(str(rec["tgt_text"]), str(rec["tgt_lang"]))
    reason = ("empty_audio" if n == 0 else "too_long" if n > max_samples else
              "no_words" if not words else "too_many_words" if len(words) > j.max_words
              else None)
    if reason is None:
      reason = make_example(rec, config, given or vocab_index(sorted(set(words))))[1]
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


def vocab_index(vocab) -> dict[str, int]:
  """Word -> CTC class (1..V; 0 is the blank)."""
  return {w: k + 1 for k, w in enumerate(vocab)}


def make_example(rec, config, index, audio=None) -> tuple[dict | None, str | None]:
  """(example, None) or (None, drop reason) for one record; `audio` (int16) replaces its
  target speech (a codec twin: same words, same times)."""
  sr, j = int(config.audio.sample_rate), config.judge
  max_samples = int(j.max_seconds * sr)
  hop = int(sr * config.audio.hop_ms / 1000)
  n_frames = max_samples // hop // 4
  fms = asr_judge.frame_ms(config)
  audio = np.asarray(rec["tgt_audio"] if audio is None else audio, np.int16)
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


def resynthesize(config, codec_dir: str, records, batch: int = 8,
                 log=None) -> list[np.ndarray]:
  """Each record's target speech encoded and decoded by the codec trained in `codec_dir`
  in its speaker's voice (the embedding of the record's source speech, its last
  `data.codec_ref_ms`), as the evaluation's codec check does: int16 clips as long as the
  originals. Clips are padded to `judge.max_seconds` (one compile)."""
  ckpt = os.path.join(codec_dir, "checkpoints")
  if not codec_dir or not os.path.isdir(ckpt):
    raise FileNotFoundError(f"judge.codec_dir={codec_dir!r}: no codec checkpoints there "
                            f"(train the codec first: recipe step codec), or set "
                            f"judge.codec_clips=0")
  model, _ = checkpointing.restore_model(lambda rngs: voice.VoiceCodec(config, rngs=rngs),
                                         ckpt)
  graphdef, weights = nnx.split(model)
  sr = int(config.audio.sample_rate)
  hop = model.codec.hop
  n = -(-int(config.judge.max_seconds * sr) // hop) * hop
  m = int(config.data.codec_ref_ms) * sr // 1000

  @jax.jit
  def run(w, x, ref, ref_mask):
    vc = nnx.merge(graphdef, w)
    return voice.resynthesize(vc.codec, vc.speaker, x, ref, ref_mask)

  out = []
  for k in range(0, len(records), batch):
    part = records[k:k + batch]
    x = np.zeros((batch, n), np.float32)
    ref = np.zeros((batch, m), np.float32)
    ref_mask = np.zeros((batch, m), bool)
    ref_mask[:, -1] = True  # rows past the end: one valid (silent) sample
    for i, r in enumerate(part):
      a = np.asarray(r["tgt_audio"], np.float32)[:n] / 32768.0
      x[i, :a.size] = a
      s = np.asarray(r["src_audio"], np.float32)[-m:] / 32768.0
      if s.size:
        ref[i, m - s.size:], ref_mask[i, m - s.size:] = s, True
    y = np.asarray(run(weights, jnp.asarray(x), jnp.asarray(ref), jnp.asarray(ref_mask)))
    for i, r in enumerate(part):
      size = min(len(r["tgt_audio"]), n)
      out.append(np.clip(np.round(y[i, :size] * 32767.0), -32768, 32767).astype(np.int16))
    if log and (k // batch + 1) % 50 == 0:
      log(f"codec twins {len(out)}/{len(records)}")
  return out


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


def dev_scores(recognizer, records, lang: str, batch: int = 16,
               sample_rate: int = 16000) -> dict:
  """Word error rate and ASR-BLEU/chrF of `recognizer` on the records' reference target
  speech (recorded at `sample_rate`, the corpus's `audio.sample_rate`)."""
  refs = [str(r["tgt_text"]) for r in records]
  sr = int(sample_rate)
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
  index = vocab_index(vocab)
  train_lang = str(source[usable[0]]["tgt_lang"])
  nproc, pid = jax.process_count(), jax.process_index()
  global_batch = int(config.train.batch_size)
  local = global_batch // nproc
  reporting.console(f"[asr_judge] {len(usable)} training clips, {len(vocab)} words; left out "
                    f"{dict(drops) or 'none'}")
  # Training items: (record index, codec twin or None); the twins' audio is made once.
  items = [(i, None) for i in usable]
  n_twins = min(int(config.judge.codec_clips), len(usable))
  if n_twins:
    t0 = time.time()
    twins = resynthesize(config, config.judge.codec_dir,
                         [source[i] for i in usable[:n_twins]],
                         log=lambda m: reporting.console(f"[asr_judge] {m}"))
    items += list(zip(usable[:n_twins], twins))
    reporting.console(f"[asr_judge] {n_twins} codec twins ({config.judge.codec_dir}) in "
                      f"{time.time() - t0:.0f}s")

  def make_data(start: int):
    """Deterministic in the step: step s reads global positions s*B .. s*B+B-1 of a
    seeded per-epoch permutation (resume needs no iterator state); this process takes
    its slice. Every item passed `scan`'s checks (a twin has its original's words, times
    and length)."""
    step = start
    perms = {}
    while True:
      rows, first = [], step * global_batch + pid * local
      for pos in range(first, first + local):
        epoch, k = divmod(pos, len(items))
        if epoch not in perms:
          perms = {epoch: np.random.default_rng([int(config.seed), epoch]).permutation(
              len(items))}
        i, twin = items[perms[epoch][k]]
        ex, reason = make_example(source[i], config, index, twin)
        if ex is None:
          raise RuntimeError(f"[asr_judge] train record {i}: {reason}, after the scan "
                             f"passed it")
        rows.append(ex)
      yield {f: np.stack([r[f] for r in rows]) for f in FIELDS}
      step += 1

  dev_records = [dev[i] for i in range(min(len(dev), int(config.judge.eval_examples)))]
  lang = str(dev_records[0]["tgt_lang"]) if dev_records else "en"

  def eval_fn(model, step):
    del step
    if not dev_records:
      return {}
    s = dev_scores(asr_judge.JudgeRecognizer(model, vocab, config), dev_records, lang,
                   sample_rate=int(config.audio.sample_rate))
    return {"eval/wer": s["wer"], "eval/asr_bleu": s["asr_bleu"], "eval/asr_chrf": s["asr_chrf"]}

  return loop.Stage("asr_judge",
                    lambda rngs: asr_judge.CTCJudge(config, len(vocab), rngs=rngs),
                    loss_fn(float(config.judge.frame_weight)), make_data, eval_fn=eval_fn,
                    info={"data_drops": drops, "codec_twins": n_twins,
                          asr_judge.VOCAB_KEY: vocab,
                          asr_judge.LANG_KEY: train_lang})
