r"""Build one corpus end to end: corpus -> TFDS (ArrayRecord) -> sentencepiece tokenizer
-> length statistics of the training streams.

  python -m data_pipelines.build --pair=zh-en --size=tiny --data_dir=DIR
  python -m data_pipelines.build --pair=zh-en --size=laptop --data_dir=DIR  # drills
  python -m data_pipelines.build --size=micro --data_dir=DIR --config.data.seq_len=512

`--config.a.b=v` overrides apply to the model config (`--model`) whose tokenizer/codec
layout, stream timing and data limits the build uses (`model_config`); the pair and size
come from `--pair` and `--size` (overriding `data.pair` / `data.build` is an error).

Layout under DIR:

```
corpus_cache/                     the corpus module's own cache (synthesised speech, ...)
tfds/liveinterp_corpus/<src>_<tgt>_<size>/1.0.0/   ArrayRecord shards + dataset_info
tokenizer/<src>_<tgt>_<size>_v<V>[_bpe].model|.json  sentencepiece model + id layout
build_summary_<src>_<tgt>_<size>.json              counts, skips, knobs, sizes, times,
                                                  length stats
length_stats_<src>_<tgt>_<size>.json               the length stats alone (`length_stats`)
```

Length stats (step 4): over the train split (all records, or an evenly spaced sample of
`--length_stats_records`), the token lengths of the streams the trainer builds
(`stream_format`, the model config's timing at the codec frame rate), per stage/task:
`{"sft": {"simul": V}, "pretrain": {"asr"|"st"|"tts"|"s2st": V}}` with
V = {"with_speech": S, "without_speech": S} (speech tokens as placeholder zeros, or no
speech part; TTS/S2ST have no "without_speech") and
S = {"n", "errors", "stream_len": {p50, p90, p99, max}, "audio_slots": {p99, max},
"turn_len": {p99, max} (SIMUL only: tokens of one turn Y_t, speech included)}, plus
"text_tokens": {"src"|"tgt": {p50, p90, p99, max}} (sentencepiece tokens of the texts).
S also has "error_reasons" ({reason: count}, `stream_format.FormatError.reason`) when some
records fail. The trainer reads them with `length_stats(data_dir, pair, size)` to size
sequences. "speech_ms_per_token": {n, p1, p50, p99, lo, hi, margin} of the target speech
ms per target text token of every writing SFT turn (`turn_speech_ms_per_token`), with
lo = p1 / 1.5 and hi = p99 · 1.5 (`SPEECH_BOUNDS_MARGIN`): the RL format reward's speech
length bounds (`speech_ms_per_token_bounds`; absent without target speech or in builds
made before it existed).

SFT drops (also step 4, same records): every record the SFT pipeline would drop because
`stream_format.simul_windows` cannot format it under the trainer's own spec (the model
config's timing and `max_len=data.seq_len`), with and without speech, counted by reason:
`"sft_drops": {"max_len", "with_speech"|"without_speech": {"records", "dropped",
"fraction", "reasons": {reason: count}, "first": {reason: first message}}}`. The build
summary repeats it with the limit; when the worse variant drops more than
`--max_sft_drop_fraction` of the records (default 5 %) the build fails with `BuildError`
after writing the summary.

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

from absl import flags

from liveinterp.common import files

FLAGS = flags.FLAGS


def define_flags():
  """The CLI flags (defined on demand so that importing this module defines none)."""
  flags.DEFINE_enum("pair", "zh-en", ["zh-en", "en-zh", "en-es", "en-de", "es-en", "de-en"],
                    "Language pair (source-target).")
  flags.DEFINE_enum("size", "tiny", ["micro", "tiny", "full", "laptop"],
                    "Corpus size (laptop: zh-en interpreting drills, 4 voices).")
  flags.DEFINE_string("data_dir", None, "Output folder.")
  flags.DEFINE_enum("model", None, ["micro", "tiny", "small", "1b", "7b"],
                    "Model size whose tokenizer/codec layout to use (default: micro for "
                    "--size=micro, tiny for tiny, small for full).")
  flags.DEFINE_integer("text_vocab_size", None,
                       "Sentencepiece vocab size (default: the model config's).")
  flags.DEFINE_integer("seed", 0, "Corpus seed.")
  flags.DEFINE_bool("force", False, "Rebuild TFDS data and tokenizer.")
  flags.DEFINE_integer("length_stats_records", None,
                       "Records of the train split for the length stats (default all).")
  flags.DEFINE_float("max_sft_drop_fraction", DEFAULT_MAX_SFT_DROP_FRACTION,
                     "Fail the build when more than this fraction of the train records "
                     "cannot be formatted as SFT streams (see the module docstring).")


DEFAULT_MODEL = {"micro": "micro", "tiny": "tiny", "full": "small", "laptop": "tiny"}
DEFAULT_MAX_SFT_DROP_FRACTION = 0.05


class BuildError(RuntimeError):
  """The built data fails a quality gate (the message names the measure and the limit)."""


PERCENTILES = (50, 90, 99)
# Speech-length bounds for the RL format reward: [p1 / margin, p99 * margin] of the
# training turns' target speech ms per text token. The margin leaves room for the
# model's own speaking rate (the codec and TTS voices vary) without letting a turn's
# speech run on or stop far beyond anything the training data shows.
SPEECH_BOUNDS_MARGIN = 1.5


def _say(msg: str):
  print(f"[build] {msg}", flush=True)


# Config fields the build takes from its own flags (--pair, --size), not from the model
# config: an override of one would be silently ignored, so it is rejected instead.
FLAG_FIELDS = {"data.pair": "--pair", "data.build": "--size"}


def model_config(model: str, overrides=()):
  """The recipe config of a model size (its tokenizer / codec / llm sizes, the stream
  timing and data limits the length stats use) with `"a.b=v"` overrides applied
  (`config.load`: an unknown field or bad value is a ConfigError naming it)."""
  from liveinterp.common import config as config_lib  # pylint: disable=g-import-not-at-top
  overrides = [overrides] if isinstance(overrides, str) else list(overrides)
  for item in overrides:
    path = config_lib.parse_override(item)[0]
    if path in FLAG_FIELDS:
      raise config_lib.ConfigError(
          f"config spec {model!r}: override {path}: the build takes it from "
          f"{FLAG_FIELDS[path]}, pass that instead")
  return config_lib.load(model, overrides)


def tokenizer_prefix(data_dir: str, pair: str, size: str, text_vocab_size: int,
                     model_type: str = "unigram") -> str:
  """Where `run` writes the tokenizer (without .model/.json); unigram models keep the
  older name without a model-type suffix."""
  suffix = "" if model_type == "unigram" else f"_{model_type}"
  return os.path.join(data_dir, "tokenizer",
                      f"{pair.replace('-', '_')}_{size}_v{text_vocab_size}{suffix}")


def tokenizer_prefix_for(data_dir: str, cfg) -> str:
  """`tokenizer_prefix` of the corpus and tokenizer named by a model config."""
  return tokenizer_prefix(data_dir, cfg.data.pair, cfg.data.build,
                          int(cfg.tokenizer.text_vocab_size),
                          cfg.tokenizer.get("model_type", "unigram"))


def summary_path(data_dir: str, pair: str, size: str) -> str:
  return os.path.join(data_dir, f"build_summary_{pair.replace('-', '_')}_{size}.json")


def length_stats_path(data_dir: str, pair: str, size: str) -> str:
  return os.path.join(data_dir, f"length_stats_{pair.replace('-', '_')}_{size}.json")


def length_stats(data_dir: str, pair: str, size: str) -> dict:
  """The length stats `run` recorded for `pair` at `size` under `data_dir` (see the
  module docstring); FileNotFoundError names the build command when there are none."""
  path = length_stats_path(data_dir, pair, size)
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"no length stats at {path}; run: python -m data_pipelines.build --pair={pair} "
        f"--size={size} --data_dir={data_dir}")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _dist(values, percentiles=PERCENTILES) -> dict:
  import numpy as np  # pylint: disable=g-import-not-at-top
  v = np.asarray(values, np.int64)
  out = {f"p{q}": int(np.percentile(v, q, method="higher")) for q in percentiles}
  out["max"] = int(v.max())
  return out


def compute_length_stats(records, tok, cfg) -> dict:
  """Stream length stats (module docstring) of `records` (corpus records) under the
  timing of model config `cfg` (`StreamSpec.from_config`, no max_len), and the SFT drops
  under the trainer's spec (`"sft_drops"`, max_len = data.seq_len)."""
  from data_pipelines import stream_format as sfmt  # pylint: disable=g-import-not-at-top
  variants = {"with_speech": "zeros", "without_speech": "none"}
  specs = {v: sfmt.StreamSpec.from_config(cfg, max_len=None, speech_placeholder=ph)
           for v, ph in variants.items()}
  train_specs = {v: sfmt.StreamSpec.from_config(cfg, speech_placeholder=ph)
                 for v, ph in variants.items()}
  drops = {v: dict(records=0, dropped=0, reasons={}, first={}) for v in variants}
  from data_pipelines import pipelines  # pylint: disable=g-import-not-at-top
  context_chunks = pipelines.window_context_chunks(cfg)
  tasks = [("sft", "simul")] + [("pretrain", t) for t in ("asr", "st", "tts", "s2st")]
  acc = {(stage, task, v): dict(stream=[], slots=[], turns=[], errors=0, first_error="",
                                reasons={})
         for stage, task in tasks for v in variants}
  text_tokens: dict[str, list[int]] = {"src": [], "tgt": []}
  ms_per_token: list[float] = []
  for rec in records:
    for v, spec in train_specs.items():  # what the SFT pipeline drops (StreamTransform)
      dv = drops[v]
      dv["records"] += 1
      try:  # long talks are cut into windows (pipelines.StreamTransform): drop as it does
        sfmt.simul_windows(rec, tok, spec, policy=cfg.data.policy, k=cfg.data.wait_k,
                           context_chunks=context_chunks)
      except sfmt.FormatError as e:
        dv["dropped"] += 1
        dv["reasons"][e.reason] = dv["reasons"].get(e.reason, 0) + 1
        dv["first"].setdefault(e.reason, str(e))
    text_tokens["src"].append(len(tok.encode_text(rec["src_text"])))
    text_tokens["tgt"].append(len(tok.encode_text(rec["tgt_text"])))
    try:
      ms_per_token += turn_speech_ms_per_token(rec, tok, specs["with_speech"],
                                               policy=cfg.data.policy, k=cfg.data.wait_k)
    except sfmt.FormatError:  # counted with the SIMUL errors below
      pass
    for v, spec in specs.items():
      for stage, task in tasks:
        a = acc[(stage, task, v)]
        try:
          if task == "simul":
            ex = sfmt.simul_example(rec, tok, spec, policy=cfg.data.policy,
                                    k=cfg.data.wait_k)
            a["turns"] += [len(ids) for _, ids in sfmt.turns(ex)]
          else:
            ex = sfmt.pretrain_example(rec, tok, spec, task)
        except sfmt.FormatError as e:
          a["errors"] += 1
          a["first_error"] = a["first_error"] or str(e)
          a["reasons"][e.reason] = a["reasons"].get(e.reason, 0) + 1
          continue
        a["stream"].append(len(ex["tokens"]))
        a["slots"].append(int(ex["audio_slot_mask"].sum()))
  out: dict = {"text_tokens": {k: _dist(v) for k, v in text_tokens.items() if v}}
  for (stage, task, v), a in acc.items():
    if not a["stream"]:  # e.g. TTS without speech tokens: not a stream the trainer builds
      continue
    s = {"n": len(a["stream"]), "errors": a["errors"], "stream_len": _dist(a["stream"]),
         "audio_slots": _dist(a["slots"], (99,))}
    if a["errors"]:
      s["first_error"] = a["first_error"]
      s["error_reasons"] = a["reasons"]
    if task == "simul":
      s["turn_len"] = _dist(a["turns"], (99,))
    out.setdefault(stage, {}).setdefault(task, {})[v] = s
  for dv in drops.values():
    dv["fraction"] = dv["dropped"] / dv["records"] if dv["records"] else 0.0
  out["sft_drops"] = dict(max_len=int(cfg.data.seq_len), **drops)
  if ms_per_token:
    import numpy as np  # pylint: disable=g-import-not-at-top
    v = np.asarray(ms_per_token, np.float64)
    p1, p50, p99 = (float(np.percentile(v, q)) for q in (1, 50, 99))
    out["speech_ms_per_token"] = dict(
        n=int(v.size), p1=p1, p50=p50, p99=p99, lo=p1 / SPEECH_BOUNDS_MARGIN,
        hi=p99 * SPEECH_BOUNDS_MARGIN, margin=SPEECH_BOUNDS_MARGIN)
  return out


