"""The in-domain ASR judge: a word recogniser for ASR-BLEU, trained on reference speech.

PocketSphinx (`liveinterp.eval.recognizers`) is the only offline English recogniser
here, and on this corpus's espeak voices it scores 4.4 ASR-BLEU on the *reference*
speech itself, so every system's ASR-BLEU reads ~0 and the speech columns of the
evaluation cannot tell systems apart. The judge is trained for the corpus instead:

- **Data**: the training split's reference *target* speech (`tgt_audio`, the corpus's own
  TTS voices) and its text, plus `judge.codec_clips` of those clips passed through the
  run's trained codec (encoded, decoded in the speaker's voice): the channel every model
  speaks through, which a judge of clean speech alone does not understand. Never a
  model's output, so it judges the models it scores without having learnt from them
  (trainer: `liveinterp/train/stages/asr_judge.py`).
- **Units**: the words of the training targets after `quality.asr_normalize` (the form
  ASR-BLEU scores), one CTC class each, blank = 0. A closed vocabulary, as the corpus's;
  the judge can only write words it was trained on (pocketsphinx has a lexicon too).
- **Model**: a conformer encoder (`conformer.ConformerEncoder`, its own width from
  `config.judge`) with full context (one chunk longer than any input, no left chunks)
  and a linear head over blank + words.
- **Loss**: CTC over the word sequence + `judge.frame_weight` x frame cross-entropy:
  every 40 ms frame inside a word's time span (the corpus's word times) is that word,
  every other frame blank — one valid CTC path, which gives the encoder a signal from
  step 1 (from scratch CTC alone sits in its blank plateau for a laptop budget).
- **Decoding**: greedy; repeats merged, blanks dropped.

`JudgeRecognizer` is the `quality.Recognizer` the evaluation uses when a run has a
trained judge (`RUN_DIR/asr_judge`): `name` says it is this judge, `self_judged` is False
(it never saw a model output). Its ceiling is reported beside every score (the reference
speech recognised the same way).
"""

from __future__ import annotations

import json
import os
import threading

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from liveinterp.common import audio as audio_lib, axes
from liveinterp.eval import quality, recognizers
from liveinterp.layers.linears import Dense
from liveinterp.models import conformer

STAGE = "asr_judge"                 # RUN_DIR/asr_judge: checkpoints, config, vocabulary
VOCAB_KEY = "judge_vocab"           # its key in RUN_DIR/asr_judge/result.json
LANG_KEY = "judge_lang"             # the language of its training speech (same file)
FULL_CONTEXT_MS = 3_600_000         # one chunk of an hour: every frame sees every frame
BUCKET_MS = 2560                    # inference pads audio to a multiple of this


def encoder_config(cfg) -> ml_collections.ConfigDict:
  """The full config with `encoder` replaced by the judge's (`config.judge`) and one
  full-context chunk (`FULL_CONTEXT_MS`, no left chunks)."""
  c = ml_collections.ConfigDict(cfg.to_dict())
  j = cfg.judge
  c.encoder.update(d_model=int(j.d_model), num_layers=int(j.num_layers),
                   num_heads=int(j.num_heads), mlp_dim=int(j.mlp_dim),
                   conv_kernel=int(j.conv_kernel), subsample=4, left_chunks=0,
                   dropout=0.0, block_norm=False)
  c.stream.chunk_ms = FULL_CONTEXT_MS
  return c


def frame_ms(cfg) -> float:
  """Milliseconds per judge frame (audio hop x the encoder's 4x subsampling)."""
  return float(cfg.audio.hop_ms) * 4


def words_of(text: str, lang: str) -> list[str]:
  """The judge's units of `text`: `asr_normalize`d words (what ASR-BLEU scores)."""
  return quality.asr_normalize(text, lang).split()


