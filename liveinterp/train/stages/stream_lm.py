"""`pretrain` and `sft` stages: the S2ST model on token streams with spliced audio.

- pretrain: multitask offline sequences (ASR, ST, TTS, offline S2ST; DESIGN §3.2);
- sft: the interleaved simultaneous stream `[A1][Y1]…[AN][YN]` whose turns come from the
  alignment ready times (policy `alignment`) or a wait-k baseline (`data.policy`).

Batches come from `data_pipelines.pipelines.stream_dataset` with one example per row
(`packing=False`): the row's audio slots, flattened, are exactly that example's source
audio in whole chunks, so the encoder sees in training what it sees when streaming
(packing several utterances would let conv/attention context leak across them).

Loss: next-token cross-entropy on `loss_mask` positions. Metrics: loss, token accuracy,
and the share of speech tokens. Dev evaluation: loss/accuracy and audio reliance on dev
streams, plus
- pretrain: greedy offline ASR and ST output scored with BLEU/chrF;
- sft: what users get: the dev utterances streamed through the streaming decoder
  (`liveinterp.inference.streaming`, greedy, text only, the task prompt prefilled) with
  the in-training weights, scored with BLEU/chrF and LAAL (`eval/simul_*`), by the same
  code as `python -m liveinterp.evaluate` (`SimulDevEval`).
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from data_pipelines import pipelines, stream_format as sfmt, tokenizer as tokmod
from liveinterp.common import reporting
from liveinterp.models import s2st
from liveinterp.train import loop, speech_tokens

FIELDS = ("tokens", "loss_mask", "audio_slot_mask", "segment_ids", "positions", "audio",
          "audio_segment_ids", "src_ids", "src_len", "src_frames")


def model_inputs(batch):
  """Pipeline batch -> (tokens, audio float [B, N], audio mask [B, N], slot mask)."""
  audio = batch["audio"]                                   # int16 [B, L, S]
  b, l, s = audio.shape
  audio_f = audio.reshape(b, l * s).astype(jnp.float32) / 32768.0
  audio_mask = jnp.repeat(batch["audio_segment_ids"] > 0, s, axis=1)
  return batch["tokens"], audio_f, audio_mask, batch["audio_slot_mask"] > 0


def ctc_loss(model: s2st.S2ST, frames, frame_mask, batch):
  """Auxiliary CTC loss of the encoder frames against the source transcript ids
  (`src_ids`, `src_len`; rows with `src_len` 0 carry no target): mean per labelled row,
  normalised by its label length. Returns (loss, number of labelled rows)."""
  logits = model.ctc_logits(frames)
  labels = batch["src_ids"]
  label_pad = (jnp.arange(labels.shape[1])[None] >= batch["src_len"][:, None])
  per_row = optax.ctc_loss(logits, (~frame_mask).astype(jnp.float32), labels,
                           label_pad.astype(jnp.float32), blank_id=0)
  has = (batch["src_len"] > 0).astype(jnp.float32)
  per_row = jnp.where(has > 0, per_row / jnp.maximum(batch["src_len"], 1), 0.0)
  n = has.sum()
  return per_row.sum() / jnp.maximum(n, 1.0), n


def frame_loss(model: s2st.S2ST, frames, frame_mask, batch, emb=None):
  """Auxiliary frame loss: cross-entropy of every valid encoder frame (head `ctc_logits`)
  against `src_frames` (the source character spoken there, 0 = none, -1 = no target).
  With `emb` (the adapter's audio embeddings, one per `stack` frames) the scores are
  instead those of each audio slot against the LLM's embedding table
  (`embedding_logits`), with the label of the slot's last frame: the audio embedding
  of a slot is pulled towards the embedding of the character spoken there.
  Returns (loss, accuracy on frames whose target is a character)."""
  labels = batch["src_frames"]
  if emb is not None:
    stack = frames.shape[1] // emb.shape[1]
    logits = model.embedding_logits(emb)
    labels, frame_mask = labels[:, stack - 1::stack], frame_mask[:, stack - 1::stack]
  else:
    logits = model.ctc_logits(frames)
  labels = labels[:, :logits.shape[1]]
  if labels.shape[1] != logits.shape[1]:
    raise ValueError(f"src_frames has {batch['src_frames'].shape[1]} frames per row, the "
                     f"encoder gave {logits.shape[1]}")
  valid = frame_mask & (labels >= 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
  loss = jnp.where(valid, ce, 0.0).sum() / jnp.maximum(valid.sum(), 1)
  speech = valid & (labels > 0)
  acc = ((logits.argmax(-1) == labels) & speech).sum() / jnp.maximum(speech.sum(), 1)
  return loss, acc


def loss_fn(model: s2st.S2ST, batch, rng, speech_offset: int, ctc_weight: float = 0.0,
            frame_weight: float = 0.0, frame_tied: bool = False, speech_weight: float = 1.0):
  """Next-token cross-entropy on `loss_mask` positions, each speech token weighted
  `speech_weight` against a text/control token's 1 (+ `ctc_weight` x the auxiliary CTC
  loss of the audio embeddings when the batch has `src_ids`, + `frame_weight` x the frame
  loss when it has `src_frames`). aux["lm_loss"] is the plain (unweighted) mean
  cross-entropy (what audio reliance and dev loss compare); aux["text_loss"] and
  aux["speech_loss"] split it by kind of target."""
  del rng
  tokens, audio, audio_mask, slots = model_inputs(batch)
  logits, _, frames, frame_mask, emb = model(
      tokens, audio, slots, positions_bt=batch["positions"],
      segment_ids_bt=batch["segment_ids"], audio_mask_bn=audio_mask, return_audio=True)
  targets = tokens[:, 1:]
  seg = batch["segment_ids"]
  mask = ((batch["loss_mask"][:, 1:] > 0) & (seg[:, 1:] == seg[:, :-1])
          & (seg[:, 1:] > 0)).astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], targets)
  n = jnp.maximum(mask.sum(), 1.0)
  correct = (logits[:, :-1].argmax(-1) == targets).astype(jnp.float32)
  speech = (targets >= speech_offset).astype(jnp.float32)
  # Control targets (<text>, <eot>, <speech>, <eos>, ...) are the decisions: write or
  # wait, end the words, end the stream.
  control = (targets < tokmod.NUM_SPECIAL_TOKENS).astype(jnp.float32)
  lm = (ce * mask).sum() / n
  text_n = (mask * (1 - speech)).sum()
  speech_n = (mask * speech).sum()
  aux = {
      "lm_loss": lm,
      "text_loss": (ce * mask * (1 - speech)).sum() / jnp.maximum(text_n, 1.0),
      "speech_loss": (ce * mask * speech).sum() / jnp.maximum(speech_n, 1.0),
      "accuracy": (correct * mask).sum() / n,
      "speech_share": speech_n / n,
      "text_accuracy": (correct * mask * (1 - speech)).sum() / jnp.maximum(text_n, 1.0),
      "control_accuracy": (correct * mask * control).sum() / jnp.maximum(
          (mask * control).sum(), 1.0),
      "tokens": mask.sum(),
  }
  # speech_weight=1 gives w == mask exactly, so total == lm bit for bit.
  w = mask * (1 - speech + speech_weight * speech)
  total = (ce * w).sum() / jnp.maximum(w.sum(), 1e-6)
  if ctc_weight > 0 and "src_ids" in batch:
    ctc, rows = ctc_loss(model, frames, frame_mask, batch)
    aux["ctc_loss"], aux["ctc_rows"] = ctc, rows
    total = total + ctc_weight * ctc
  if frame_weight > 0 and "src_frames" in batch:
    fl, facc = frame_loss(model, frames, frame_mask, batch, emb if frame_tied else None)
    aux["frame_loss"], aux["frame_accuracy"] = fl, facc
    total = total + frame_weight * fl
  return total, aux


def audio_variants(batch) -> dict:
  """The batch with its source audio zeroed, and with every row's audio taken from the
  next row (cut or zero-padded to this row's own slots: same length, other content).

  Token streams, slots and masks are unchanged, so a loss difference between these and
  the real batch measures how much the model relies on what the audio says.
  """
  audio = batch["audio"]
  own = (batch["audio_segment_ids"] > 0)[..., None]
  return {"zero": dict(batch, audio=jnp.zeros_like(audio)),
          "swap": dict(batch, audio=jnp.where(own, jnp.roll(audio, 1, axis=0),
                                              jnp.zeros_like(audio)))}


def audio_reliance(loss, model, batches) -> dict:
  """Mean loss on `batches` with real, zeroed and swapped audio, and the two gaps.

  `loss(model, batch) -> (scalar, aux)` with the cross-entropy in aux["lm_loss"]. A model that listens has a large positive
  `gap_zero` (= loss with zeroed audio - loss with real audio) and `gap_swap`.
  """
  real, zero, swap = [], [], []
  lm = lambda b: float(loss(model, b)[1]["lm_loss"])  # noqa: E731
  for b in batches:
    real.append(lm(b))
    var = audio_variants(b)
    zero.append(lm(var["zero"]))
    swap.append(lm(var["swap"]))
  r, z, s = float(np.mean(real)), float(np.mean(zero)), float(np.mean(swap))
  return {"loss_real": r, "loss_zero_audio": z, "loss_swap_audio": s,
          "gap_zero": z - r, "gap_swap": s - r}


def tokenizer_for(config) -> tokmod.Tokenizer:
  path = config.tokenizer.model_path
  if not path:
    raise ValueError("tokenizer.model_path is empty: build the corpus and tokenizer first "
                     "(python -m data_pipelines.build) and pass its prefix")
  tok = tokmod.Tokenizer.load(path)
  tokmod.check_fits(tok.text_vocab_size, config.codec.num_codebooks,
                    config.codec.codebook_size, config.llm.vocab_size)
  return tok


def aux_loss_weights(config) -> dict:
  """The auxiliary-loss arguments of `loss_fn` from `config.train` (one reading of them)."""
  t = config.train
  return dict(ctc_weight=float(t.ctc_weight), frame_weight=float(t.frame_weight),
              frame_tied=bool(t.frame_tied), speech_weight=float(t.speech_weight))


def _dataset(config, stage, source, tok, codes_fn, shard=None, seed=None, shuffle=True,
             num_epochs=None, drops=None):
  placeholder = "none"  # without codes the speech part is dropped (text-only turns)
  return pipelines.make_dataset(
      stage, config, source, tok, packing=False, codes_fn=codes_fn, shard=shard,
      seed=seed, shuffle=shuffle, num_epochs=num_epochs, policy=config.data.policy,
      context_chunks=pipelines.window_context_chunks(config), drops=drops,
      wait_k=config.data.wait_k, speech_placeholder=placeholder,
      src_transcript=bool(config.data.get("src_transcript", False)),
      max_audio_slots=config.data.max_audio_slots,
      max_src_tokens=(int(config.data.max_src_tokens) if config.train.ctc_weight > 0 else 0),
      frame_ms=(int(config.audio.hop_ms * config.encoder.subsample)
                if aux_loss_weights(config)["frame_weight"] > 0 else 0),
      task_weights=dict(config.data.task_weights) if stage == "pretrain" else None)


def check_examples_fit(config, stage, source, tok, codes_fn, probe: int = 256) -> dict:
  """Measures, on the first `probe` records, what the sequence limits cost: SFT streams
  longer than `data.seq_len` (cut into windows: `stream_format.simul_windows`, every turn
  still trained; `data/windowed_fraction`), examples dropped for `seq_len` (pretraining
  tasks, a single SFT turn longer than it) or for `data.max_audio_slots`. Fails fast
  (naming the limits) when nothing fits — otherwise an endless, filtered-out pipeline
  would hang the first step. Returns `data/*` fractions for the stage's result
  (`data/truncated_fraction` counts the records that needed windows)."""
  spec = sfmt.StreamSpec.from_config(config)
  n = min(probe, len(source))
  tasks = (["simul"] if stage == "sft" else
           [t for t, w in config.data.task_weights.items() if w > 0])
  fits, truncated, dropped, total, reasons = 0, 0, 0, 0, {}
  for i in range(n):
    rec = source[i]
    codes = codes_fn(rec) if codes_fn is not None else None
    for task in tasks:
      try:
        if stage == "sft":
          windows = sfmt.simul_windows(
              rec, tok, spec, tgt_codes=codes, policy=config.data.policy,
              k=config.data.wait_k, context_chunks=pipelines.window_context_chunks(config))
          examples = [w.example for w in windows]
        else:
          examples = [sfmt.pretrain_example(rec, tok, spec, task, tgt_codes=codes)]
      except sfmt.FormatError as e:
        msg = str(e).split(":", 1)[-1]
        if "max_len" in msg:
          total += 1
          dropped += 1
        key = msg[:60]
        reasons[key] = reasons.get(key, 0) + 1
        continue
      if len(examples) > 1:
        truncated += 1
      for ex in examples:
        total += 1
        if ex["audio"].shape[0] <= config.data.max_audio_slots:
          fits += 1
        else:
          dropped += 1
          reasons["too many audio slots"] = reasons.get("too many audio slots", 0) + 1
  if fits == 0:
    raise ValueError(f"{stage}: none of the first {n} records fits "
                     f"data.seq_len={config.data.seq_len} / data.max_audio_slots="
                     f"{config.data.max_audio_slots}; reasons: {reasons}")
  out = {"data/probed_examples": float(total),
         "data/truncated_fraction": truncated / max(total, 1),
         "data/dropped_fraction": dropped / max(total, 1)}
  if truncated or dropped:
    reporting.console(f"[{stage}] of {total} probed examples {truncated} records are "
                      f"longer than data.seq_len={config.data.seq_len} (trained in "
                      f"windows) and {dropped} dropped "
                      f"(seq_len / max_audio_slots={config.data.max_audio_slots}): "
                      f"{reasons}")
  return out


def _offline_eval(model, tok, spec, records, task: str, max_new: int, pad_to: int):
  """Greedy ASR or ST on records -> ({eval/<task>_bleu, eval/<task>_chrf}, examples):
  the offline evaluation of `liveinterp.offline_eval` (also the evaluation runner's
  offline ceiling) in the pretrain format."""
  from liveinterp import offline_eval as offline_lib  # pylint: disable=g-import-not-at-top
  scores, pairs = offline_lib.offline_eval(model, tok, records, task, spec=spec,
                                           max_new_tokens=max_new, pad_to=pad_to)
  return {f"eval/{task}_{k}": v for k, v in scores.items()}, pairs[:3]


class SimulDevEval:
  """SFT dev evaluation: streams `records` through a greedy, text-only streaming decoder
  of the in-training model (`liveinterp.evaluate.translate_records` / `simul_scores`,
  the evaluation CLI's code).

  The decoder is made at the first call and kept: later calls only swap in the new
  weights (`StreamingDecoder.set_model`), so its step compiles once per stage. It runs
  text only (no codec or speaker encoder: random ones stand in, they cannot change the
  text) with the turn grammar the stage trains (`streaming.speech_turns_for`).
  """

  def __init__(self, config, tok, records):
    self.config, self.tok, self.records = config, tok, list(records)
    self.decoder = None

  def __call__(self, model) -> tuple[dict, list]:
    """-> ({eval/simul_bleu, eval/simul_chrf, eval/simul_laal, eval/simul_empty},
    [(ref, hyp), ...])."""
    from liveinterp import evaluate
    if self.decoder is None:
      self.decoder = evaluate.text_decoder(self.config, model, self.tok)
    else:
      self.decoder.set_model(model)
    results = evaluate.translate_records(self.decoder, self.records, self.tok)
    sc = evaluate.simul_scores(results, self.records, int(self.config.audio.sample_rate))
    out = {"eval/simul_bleu": sc["bleu"], "eval/simul_chrf": sc["chrf"],
           "eval/simul_laal": float(sc["text_latency"].get("LAAL", float("nan"))),
           "eval/simul_empty": float(sc["empty_outputs"])}
    return out, [(r["tgt_text"], res.text.strip()) for r, res in zip(self.records, results)]


def build(config) -> loop.Stage:
  stage = config.stage
  tok = tokenizer_for(config)
  source = pipelines.open_corpus(config, "train")
  dev = pipelines.open_corpus(config, "dev")
  codes_fn = None if config.data.text_only else speech_tokens.codes_fn_for(config)
  if config.data.text_only:
    reporting.console(f"[{stage}] data.text_only: training text-only turns")
  elif codes_fn is None:
    reporting.console(f"[{stage}] no speech codes ({speech_tokens.codes_path(config)}): "
                      f"training text-only turns (TTS/S2ST tasks are skipped)")
  data_info = check_examples_fit(config, stage, source, tok, codes_fn)
  # Every record/example the training pipeline drops, by reason: live, into the result.
  drops = pipelines.DropCounts()
  data_info["data_drops"] = drops
  ds = _dataset(config, stage, source, tok, codes_fn, drops=drops)
  data_iter = iter(ds)
  speech_offset = tok.speech_offset

  def make_data(start):
    del start  # position is restored into data_iter by the checkpoint
    return pipelines.report_drops_at_end(
        ({k: v for k, v in b.items() if k in FIELDS} for b in data_iter), drops,
        lambda line: reporting.console(f"[{stage}] {line}"))

  # Dev: a fixed slice, unshuffled, one pass, evaluated on process-local data.
  dev_ds = _dataset(config, stage, dev, tok, codes_fn, shuffle=False, num_epochs=1,
                    shard=pipelines.shard_options(0, 1))
  dev_batches = []
  for b in dev_ds:
    dev_batches.append({k: v for k, v in b.items() if k in FIELDS})
    if len(dev_batches) >= config.train.eval_batches:
      break
  dev_records = [dev[i] for i in range(min(len(dev), config.train.eval_examples))]
  spec = sfmt.StreamSpec.from_config(config)
  weights = aux_loss_weights(config)
  eval_loss = jax.jit(lambda m, b: loss_fn(m, b, None, speech_offset, **weights))
  simul_eval = SimulDevEval(config, tok, dev_records) if stage == "sft" else None

  def eval_fn(model, step):
    del step
    out = {}
    if dev_batches:
      batches = [jax.tree.map(jnp.asarray, b) for b in dev_batches]
      vals = [jax.device_get(eval_loss(model, b)) for b in batches]
      out["eval/loss"] = float(np.mean([v[1]["lm_loss"] for v in vals]))
      for k in ("accuracy", "text_accuracy", "control_accuracy", "text_loss",
                "speech_loss", "frame_accuracy"):
        if k in vals[0][1]:
          out[f"eval/{k}"] = float(np.mean([v[1][k] for v in vals]))
      rel = audio_reliance(eval_loss, model, batches)
      out["eval/audio_gap_zero"] = rel["gap_zero"]
      out["eval/audio_gap_swap"] = rel["gap_swap"]
    if dev_records and jax.process_index() == 0:
      if simul_eval is not None:  # sft: the streaming decoder, as users run it
        scores, examples = simul_eval(model)
        out.update(scores)
        for ref, hyp in examples[:1]:
          reporting.console(f"  simul ref: {ref}\n  simul hyp: {hyp}")
      else:  # pretrain: its own offline tasks
        for task in ("asr", "st"):
          scores, examples = _offline_eval(model, tok, spec, dev_records, task,
                                           config.train.eval_max_new_tokens,
                                           config.data.seq_len)
          out.update(scores)
          for ref, hyp in examples[:1]:
            reporting.console(f"  {task} ref: {ref}\n  {task} hyp: {hyp}")
    return out

  return loop.Stage(stage, lambda rngs: s2st.S2ST(config, rngs=rngs),
                    lambda m, b, r: loss_fn(m, b, r, speech_offset, **weights), make_data,
                    data_iter=data_iter, eval_fn=eval_fn, info=data_info)
