"""Translation quality: sacrebleu BLEU and chrF (Chinese tokenisation for zh output).

Also sentence-level chrF for the RL prefix-quality reward and a pluggable recogniser
interface for ASR-BLEU of speech output.

ASR-BLEU normalises the transcripts *and* the references the same way before scoring
(`asr_normalize`), as the Seamless and StreamSpeech ASR-BLEU scripts do: a recogniser
writes lower-case words without punctuation, and numbers as the words that were spoken,
so an unnormalised reference would cost a perfect transcript half its BLEU.
"""

from __future__ import annotations

import re
import unicodedata
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


# ---- paired significance: two systems on the same utterances -------------------------------

def _sentence_stats(metric, hyps: Sequence[str], refs: Sequence[str]) -> np.ndarray:
  """Per-sentence sufficient statistics [N, K] of a sacrebleu corpus metric (BLEU: lengths,
  n-gram matches and totals; chrF: character/word n-gram counts): summed over any subset
  they give that subset's corpus score (`_compute_score_from_stats`)."""
  # pylint: disable=protected-access
  return np.asarray(metric._extract_corpus_statistics(list(hyps), [list(refs)]), np.int64)


def _interval(values: np.ndarray, point: float, alpha: float) -> dict:
  lo, hi = np.percentile(values, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return {"delta": float(point), "lo": float(lo), "hi": float(hi)}


def paired_bootstrap(hyps_a: Sequence[str], hyps_b: Sequence[str], refs: Sequence[str],
                     lang: str = "en", n_boot: int = 1000, seed: int = 0,
                     alpha: float = 0.05) -> dict:
  """Paired bootstrap resampling (Koehn, 2004) of corpus BLEU and chrF, system a minus
  system b, both on the same utterances with the same references: the utterances are
  resampled with replacement `n_boot` times, the same draw for both systems, and the
  (1 - alpha) percentile interval of the difference is returned with the difference on
  the full set: {"bleu": {"delta", "lo", "hi"}, "chrf": {...}}. An interval that holds 0
  means the test set cannot tell the two apart."""
  from sacrebleu.metrics import BLEU, CHRF  # pylint: disable=g-import-not-at-top
  if not (len(hyps_a) == len(hyps_b) == len(refs)) or not refs:
    raise ValueError(f"paired bootstrap: {len(hyps_a)} / {len(hyps_b)} hypotheses for "
                     f"{len(refs)} references (need the same, non-empty, utterances)")
  idx = np.random.default_rng(seed).integers(0, len(refs), (n_boot, len(refs)))
  out = {}
  for name, metric in (("bleu", BLEU(tokenize=bleu_tokenizer(lang))), ("chrf", CHRF())):
    sa, sb = _sentence_stats(metric, hyps_a, refs), _sentence_stats(metric, hyps_b, refs)
    # pylint: disable=protected-access
    score = lambda s: metric._compute_score_from_stats([int(x) for x in s]).score  # noqa: E731
    diffs = np.asarray([score(sa[i].sum(0)) - score(sb[i].sum(0)) for i in idx])
    out[name] = _interval(diffs, score(sa.sum(0)) - score(sb.sum(0)), alpha)
  return out


def paired_bootstrap_ratio(a: Sequence[float], b: Sequence[float], n_boot: int = 1000,
                           seed: int = 0, alpha: float = 0.05) -> dict:
  """Paired bootstrap of mean(a) / mean(b) - 1, in percent (e.g. per-utterance LAAL of
  two systems on the same utterances): {"delta", "lo", "hi"} as `paired_bootstrap`."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or not a.size:
    raise ValueError(f"paired bootstrap: {a.size} vs {b.size} values (need the same "
                     "utterances)")
  idx = np.random.default_rng(seed).integers(0, a.size, (n_boot, a.size))
  ratios = 100.0 * (a[idx].mean(1) / b[idx].mean(1) - 1.0)
  return _interval(ratios, 100.0 * (a.mean() / b.mean() - 1.0), alpha)


# ---- ASR-BLEU text normalisation ----------------------------------------------------------
# English numbers are spelled the way espeak-ng (the TTS voice of every reference and, via
# the codec trained on it, of the model's speech) reads them, which is what a perfect
# recogniser writes down: British cardinals with "and" ("one hundred and five", "two
# thousand and twenty four"), 1900-1999 as "nineteen hundred and ...", decimals digit by
# digit after "point", digit strings with a leading zero digit by digit ("zero zero
# seven", also minutes: "2:05" -> "two zero five"), ordinals ("21st" -> "twenty first"),
# "%" -> "percent", "$"/"£"/"€" -> "dollar"/"pound"/"euros" before the number (espeak's
# order), a leading minus -> "minus". Checked against `espeak_TextToPhonemes` (en voice).
_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
         "fourteen fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL = {"one": "first", "two": "second", "three": "third", "five": "fifth",
            "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}
_CURRENCY = {"$": "dollar", "£": "pound", "€": "euros"}
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'"})
_NUMBER = re.compile(
    r"(?P<minus>(?<![\w.])-)?(?P<cur>[$£€])?\s?"
    r"(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<frac>\d+))?"
    r"(?:(?P<ord>st|nd|rd|th)\b)?(?P<pct>\s?%)?")


def _below_1000(n: int) -> list[str]:
  words = []
  if n >= 100:
    words += [_ONES[n // 100], "hundred"]
    n %= 100
    if n:
      words.append("and")
  if n >= 20:
    words.append(_TENS[n // 10])
    n %= 10
    if n:
      words.append(_ONES[n])
  elif n or not words:
    words.append(_ONES[n])
  return words


def spell_number_en(n: int) -> str:
  """Cardinal `n` >= 0 in words as espeak-ng reads it ("one thousand and sixty six")."""
  if n < 0:
    raise ValueError(f"spell_number_en: negative {n}")
  if 1900 <= n <= 1999:  # espeak reads these as "nineteen hundred [and ...]"
    return " ".join(["nineteen", "hundred"] + (["and"] + _below_1000(n % 100)
                                                if n % 100 else []))
  words = []
  for value, name in _SCALES:
    if n >= value:
      words += _below_1000(n // value) if n // value < 1000 else \
          spell_number_en(n // value).split()
      words.append(name)
      n %= value
  if n or not words:
    if words and n < 100:
      words.append("and")
    words += _below_1000(n)
  return " ".join(words)


def _ordinal_en(cardinal: str) -> str:
  *head, last = cardinal.split()
  if last in _ORDINAL:
    last = _ORDINAL[last]
  elif last.endswith("y"):
    last = last[:-1] + "ieth"
  else:
    last += "th"
  return " ".join(head + [last])


def _digits_en(s: str) -> str:
  return " ".join(_ONES[int(c)] for c in s)


def _spell_match_en(m: re.Match) -> str:
  int_part = m["int"].replace(",", "")
  if len(int_part) > 1 and int_part[0] == "0" and "," not in m["int"]:
    words = _digits_en(int_part)
  else:
    words = spell_number_en(int(int_part))
    if 1900 <= int(int_part) <= 1999 and "," in m["int"]:  # "1,999": read as a quantity
      words = "one thousand " + " ".join(_below_1000(int(int_part) - 1000))
  if m["frac"]:
    words += " point " + _digits_en(m["frac"])
  elif m["ord"]:
    words = _ordinal_en(words)
  out = ([_CURRENCY[m["cur"]]] if m["cur"] else []) + [words]
  if m["minus"]:
    out.insert(0, "minus")
  if m["pct"]:
    out.append("percent")
  return " " + " ".join(out) + " "


def spell_numbers_en(text: str) -> str:
  """`text` with its digits written as the words espeak-ng speaks (module note above)."""
  return _NUMBER.sub(_spell_match_en, text)


def _is_kept(ch: str, prev: str, nxt: str) -> bool:
  """Keep letters, digits, marks and whitespace; an apostrophe only inside a word
  ("it's", "o'clock": the recogniser's lexicon spells them so)."""
  if ch == "'":
    return prev.isalnum() and nxt.isalnum()
  return unicodedata.category(ch)[0] not in "PS"


def asr_normalize(text: str, lang: str = "en") -> str:
  """Text as a recogniser writes it: NFKC, numbers in words (English), lower case,
  punctuation and symbols replaced by spaces (apostrophes inside words kept), single
  spaces. Applied to transcripts and references alike before ASR-BLEU (idempotent)."""
  t = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES)
  if lang.split("-")[0].lower() == "en":
    t = spell_numbers_en(t)
  t = t.lower()
  t = "".join(c if _is_kept(c, t[i - 1] if i else "", t[i + 1] if i + 1 < len(t) else "")
              else " " for i, c in enumerate(t))
  return " ".join(t.split())


def asr_scores(transcripts: Sequence[str], refs: Sequence[str], lang: str = "en") -> dict:
  """ASR-BLEU and ASR-chrF of recogniser `transcripts` against reference texts, both
  normalised with `asr_normalize` first."""
  hyps = [asr_normalize(h, lang) for h in transcripts]
  refs_n = [asr_normalize(r, lang) for r in refs]
  return {"asr_bleu": corpus_bleu(hyps, refs_n, lang), "asr_chrf": corpus_chrf(hyps, refs_n)}


class Recognizer(Protocol):
  """Speech recogniser for ASR-BLEU: 16 kHz float audio -> text. `name` is reported;
  `self_judged` marks the model's own ASR mode (its scores are labelled as such)."""
  name: str
  self_judged: bool

  def __call__(self, audio: np.ndarray, sample_rate: int) -> str: ...


def asr_bleu(audios: Sequence[np.ndarray], refs: Sequence[str], recognizer: Recognizer,
             lang: str = "en", sample_rate: int = 16000) -> dict:
  """Recognises `audios` and scores the transcripts against `refs` (`asr_scores`: both
  sides normalised). `transcripts` are the recogniser's raw outputs."""
  hyps = [recognizer(a, sample_rate) for a in audios]
  return {**asr_scores(hyps, refs, lang), "normalized": True,
          "recognizer": recognizer.name, "self_judged": bool(recognizer.self_judged),
          "transcripts": hyps}


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
  """Levenshtein distance between two word sequences (substitution, insertion,
  deletion all cost 1); one row of the table at a time."""
  prev = list(range(len(b) + 1))
  for i, x in enumerate(a, 1):
    cur = [i] + [0] * len(b)
    for j, y in enumerate(b, 1):
      cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y))
    prev = cur
  return prev[-1]


def word_error_rate(hyps: Sequence[str], refs: Sequence[str], lang: str = "zh") -> float:
  """Corpus word error rate of transcripts (e.g. the decoder's live source transcript,
  `session.StreamResult.source_text`) against reference texts: total word edits / total
  reference words, after `asr_normalize`; Chinese and Japanese count characters (CER).
  NaN when the references have no words."""
  if len(hyps) != len(refs):
    raise ValueError(f"word_error_rate: {len(hyps)} transcripts for {len(refs)} references")
  chars = lang.split("-")[0].lower() in ("zh", "ja")

  def words(text):
    t = asr_normalize(text, lang)
    return [c for c in t if not c.isspace()] if chars else t.split()

  edits = total = 0
  for h, r in zip(hyps, refs):
    rw = words(r)
    edits += _edit_distance(words(h), rw)
    total += len(rw)
  return edits / total if total else float("nan")
