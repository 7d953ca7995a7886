"""ASR-BLEU normalises transcripts and references alike (issue #10, Quality (a)).

A recogniser writes lower-case words without punctuation and numbers as spoken words;
scored against raw references, a perfect transcript got BLEU ~48 instead of 100.
"""

import numpy as np
import pytest

from liveinterp.eval import quality as Q

# Reference texts (as the corpus writes them) and what a perfect English recogniser
# writes for them, typed by hand in pocketsphinx's spelling: lower case, no punctuation,
# numbers as espeak-ng says them, apostrophes inside words kept, "Mr." -> "mr".
REFS = [
    "Mr. Li waited sixty eight months.",
    "We finished work at twelve o'clock last Thursday.",
    "It's 25 degrees in Chongqing today!",
    "The meeting is on May 3rd, at 10:30.",
    "Prices rose 4.5% in 2024; the well-known shop sells 1,200 cups.",
    "\u201cWhere is Mrs. Wang?\u201d she asked \u2014 it\u2019s late.",
]
PERFECT = [
    "mr li waited sixty eight months",
    "we finished work at twelve o'clock last thursday",
    "it's twenty five degrees in chongqing today",
    "the meeting is on may third at ten thirty",
    "prices rose four point five percent in two thousand and twenty four the well known "
    "shop sells one thousand two hundred cups",
    "where is mrs wang she asked it's late",
]


class PerfectRecognizer:
  """Returns, for audio i (a 1-sample array holding i), the perfect transcript i."""
  name, self_judged = "perfect", False

  def __call__(self, audio, sample_rate):
    return PERFECT[int(audio[0])]


def test_perfect_transcript_scores_100():
  audios = [np.full(1, i, np.float32) for i in range(len(REFS))]
  out = Q.asr_bleu(audios, REFS, PerfectRecognizer(), lang="en")
  assert out["asr_bleu"] == pytest.approx(100.0)
  assert out["asr_chrf"] == pytest.approx(100.0)
  assert out["transcripts"] == PERFECT and out["normalized"]
  # What the unnormalised scoring (before the fix) gave the same perfect transcripts.
  assert Q.corpus_bleu(PERFECT, REFS, "en") < 50.0


def test_normalisation_does_not_inflate_wrong_transcripts():
  wrong = PERFECT[1:] + PERFECT[:1]
  assert Q.asr_scores(wrong, REFS)["asr_bleu"] < 10.0
  one_word_off = ["mr li waited sixty nine months"] + PERFECT[1:]
  assert 80.0 < Q.asr_scores(one_word_off, REFS)["asr_bleu"] < 100.0


# Read off espeak-ng's phonemes (`espeak_TextToPhonemes`, en voice) for each number.
ESPEAK_READINGS = {
    "0": "zero", "13": "thirteen", "101": "one hundred and one",
    "999": "nine hundred and ninety nine", "1001": "one thousand and one",
    "1066": "one thousand and sixty six", "1100": "one thousand one hundred",
    "1205": "one thousand two hundred and five", "1900": "nineteen hundred",
    "1999": "nineteen hundred and ninety nine",
    "1,999": "one thousand nine hundred and ninety nine",
    "2024": "two thousand and twenty four", "100000": "one hundred thousand",
    "1234567": "one million two hundred and thirty four thousand five hundred and "
               "sixty seven",
    "1,000,000": "one million", "1.05": "one point zero five",
    "12,345.67": "twelve thousand three hundred and forty five point six seven",
    "007": "zero zero seven", "2:05": "two zero five", "10:30": "ten thirty",
    "21st": "twenty first", "2nd": "second", "3rd": "third", "12th": "twelfth",
    "99.9%": "ninety nine point nine percent", "$5": "dollar five", "\u00a35": "pound five",
    "-4": "minus four", "10-20": "ten twenty", "A4": "a four",
}


@pytest.mark.parametrize("written,spoken", sorted(ESPEAK_READINGS.items()))
def test_numbers_spelled_as_espeak_reads_them(written, spoken):
  assert Q.asr_normalize(written, "en") == spoken


def test_spelled_numbers_are_words_the_recogniser_can_write():
  from liveinterp.eval import recognizers
  lexicon = recognizers.lexicon_words()
  for n in list(range(1, 1200, 7)) + [1999, 20_000, 3_000_000, 7_000_000_000]:
    for form in (str(n), f"{n}th", f"{n}.25", f"{n}%", f"${n}"):
      words = Q.asr_normalize(form, "en").split()
      assert words and set(words) <= lexicon, (form, set(words) - lexicon)
  for ref, perfect in zip(REFS, PERFECT):
    assert set(perfect.split()) <= lexicon, perfect


def test_normalize_properties():
  for t in REFS + PERFECT:
    n = Q.asr_normalize(t, "en")
    assert Q.asr_normalize(n, "en") == n                 # idempotent
    assert n == n.lower() and not any(c.isdigit() for c in n)
  assert Q.asr_normalize("'Hi', said the students' teacher.") == "hi said the students teacher"
  # Other languages: punctuation and case only, digits kept (no recogniser spelling here).
  assert Q.asr_normalize("我们今天，去公园。", "zh") == "我们今天 去公园"
  assert Q.asr_normalize("¡Hola, Mundo! 3", "es") == "hola mundo 3"
