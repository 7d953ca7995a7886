"""Small shared fixtures for the data-format tests (no tests of its own).

- `fake_examples`: a tiny deterministic record generator with the exact schema of
  `data_pipelines.corpus.iter_examples` (tones for words), used where the real corpus is
  not importable or would be too slow for a unit test.
- `micro_build()`: one micro TFDS build shared by the tests of this process, from the
  real `data_pipelines.corpus` (or `fake_examples` with LIVEINTERP_TEST_FAKE_CORPUS=1).
- `micro_source()`, `micro_tokenizer()`, `micro_config()`: what the stream/pipeline
  tests read.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np

SR = 16000
_ZH = list("我们你他好是的在有人这中大来上个国到说时要就出会可也")
_EN = ("the we you see good is of in have people this middle big come up one country "
       "to say time want then out can also").split()
_ES = ("el nosotros tu ver bueno es de en tener gente este medio grande venir arriba "
       "uno pais decir tiempo querer").split()
_DE = ("der wir du sehen gut ist von in haben leute dieses mitte gross kommen auf eins "
       "land sagen zeit wollen").split()
_VOCAB = {"zh": _ZH, "en": _EN, "es": _ES, "de": _DE}
_COUNTS = {"micro": dict(train=12, dev=3, test=3, talk=1),
           "tiny": dict(train=40, dev=6, test=6, talk=2)}


def _speak(rng, n_words, lang, talk=False):
  """Tone 'speech': one tone per word, 40-120 ms pauses; returns pcm, starts, ends (ms)."""
  pieces, starts, ends, t = [], [], [], 0.0
  lead = rng.integers(100, 300)
  pieces.append(np.zeros(int(lead * SR / 1000), np.float32))
  t = float(lead)
  for _ in range(n_words):
    dur = float(rng.integers(120, 320))
    f0 = float(rng.integers(150, 400)) * (1.3 if lang == "zh" else 1.0)
    tt = np.arange(int(dur * SR / 1000)) / SR
    pieces.append((0.3 * np.sin(2 * np.pi * f0 * tt)).astype(np.float32))
    starts.append(t)
    t += dur
    ends.append(t)
    gap = float(rng.integers(40, 400 if talk else 120))
    pieces.append(np.zeros(int(gap * SR / 1000), np.float32))
    t += gap
  pcm = np.round(np.concatenate(pieces) * 32767).astype(np.int16)
  return pcm, np.asarray(starts, np.float32), np.asarray(ends, np.float32)


def make_record(rng, idx, src_lang, tgt_lang, split, talk=False):
  """One schema-exact record with monotone ready times from a near-diagonal alignment."""
  n_src = int(rng.integers(3, 7)) * (4 if talk else 1)
  n_tgt = max(2, n_src + int(rng.integers(-1, 2)))
  sw = [str(rng.choice(_VOCAB[src_lang])) for _ in range(n_src)]
  tw = [str(rng.choice(_VOCAB[tgt_lang])) for _ in range(n_tgt)]
  join = lambda ws, lang: ("".join(ws) if lang == "zh" else " ".join(ws))  # noqa: E731
  src_pcm, s_st, s_en = _speak(rng, n_src, src_lang, talk)
  tgt_pcm, t_st, t_en = _speak(rng, n_tgt, tgt_lang, talk)
  pairs = []
  for j in range(n_tgt):
    i = min(n_src - 1, int(round(j * n_src / n_tgt)) + int(rng.integers(0, 2)))
    pairs.append((j, i))  # (tgt word, src word), as data_pipelines.corpus
  al = np.asarray(pairs, np.int32)
  ready = np.zeros(n_tgt, np.float32)
  for j in range(n_tgt):
    ready[j] = s_en[al[al[:, 0] == j, 1]].max()
  ready = np.maximum.accumulate(ready)
  spk = f"spk{int(rng.integers(0, 3)):02d}"
  return dict(
      id=f"fake-{src_lang}{tgt_lang}-{split}-{idx:04d}", source="fake", speaker=spk,
      src_lang=src_lang, tgt_lang=tgt_lang, src_text=join(sw, src_lang),
      tgt_text=join(tw, tgt_lang), src_audio=src_pcm, tgt_audio=tgt_pcm, src_words=sw,
      src_word_start_ms=s_st, src_word_end_ms=s_en, tgt_words=tw, tgt_word_start_ms=t_st,
      tgt_word_end_ms=t_en, tgt_ready_ms=ready, alignment=al, is_talk=bool(talk))


def fake_examples(pair, size, split, cache_dir, *, seed=0):
  """Same signature and schema as `data_pipelines.corpus.iter_examples`."""
  del cache_dir
  src, tgt = pair.split("-")
  n = _COUNTS.get(size, _COUNTS["micro"])[split]
  rng = np.random.default_rng([seed, ("train", "dev", "test", "talk").index(split), len(pair)])
  for i in range(n):
    yield make_record(rng, i, src, tgt, split, talk=(split == "talk"))


def real_corpus_available() -> bool:
  try:
    from data_pipelines import corpus
  except ImportError:
    return False
  return hasattr(corpus, "iter_examples")


def use_real_corpus() -> bool:
  """The real micro corpus unless LIVEINTERP_TEST_FAKE_CORPUS=1 or it is missing."""
  return os.environ.get("LIVEINTERP_TEST_FAKE_CORPUS") != "1" and real_corpus_available()


_ROOT: list[str] = []


def session_root() -> str:
  """One temporary folder shared by the data-format tests of this process."""
  if not _ROOT:
    d = tempfile.mkdtemp(prefix="liveinterp_formats_")
    atexit.register(shutil.rmtree, d, True)
    _ROOT.append(d)
  return _ROOT[0]


@functools.lru_cache(maxsize=None)
def micro_build(pair: str = "zh-en") -> str:
  """Prepares `liveinterp_corpus/<pair>_micro` once per process; returns its data_dir."""
  from data_pipelines.tfds_builders import liveinterp_corpus
  root = session_root()
  data_dir = os.path.join(root, "tfds")
  kw = {} if use_real_corpus() else dict(example_source=fake_examples)
  b = liveinterp_corpus.builder(pair, "micro", data_dir,
                                corpus_cache_dir=os.path.join(root, "corpus_cache"), **kw)
  b.download_and_prepare()
  return data_dir


def micro_source(split: str = "train", pair: str = "zh-en"):
  """Decoded random-access records of the micro build."""
  from data_pipelines import pipelines
  from data_pipelines.tfds_builders import liveinterp_corpus
  name = "liveinterp_corpus/" + liveinterp_corpus.config_name(pair, "micro")
  return pipelines.open_source(micro_build(pair), name, split)


def micro_config(stage: str = "sft"):
  """The micro recipe, unlocked, with a seq_len that fits micro records."""
  from configs import micro
  c = micro.get_config(stage)
  c.data.seq_len = 256
  return c


@functools.lru_cache(maxsize=None)
def micro_tokenizer(pair: str = "zh-en"):
  """A tokenizer trained on the micro build's train text at the micro sizes."""
  from data_pipelines.tokenizer import Tokenizer
  src = micro_source("train", pair)
  texts = []
  for i in range(len(src)):
    r = src[i]
    texts += [r["src_text"], r["tgt_text"]]
  prefix = os.path.join(session_root(), "tok", pair.replace("-", "_") + "_micro")
  return Tokenizer.train_from_config(texts, prefix, micro_config())