class CTCJudge(nnx.Module):
  """samples `[B, N]` (+ mask) -> (logits `[B, T, 1 + num_words]` float32, mask `[B, T]`);
  class 0 is the CTC blank, class k the word `vocab[k - 1]`."""

  def __init__(self, cfg, num_words: int, *, rngs: nnx.Rngs):
    if num_words < 1:
      raise ValueError(f"CTCJudge: num_words={num_words}; the judge needs a vocabulary")
    ecfg = encoder_config(cfg)
    self.encoder = conformer.ConformerEncoder(ecfg, rngs=rngs)
    self.num_classes = int(num_words) + 1
    self.head = Dense(int(ecfg.encoder.d_model), self.num_classes,
                      kernel_axes=(axes.EMBED, axes.VOCAB), use_bias=True,
                      dtype=cfg.dtype, param_dtype=cfg.param_dtype, rngs=rngs)

  def __call__(self, samples_bn: jax.Array,
               mask_bn: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    frames, mask = self.encoder.encode_audio(samples_bn, mask_bn)
    return self.head(frames).astype(jnp.float32), mask


def greedy_words(ids_t: np.ndarray, n_valid: int, vocab) -> list[str]:
  """CTC greedy decoding of one row of argmax ids: repeats merged, blanks dropped."""
  out, prev = [], 0
  for k in np.asarray(ids_t)[:int(n_valid)].tolist():
    if k != prev and k != 0:
      out.append(vocab[k - 1])
    prev = k
  return out


def _result(judge_dir: str) -> dict:
  path = os.path.join(judge_dir, "result.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"no trained ASR judge in {judge_dir}: result.json is missing "
                            f"(python -m liveinterp.recipe --steps=asr_judge)")
  with open(path) as f:
    return json.load(f)


def load_vocab(judge_dir: str) -> list[str]:
  """The judge's words (class k = word k - 1), as its training run recorded them in
  `result.json` (the stage's `info`)."""
  words = _result(judge_dir).get(VOCAB_KEY)
  if not words:
    raise FileNotFoundError(f"{judge_dir}/result.json has no {VOCAB_KEY!r}: the judge's "
                            f"training did not finish")
  return list(words)


def describe(judge_dir: str, step: int | None = None) -> str:
  """The judge's name in reports: "ctc-judge (<run>/<dir>, step N[, K codec twins])" —
  two judges of one run that differ in training are told apart (`benchmarks/rl_table`
  remakes reports another judge scored)."""
  judge_dir = os.path.abspath(judge_dir)
  res = _result(judge_dir)
  twins = int(res.get("codec_twins") or 0)
  where = f"{os.path.basename(os.path.dirname(judge_dir))}/{os.path.basename(judge_dir)}"
  return (f"ctc-judge ({where}, step {res.get('step') if step is None else step}"
          f"{f', {twins} codec twins' if twins else ''})")


def trained_for(judge_dir: str, lang: str) -> bool:
  """Whether `judge_dir` holds a finished judge for language `lang` ("en", "en-US", ...:
  the base language is compared)."""
  try:
    res = _result(judge_dir)
  except (FileNotFoundError, ValueError):
    return False
  same = recognizers.base_language(res.get(LANG_KEY, "")) == recognizers.base_language(lang)
  return (bool(res.get(VOCAB_KEY)) and same
          and os.path.isdir(os.path.join(judge_dir, "checkpoints")))


class JudgeRecognizer:
  """A trained judge as a `quality.Recognizer`: float or int16 audio at any rate -> the
  words it hears, space-joined ("" for empty audio). Audio is resampled to the judge's
  rate and zero-padded to a multiple of `BUCKET_MS` (one compile per bucket); calls are
  serialised by a lock."""

  self_judged = False

  def __init__(self, model: CTCJudge, vocab, cfg, name: str = "ctc-judge"):
    self.model, self.vocab = model, list(vocab)
    self.sample_rate = int(cfg.audio.sample_rate)
    self.bucket = self.sample_rate * BUCKET_MS // 1000
    self.name = name
    self._lock = threading.Lock()
    graphdef, state = nnx.split(model)

    @jax.jit
    def forward(state, samples, mask):
      logits, fmask = nnx.merge(graphdef, state)(samples, mask)
      return jnp.argmax(logits, -1).astype(jnp.int32), fmask.sum(-1)
    self._forward = lambda s, m: forward(state, s, m)

  @classmethod
  def from_dir(cls, judge_dir: str) -> "JudgeRecognizer":
    """The judge trained into `judge_dir` (`RUN_DIR/asr_judge`): its saved config,
    vocabulary and newest checkpoint. FileNotFoundError names what is missing."""
    from liveinterp.common import checkpointing, config as config_lib  # pylint: disable=g-import-not-at-top
    judge_dir = os.path.abspath(judge_dir)
    for need in ("config.json", "result.json", "checkpoints"):
      if not os.path.exists(os.path.join(judge_dir, need)):
        raise FileNotFoundError(f"no trained ASR judge in {judge_dir}: {need} is missing "
                                f"(python -m liveinterp.recipe --steps=asr_judge)")
    cfg = config_lib.load(os.path.join(judge_dir, "config.json"), check=False)
    vocab = load_vocab(judge_dir)
    model, step = checkpointing.restore_model(lambda rngs: CTCJudge(cfg, len(vocab), rngs=rngs),
                                              os.path.join(judge_dir, "checkpoints"))
    return cls(model, vocab, cfg, name=describe(judge_dir, step))

  def transcribe_batch(self, audios, sample_rate: int) -> list[str]:
    """Transcripts of several clips, padded together to one bucket length."""
    xs = [audio_lib.resample(audio_lib.check_waveform(a, sample_rate, "judge input"),
                             int(sample_rate), self.sample_rate) for a in audios]
    n = max([x.size for x in xs] + [1])
    n = -(-n // self.bucket) * self.bucket
    samples = np.zeros((len(xs), n), np.float32)
    mask = np.zeros((len(xs), n), bool)
    for i, x in enumerate(xs):
      samples[i, :x.size], mask[i, :x.size] = x, True
    with self._lock:
      ids, n_valid = jax.device_get(self._forward(jnp.asarray(samples), jnp.asarray(mask)))
    return [" ".join(greedy_words(ids[i], n_valid[i], self.vocab)) if xs[i].size else ""
            for i in range(len(xs))]

  def __call__(self, audio: np.ndarray, sample_rate: int) -> str:
    return self.transcribe_batch([audio], sample_rate)[0]