def turn_speech_ms_per_token(rec, tok, spec, *, policy: str = "alignment", k: int = 3
                             ) -> list[float]:
  """Target speech ms per target text token of each writing SFT turn of `rec`.

  The same spans `stream_format.simul_example` cuts: words go to turns by
  `turn_schedule`, a turn's speech is the codec frames `codec_frame_bounds` gives its
  words (frames of the target audio at `spec.codec_hop`, as the "zeros" placeholder
  counts them) at 1000 / `spec.codec_rate_hz` ms each, divided by the tokens of the
  turn's text (`tok.encode_text` of the joined words). FormatError as simul_example's.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines import stream_format as sfmt  # pylint: disable=g-import-not-at-top
  words = list(rec["tgt_words"])
  n_frames = -(-len(rec["tgt_audio"]) // spec.codec_hop)
  if not words or n_frames == 0:
    return []
  sfmt.check_record(rec, spec)
  ready = sfmt.ready_times(rec, policy, k)
  turn_of_word = sfmt.turn_schedule(ready, sfmt.num_chunks(len(rec["src_audio"]), spec),
                                    spec.chunk_ms)
  bounds = sfmt.codec_frame_bounds(rec["tgt_word_start_ms"], n_frames, spec.codec_rate_hz,
                                   str(rec.get("id", "")))
  frame_ms = 1000.0 / spec.codec_rate_hz
  out = []
  for t in np.unique(turn_of_word):
    idx = np.nonzero(turn_of_word == t)[0]
    a, b = int(idx[0]), int(idx[-1]) + 1
    n_tok = len(tok.encode_text(sfmt.join_words(words[a:b], rec["tgt_lang"])))
    if n_tok:
      out.append((int(bounds[b]) - int(bounds[a])) * frame_ms / n_tok)
  return out


def speech_ms_per_token_bounds(stats: dict) -> tuple[float, float] | None:
  """(lo, hi) plausible target speech ms per text token from length stats (the RL format
  reward's bounds, `RewardConfig.speech_ms_per_token`); None for stats without them
  (builds before the entry existed, or no target speech)."""
  s = stats.get("speech_ms_per_token")
  if not s:
    return None
  return float(s["lo"]), float(s["hi"])


def sft_drop_gate(sft_drops: dict, max_fraction: float) -> dict:
  """The summary's `sft_drops`: the counts of `compute_length_stats`, the worse variant's
  fraction and the limit; raises nothing (`check_sft_drops` does)."""
  if not 0.0 <= max_fraction <= 1.0:
    raise ValueError(f"max_sft_drop_fraction={max_fraction}: expected a fraction in [0, 1]")
  worst = max(("with_speech", "without_speech"), key=lambda v: sft_drops[v]["fraction"])
  return dict(sft_drops, worst_variant=worst, fraction=sft_drops[worst]["fraction"],
              max_fraction=float(max_fraction))


def check_sft_drops(gate: dict):
  """BuildError when more SFT records are dropped than the limit allows."""
  if gate["fraction"] > gate["max_fraction"]:
    w = gate[gate["worst_variant"]]
    raise BuildError(
        f"SFT formatting drops {gate['fraction']:.1%} of the train records ({w['dropped']} "
        f"of {w['records']}, {gate['worst_variant'].replace('_', ' ')}, max_len="
        f"{gate['max_len']}) > the limit max_sft_drop_fraction={gate['max_fraction']:.1%}; "
        f"by reason: {w['reasons']}; first: {list(w['first'].values())[:3]}. Fix the "
        f"corpus or raise --max_sft_drop_fraction.")


def _length_stats_step(b, tfds_dir: str, tok, cfg, model: str, max_records: int | None
                       ) -> dict:
  """Length stats over the train split of builder `b` (evenly spaced sample if
  `max_records` is smaller than the split)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from data_pipelines.tfds_builders import common  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  src = tfds.data_source(b.info.full_name.rsplit("/", 1)[0], split="train",
                         data_dir=tfds_dir, download=False, try_gcs=False)
  n = len(src)
  idx = (np.arange(n) if max_records is None or max_records >= n
         else np.unique(np.linspace(0, n - 1, max_records).round().astype(np.int64)))
  records = (common.decode_example(src[int(i)]) for i in idx)
  stats = compute_length_stats(records, tok, cfg)
  from data_pipelines import stream_format as sfmt  # pylint: disable=g-import-not-at-top
  sp = sfmt.StreamSpec.from_config(cfg, max_len=None)
  spec = {k: getattr(sp, k) for k in ("chunk_ms", "slot_ms", "codec_hop", "num_codebooks",
                                      "codec_rate_hz")}
  return dict(split="train", records=int(len(idx)), split_records=n,
              sampled=bool(len(idx) < n), model=model, policy=cfg.data.policy,
              # SFT turns measured with the live source transcript (`<src> w+`) or not
              src_transcript=bool(sp.src_transcript), spec=spec, seq_len=int(cfg.data.seq_len),
              max_audio_slots=int(cfg.data.max_audio_slots), **stats)


def run(pair: str, size: str, data_dir: str, *, model: str | None = None,
        text_vocab_size: int | None = None, seed: int = 0, force: bool = False,
        example_source: Callable[..., Any] | None = None,
        length_stats_records: int | None = None,
        max_sft_drop_fraction: float = DEFAULT_MAX_SFT_DROP_FRACTION,
        config_overrides=()) -> dict:
  """Runs the four steps (skipping finished ones) and returns the summary dict.

  config_overrides: `"a.b=v"` overrides of the model config (`model_config`), checked
  before anything is written; recorded in the summary and the length stats (stats
  recorded under other overrides are recomputed, not reused).

  length_stats_records: records of the train split for the length stats (an evenly
  spaced sample; None = all).
  max_sft_drop_fraction: BuildError (after the summary is written) when a larger
  fraction of those records cannot be formatted as SFT streams.
  """
  # Imported here so `--help` is fast.
  from data_pipelines import tokenizer as tokmod  # pylint: disable=g-import-not-at-top
  from data_pipelines.tfds_builders import common  # pylint: disable=g-import-not-at-top
  from data_pipelines.tfds_builders import liveinterp_corpus  # pylint: disable=g-import-not-at-top

  t_all = time.time()
  model = model or DEFAULT_MODEL[size]
  overrides = ([config_overrides] if isinstance(config_overrides, str)
               else list(config_overrides))
  cfg = model_config(model, overrides)  # a bad override fails before anything is written
  os.makedirs(data_dir, exist_ok=True)
  tfds_dir = os.path.join(data_dir, "tfds")
  cache_dir = os.path.join(data_dir, "corpus_cache")
  vocab = text_vocab_size or cfg.tokenizer.text_vocab_size
  times: dict[str, float] = {}

  # 1+2. corpus -> TFDS ------------------------------------------------------------------
  _say(f"step 1/4 corpus + step 2/4 TFDS: {pair} {size} -> {tfds_dir}")
  t0 = time.time()
  kw = dict(corpus_cache_dir=cache_dir, corpus_seed=seed,
            multi_speaker_talks=float(cfg.data.get("multi_speaker_talks", 0.0)))
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
  model_type = cfg.tokenizer.get("model_type", "unigram")
  prefix = tokenizer_prefix(data_dir, pair, size, vocab, model_type)
  _say(f"step 3/4 sentencepiece ({vocab} pieces max) -> {prefix}.model")
  t0 = time.time()
  reused_tok = False
  if not force and os.path.exists(prefix + ".model") and os.path.exists(prefix + ".json"):
    try:
      tok = tokmod.Tokenizer.load(prefix)
      want = (vocab, cfg.codec.num_codebooks, cfg.codec.codebook_size, cfg.llm.vocab_size,
              model_type)
      got = (tok.text_vocab_size, tok.num_codebooks, tok.codebook_size, tok.llm_vocab_size,
             tok.model_type)
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
    tok = tokmod.Tokenizer.train(texts, prefix, text_vocab_size=vocab, model_type=model_type,
                                 num_codebooks=cfg.codec.num_codebooks,
                                 codebook_size=cfg.codec.codebook_size,
                                 llm_vocab_size=cfg.llm.vocab_size)
  times["tokenizer_s"] = round(time.time() - t0, 2)

  # 4. length stats of the training streams ----------------------------------------------
  ls_path = length_stats_path(data_dir, pair, size)
  _say(f"step 4/4 stream length stats (train split) -> {ls_path}")
  t0 = time.time()
  lstats = None
  if reused_tfds and reused_tok and os.path.exists(ls_path):
    with open(ls_path, encoding="utf-8") as f:
      old = json.load(f)
    if (old.get("tokenizer"), old.get("model"), old.get("requested_records"),
        old.get("config_overrides", [])) == \
        (prefix, model, length_stats_records, overrides) and "sft_drops" in old:
      lstats = old
      _say("  reusing recorded length stats")
  reused_ls = lstats is not None
  if lstats is None:
    lstats = _length_stats_step(b, tfds_dir, tok, cfg, model, length_stats_records)
    lstats.update(pair=pair, size=size, tokenizer=prefix,
                  requested_records=length_stats_records, config_overrides=overrides)
    _write_json(ls_path, lstats)
  times["length_stats_s"] = round(time.time() - t0, 2)

  sizes = dict(tfds_bytes=common.dir_size_bytes(os.fspath(b.data_dir)),
               corpus_cache_bytes=common.dir_size_bytes(cache_dir),
               tokenizer_bytes=common.dir_size_bytes(os.path.dirname(prefix)))
  times["total_s"] = round(time.time() - t_all, 2)
  from data_pipelines import corpus as corpus_lib  # pylint: disable=g-import-not-at-top
  audio = {k: dict(src_hours=round(v.get("src_seconds", 0.0) / 3600, 3),
                   tgt_hours=round(v.get("tgt_seconds", 0.0) / 3600, 3))
           for k, v in stats.items()}
  summary = dict(pair=pair, size=size, data_dir=data_dir, tfds_name=b.info.full_name,
                 tfds_dir=os.fspath(b.data_dir), splits=splits,
                 skipped={k: v.get("skipped", 0) for k, v in stats.items()},
                 skip_reasons={k: v.get("skip_reasons", {}) for k, v in stats.items()},
                 per_source=dict(b.info.metadata.get("per_source_counts", {})),
                 knobs=dict(corpus_lib.size_knobs(pair, size),
                            tfds_max_seconds=b.builder_config.max_seconds),
                 audio=audio, model=model, config_overrides=overrides,
                 tokenizer=prefix, tokenizer_pieces=tok.num_pieces,
                 vocab_layout=dict(text=vocab, speech_offset=tok.speech_offset,
                                   used=tok.used_vocab_size, llm=tok.llm_vocab_size),
                 reused=dict(tfds=reused_tfds, tokenizer=reused_tok), sizes=sizes,
                 times=times, length_stats=lstats, length_stats_reused=reused_ls,
                 sft_drops=sft_drop_gate(lstats["sft_drops"], max_sft_drop_fraction))
  _write_json(summary_path(data_dir, pair, size), summary)
  _print_summary(summary)
  check_sft_drops(summary["sft_drops"])
  return summary


def _write_json(path: str, data):
  files.write_json_atomic(path, data, indent=1, ensure_ascii=False)


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
  _say(f"  knobs     {s['knobs']}")
  _say(f"  audio     {s['audio']}")
  _say(f"  time      {s['times']}  reused {s['reused']}")
  g = s["sft_drops"]
  _say(f"  sft drops {g['fraction']:.2%} ({g['worst_variant']}, limit "
       f"{g['max_fraction']:.2%}): with speech {g['with_speech']['reasons'] or 'none'}, "
       f"without {g['without_speech']['reasons'] or 'none'}")
  ls = s["length_stats"]
  _say(f"  lengths   train, {ls['records']} records (p50/p90/p99/max stream; p99/max "
       f"slots; p99/max turn):")
  for stage, tasks in ls.items():
    if not isinstance(tasks, dict) or stage not in ("sft", "pretrain"):
      continue
    for task, variants in tasks.items():
      for v, st in variants.items():
        sl, au = st["stream_len"], st["audio_slots"]
        turn = st.get("turn_len")
        _say(f"    {stage:8s} {task:5s} {v:14s} {sl['p50']}/{sl['p90']}/{sl['p99']}/"
             f"{sl['max']}  slots {au['p99']}/{au['max']}"
             + (f"  turn {turn['p99']}/{turn['max']}" if turn else ""))


def main(argv):
  """User errors (flags, an unwritable --data_dir, a bad --config.* override, a build
  that fails its quality gate) are one line with exit code 2 (liveinterp/common/cli.py).
  `--config.a.b=v` overrides apply to the model config whose layout, timing and data
  limits the build uses (`model_config`)."""
  del argv
  from liveinterp.common import cli  # pylint: disable=g-import-not-at-top
  overrides = cli.config_overrides()
  if not FLAGS.data_dir:
    raise cli.UserError("--data_dir is required (the folder the build is written to)")
  cli.check_writable_dir(FLAGS.data_dir, "--data_dir")
  for name in ("text_vocab_size", "length_stats_records"):
    if FLAGS[name].value is not None and FLAGS[name].value < 1:
      raise cli.UserError(f"--{name}={FLAGS[name].value}: must be >= 1")
  if not 0.0 <= FLAGS.max_sft_drop_fraction <= 1.0:
    raise cli.UserError(f"--max_sft_drop_fraction={FLAGS.max_sft_drop_fraction}: expected "
                        f"a fraction in [0, 1]")
  run(FLAGS.pair, FLAGS.size, FLAGS.data_dir, model=FLAGS.model,
      text_vocab_size=FLAGS.text_vocab_size, seed=FLAGS.seed, force=FLAGS.force,
      length_stats_records=FLAGS.length_stats_records,
      max_sft_drop_fraction=FLAGS.max_sft_drop_fraction, config_overrides=overrides)


if __name__ == "__main__":
  from liveinterp.common import cli as _cli  # pylint: disable=g-import-not-at-top
  define_flags()
  _cli.run(main, prog="python -m data_pipelines.build", user_errors=(BuildError,),
           config_overrides=True)
