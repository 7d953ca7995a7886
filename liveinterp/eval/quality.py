"""Translation quality: sacrebleu BLEU and chrF (Chinese tokenisation for zh output).

Also sentence-level chrF for the RL prefix-quality reward and a pluggable recogniser
interface for ASR-BLEU of speech output.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import numpy as np
import sacrebleu


def bleu_tokenizer(lang: str) -> str:
  return "zh" if lang.startswith("zh") else ("ja-mecab" if lang == "ja" else "13a")


def corpus_bleu(hyps: Sequence[str], refs: Sequence[str], lang: str = "en") -> float:
  if len(hyps) != len(refs):
    raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references")
  if not hyps:
    return float("nan")
  return float(sacrebleu.corpus_bleu(list(hyps), [list(refs)],
                                     tokenize=bleu_tokenizer(lang)).score)


def corpus_chrf(hyps: Sequence[str], refs: Sequence[str]) -> float:
  if len(hyps) != len(refs):
    raise ValueError(f"{len(hyps)} hypotheses vs {len(refs)} references")
  if not hyps:
    return float("nan")
  return float(sacrebleu.corpus_chrf(list(hyps), [list(refs)]).score)


def sentence_chrf(hyp: str, ref: str) -> float:
  """chrF in [0, 100] of one sentence; 0 for an empty hypothesis or reference."""
  if not hyp.strip() or not ref.strip():
    return 0.0
  return float(sacrebleu.sentence_chrf(hyp, [ref]).score)


def sentence_bleu(hyp: str, ref: str, lang: str = "en") -> float:
  if not hyp.strip() or not ref.strip():
    return 0.0
  return float(sacrebleu.sentence_bleu(hyp, [ref], tokenize=bleu_tokenizer(lang)).score)


class Recognizer(Protocol):
  """Speech recogniser for ASR-BLEU: 16 kHz float audio -> text. `name` is reported;
  `self_judged` marks the model's own ASR mode (its scores are labelled as such)."""
  name: str
  self_judged: bool

  def __call__(self, audio: np.ndarray, sample_rate: int) -> str: ...


def asr_bleu(audios: Sequence[np.ndarray], refs: Sequence[str], recognizer: Recognizer,
             lang: str = "en", sample_rate: int = 16000) -> dict:
  hyps = [recognizer(a, sample_rate) for a in audios]
  return {"asr_bleu": corpus_bleu(hyps, refs, lang), "asr_chrf": corpus_chrf(hyps, refs),
          "recognizer": recognizer.name, "self_judged": bool(recognizer.self_judged),
          "transcripts": hyps}
