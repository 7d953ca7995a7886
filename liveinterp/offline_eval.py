"""The offline evaluation of a model: greedy output once the whole source is heard.

One function, `offline_eval`, for both callers:
- the evaluation runner's offline ceiling (`liveinterp.evaluate.run`, task "simul"): the
  SFT stream format, same model and prompt as streaming, every turn before the last chunk
  forced to wait;
- the pretrain stage's dev evaluation (`liveinterp.train.stages.stream_lm`, tasks "asr"
  and "st"): the pretrain stage's own offline format (`stream_format.pretrain_example`:
  task prompt, the whole source audio, then the target), decoded greedily.

The model formats differ (a pretrain model never saw a stream; an SFT model is scored
on the stream format it serves), so the prompt follows the task; the scoring is the
same (`liveinterp.eval.quality`: corpus BLEU / chrF against the records' references).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import stream_format as sfmt, tokenizer as tokmod
from liveinterp.eval import quality, streaming_metrics

TASKS = ("asr", "st", "simul")
SIMUL_POLICY = "whole source first (turns before the last chunk wait)"


def offline_eval(model, tok, records, task: str = "simul", *, cfg=None, spec=None,
                 max_new_tokens: int | None = None, pad_to: int | None = None,
                 batch: int = 8, log=None) -> tuple[dict, list]:
  """Greedy offline output of `model` on `records`, scored -> (scores, [(ref, hyp)]).

  task "asr" / "st": prompts of the pretrain format up to the first target token
    (records the format cannot hold are skipped), all decoded in one `generate.generate`
    call (`max_new_tokens`, default `cfg.train.eval_max_new_tokens`; rows padded to
    max(`pad_to`, longest prompt), default `cfg.data.seq_len`, so the program compiles
    once); scores {"bleu", "chrf"} of the transcript (asr: vs the source text) or the
    translation (st: vs the target text); ({}, []) when no record fits.
  task "simul": a greedy text-only streaming decoder of `model`
    (`evaluate.text_decoder`, turn budget `max_new_tokens`, default `cfg.data.seq_len`:
    one turn covers a whole stream), warmed up, then `batch` streams at a time with the
    whole source first (`evaluate.translate_records(whole_source_first=True)`); scores:
    the streaming row (`streaming_metrics.simul_scores`: BLEU, chrF, latency, empty
    outputs, rtf) plus "policy". Needs `cfg`.
  """
  if task not in TASKS:
    raise ValueError(f"task={task!r}: expected one of {TASKS}")
  if task == "simul":
    return _whole_source_first(model, tok, records, cfg, max_new_tokens, batch, log)
  if spec is None or max_new_tokens is None or pad_to is None:
    if cfg is None:
      raise ValueError(f"task={task!r}: pass cfg, or spec, max_new_tokens and pad_to")
    spec = sfmt.StreamSpec.from_config(cfg) if spec is None else spec
    max_new_tokens = (int(cfg.train.eval_max_new_tokens) if max_new_tokens is None
                      else max_new_tokens)
    pad_to = int(cfg.data.seq_len) if pad_to is None else pad_to
  return _pretrain_format(model, tok, spec, records, task, max_new_tokens, pad_to)


def _pretrain_format(model, tok, spec, records, task, max_new, pad_to):
  from liveinterp.inference import generate as gen  # pylint: disable=g-import-not-at-top
  prompts, audios, refs, lang = [], [], [], None
  for rec in records:
    try:
      ex = sfmt.pretrain_example(rec, tok, spec, task)
    except sfmt.FormatError:
      continue
    first_target = int(np.argmax(ex["loss_mask"] > 0))
    prompts.append(ex["tokens"][:first_target])
    audios.append(ex["audio"])
    refs.append(rec["src_text"] if task == "asr" else rec["tgt_text"])
    lang = rec["src_lang"] if task == "asr" else rec["tgt_lang"]
  if not prompts:
    return {}, []
  pad_to = max(pad_to, max(len(p) for p in prompts))
  outs = gen.generate(model, prompts, audios, tokmod.AUDIO, [tokmod.EOS, tokmod.EOT],
                      max_new_tokens=max_new, pad_to=pad_to)
  hyps = [tok.decode_text(o) for o in outs]
  return ({"bleu": quality.corpus_bleu(hyps, refs, lang),
           "chrf": quality.corpus_chrf(hyps, refs)}, list(zip(refs, hyps)))


def _whole_source_first(model, tok, records, cfg, max_new, batch, log):
  # The runner holds the streaming loop (liveinterp.evaluate imports this module).
  from liveinterp import evaluate  # pylint: disable=g-import-not-at-top
  from liveinterp.inference import session as session_lib  # pylint: disable=g-import-not-at-top
  if cfg is None:
    raise ValueError("task='simul': needs cfg (the decoder's stream and prompt)")
  whole = evaluate.text_decoder(cfg, model, tok, max_turn_tokens=int(
      cfg.data.seq_len if max_new is None else max_new))
  with evaluate.without_mesh():
    session_lib.warmup(whole, batch)
  res = evaluate.translate_records(whole, records, tok, batch=batch, log=log,
                                   whole_source_first=True)
  scores = streaming_metrics.simul_scores(res, records, int(cfg.audio.sample_rate))
  scores["policy"] = SIMUL_POLICY
  return scores, [(r["tgt_text"], x.text.strip()) for r, x in zip(records, res)]
