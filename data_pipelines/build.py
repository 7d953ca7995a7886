r"""Build one corpus end to end: corpus -> TFDS (ArrayRecord) -> sentencepiece tokenizer.

  python -m data_pipelines.build --pair=zh-en --size=tiny --data_dir=DIR

Layout under DIR:

```
corpus_cache/                     the corpus module's own cache (synthesised speech, ...)
tfds/liveinterp_corpus/<src>_<tgt>_<size>/1.0.0/   ArrayRecord shards + dataset_info
tokenizer/<src>_<tgt>_<size>_v<V>.model|.json      sentencepiece model + id layout
build_summary_<src>_<tgt>_<size>.json              counts, skips, sizes, times
```

Idempotent and resumable: a prepared TFDS build and a tokenizer whose layout matches are
reused (TFDS writes into a temporary folder and renames it when complete, so an
interrupted run leaves nothing half-done that would be reused; the corpus cache keeps the
expensive work). `--force` rebuilds the TFDS data and the tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Callable

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  """The CLI flags (defined on demand so that importing this module defines none)."""
  flags.DEFINE_enum("pair", "zh-en", ["zh-en", "en-zh", "en-es", "en-de", "es-en", "de-en"],
                    "Language pair (source-target).")
  flags.DEFINE_enum("size", "tiny", ["micro", "tiny", "full"], "Corpus size.")
  flags.DEFINE_string("data_dir", None, "Output folder.")
  flags.DEFINE_enum("model", None, ["micro", "tiny", "small", "1b", "7b"],
                    "Model size whose tokenizer/codec layout to use (default: micro for "
                    "--size=micro, tiny for tiny, small for full).")
  flags.DEFINE_integer("text_vocab_size", None,
                       "Sentencepiece vocab size (default: the model config's).")
  flags.DEFINE_integer("seed", 0, "Corpus seed.")
  flags.DEFINE_bool("force", False, "Rebuild TFDS data and tokenizer.")


DEFAULT_MODEL = {"micro": "micro", "tiny": "tiny", "full": "small"}


def _say(msg: str):
  print(f"[build] {msg}", flush=True)


def model_config(model: str):
  """The recipe config of a model size (its tokenizer / codec / llm sizes)."""
  import importlib  # pylint: disable=g-import-not-at-top
  return importlib.import_module(f"configs.{model}").get_config()


def tokenizer_prefix(data_dir: str, pair: str, size: str, text_vocab_size: int) -> str:
  """Where `run` writes the tokenizer (without .model/.json)."""
  return os.path.join(data_dir, "tokenizer",
                      f"{pair.replace('-', '_')}_{size}_v{text_vocab_size}")


def run(pair: str, size: str, data_dir: str, *, model: str | None = None,
        text_vocab_size: int | None = None, seed: int = 0, force: bool = False,
        example_source: Callable[..., Any] | None = None) -> dict:
  """Runs the three steps (skipping finished ones) and returns the summary dict."""
  # Imported here so `--help` is fast.
  from data_pipelines import tokenizer as tokmod  # pylint: disable=g-import-not-at-top
  from data_pipelines.tfds_builders import common  # pylint: disable=g-import-not-at-top
  from data_pipelines.tfds_builders import liveinterp_corpus  # pylint: disable=g-import-not-at-top

  t_all = time.time()
  os.makedirs(data_dir, exist_ok=True)
  tfds_dir = os.path.join(data_dir, "tfds")
  cache_dir = os.path.join(data_dir, "corpus_cache")
  cfg = model_config(model or DEFAULT_MODEL[size])
  vocab = text_vocab_size or cfg.tokenizer.text_vocab_size
  times: dict[str, float] = {}

  # 1+2. corpus -> TFDS ------------------------------------------------------------------
  _say(f"step 1/3 corpus + step 2/3 TFDS: {pair} {size} -> {tfds_dir}")
  t0 = time.time()
  kw = dict(corpus_cache_dir=cache_dir, corpus_seed=seed)
  if example_source is not None:
    kw["example_source"] = example_source
  b = liveinterp_corpus.builder(pair, size, tfds_dir, **kw)
  reused_tfds = b.is_prepared() and not force
  if b.is_prepared() and force:
    shutil.rmtree(os.fspath(b.data_dir))
    b = liveinterp_corpus.builder(pair, size, tfds_dir, **kw)
  if reused_tfds:
    _say(f"  reusing prepared build at {b.data_dir}")
  else:
    b.download_and_prepare()  # TFDS prints per-split progress bars
  times["corpus_and_tfds_s"] = round(time.time() - t0, 2)
  splits = {name: int(info.num_examples) for name, info in b.info.splits.items()}
  stats = dict(b.info.metadata.get("build_stats", {}))
  _say(f"  splits: {splits}")

  # 3. tokenizer -------------------------------------------------------------------------
  prefix = tokenizer_prefix(data_dir, pair, size, vocab)
  _say(f"step 3/3 sentencepiece ({vocab} pieces max) -> {prefix}.model")
  t0 = time.time()
  reused_tok = False
  if not force and os.path.exists(prefix + ".model") and os.path.exists(prefix + ".json"):
    try:
      tok = tokmod.Tokenizer.load(prefix)
      want = (vocab, cfg.codec.num_codebooks, cfg.codec.codebook_size, cfg.llm.vocab_size)
      got = (tok.text_vocab_size, tok.num_codebooks, tok.codebook_size, tok.llm_vocab_size)
      reused_tok = want == got
      if not reused_tok:
        _say(f"  existing tokenizer layout {got} != wanted {want}: retraining")
    except tokmod.TokenizerError as e:
      _say(f"  existing tokenizer unusable ({e}): retraining")
  if reused_tok:
    _say("  reusing trained tokenizer")
  else:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    src = tfds.data_source(b.info.full_name.rsplit("/", 1)[0], split="train",
                           data_dir=tfds_dir, download=False, try_gcs=False)
    texts = []
    for i in range(len(src)):
      r = common.decode_example(src[i])
      texts += [r["src_text"], r["tgt_text"]]
      if (i + 1) % 2000 == 0:
        _say(f"  read {i + 1}/{len(src)} training records")
    tok = tokmod.Tokenizer.train(texts, prefix, text_vocab_size=vocab,
                                 num_codebooks=cfg.codec.num_codebooks,
                                 codebook_size=cfg.codec.codebook_size,
                                 llm_vocab_size=cfg.llm.vocab_size)
  times["tokenizer_s"] = round(time.time() - t0, 2)

  sizes = dict(tfds_bytes=common.dir_size_bytes(os.fspath(b.data_dir)),
               corpus_cache_bytes=common.dir_size_bytes(cache_dir),
               tokenizer_bytes=common.dir_size_bytes(os.path.dirname(prefix)))
  times["total_s"] = round(time.time() - t_all, 2)
  summary = dict(pair=pair, size=size, data_dir=data_dir, tfds_name=b.info.full_name,
                 tfds_dir=os.fspath(b.data_dir), splits=splits,
                 skipped={k: v.get("skipped", 0) for k, v in stats.items()},
                 skip_reasons={k: v.get("skip_reasons", {}) for k, v in stats.items()},
                 per_source=dict(b.info.metadata.get("per_source_counts", {})),
                 tokenizer=prefix, tokenizer_pieces=tok.num_pieces,
                 vocab_layout=dict(text=vocab, speech_offset=tok.speech_offset,
                                   used=tok.used_vocab_size, llm=tok.llm_vocab_size),
                 reused=dict(tfds=reused_tfds, tokenizer=reused_tok), sizes=sizes,
                 times=times)
  path = os.path.join(data_dir, f"build_summary_{pair.replace('-', '_')}_{size}.json")
  with open(path + ".tmp", "w") as f:
    json.dump(summary, f, indent=1, ensure_ascii=False)
  os.replace(path + ".tmp", path)
  _print_summary(summary)
  return summary


def _mb(n: int) -> str:
  return f"{n / 2**20:.1f} MiB"


def _print_summary(s: dict):
  _say("summary")
  for split, n in s["splits"].items():
    sk = s["skipped"].get(split, 0)
    reasons = s["skip_reasons"].get(split, {})
    _say(f"  {split:6s} {n:7d} examples  {sk} skipped {reasons if reasons else ''}")
  _say(f"  sources   {s['per_source']}")
  _say(f"  tokenizer {s['tokenizer_pieces']} pieces, layout {s['vocab_layout']}")
  _say(f"  disk      tfds {_mb(s['sizes']['tfds_bytes'])}, corpus cache "
       f"{_mb(s['sizes']['corpus_cache_bytes'])}, tokenizer "
       f"{_mb(s['sizes']['tokenizer_bytes'])}")
  _say(f"  time      {s['times']}  reused {s['reused']}")


def main(argv):
  del argv
  if not FLAGS.data_dir:
    raise app.UsageError("--data_dir is required")
  run(FLAGS.pair, FLAGS.size, FLAGS.data_dir, model=FLAGS.model,
      text_vocab_size=FLAGS.text_vocab_size, seed=FLAGS.seed, force=FLAGS.force)


if __name__ == "__main__":
  define_flags()
  app.run(main)
