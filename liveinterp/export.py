"""Export the streaming decoder for serving: `python -m liveinterp.export`.

    python -m liveinterp.export --workdir=runs/tiny --out=runs/tiny/export
    python -m liveinterp.export --workdir=runs/tiny --stage=sft --step=400 \
        --config.stream.max_turn_tokens=24

Serializes, with `jax.export`, the two functions of `inference.decoder.StreamingDecoder`
(text + speech + voice: the LLM, the turn grammar, the speaker encoder and the codec, in
one computation per chunk) for a run's trained weights and the decoding options
`liveinterp.translate` uses (greedy by default; `--temperature`/`--top_p` sample),
into `--out`:

```
manifest.json    everything the loader needs (below); written last
init.bin         serialized `init(params, valid_b, rng_data_b) -> state`
step.bin         serialized `step(params, state, audio_bc, valid_b, forced_bm, forced_len_b)
                 -> (state, outputs)`
params.npz       the weights: leaf i as array `p{i:05d}`, in the order of `manifest.params`
tokenizer.model  the run's sentencepiece model and its layout file (when the run has one)
tokenizer.json
config.json      the resolved config of the exported model
```

The loader (`liveinterp.serving.loader.load_export`) runs these without flax, the
networks or the training code: jax, numpy and sentencepiece only.

Signatures. The weights are an *argument* of both functions (a flat list of arrays in
the order of `manifest.params`), so the StableHLO holds no constants and one artifact
takes any weights of the same shapes. Nothing custom crosses the boundary: the state is
a flat dict `{path: array}` (paths such as `model/cache/k`, from the decoder's
`DecoderState`), the outputs a dict of `StepOutputs` fields, and the PRNG key travels
as its raw `uint32` key data (typed keys and NamedTuples would need pytree
registrations on the loading side, i.e. the model code). The decoder's own types are
rebuilt on the loader side: `StepOutputs` from `inference.stream_types`.

Sampling keys (format 2). `init` takes one key per stream, `rng_data_b` `[b, *key]` (raw
key data), and the state's `rng` leaf keeps that batch axis: the decoder splits each
row's key on its own (`inference.decode_step._split_rng`), so a row's draws depend only
on its key and audio, never on its neighbours, and the server gives each session's slot
its own key as it does for the in-process decoder. Format 1 exports (one key shared by
all rows) are refused by the loader with a message naming the version: export again.

Weights dtype. `--weights_dtype=bfloat16` stores the floating weights as bfloat16
(`params.npz` about half the size, and half the accelerator memory for them); the
exported functions take them in bfloat16 and cast each back to the dtype the model was
built with (`manifest.params[i].model_dtype`, float32 for every recipe) first thing, so
the program is the in-process decoder's with bf16-rounded weights: the compute dtype
(`cfg.dtype`) and every float32 path of the model are unchanged, and where the model
computes in bfloat16 anyway the round trip is lossless. `manifest.weights_dtype` records
the choice.

Batch. Both functions are exported with a symbolic batch size `b`
(`jax.export.symbolic_shape("b")`): one artifact serves any number of streams
(each new batch size compiles once on load). `init` takes `valid_b` `[b]` only to
carry `b` (a symbolic dimension must come from an argument's shape).

Why `.npz` for the weights (not orbax): the loader must stay light (numpy reads it; no
orbax, tensorstore or flax on the serving side), a single file that `zipfile` checks
member by member (CRC) is easy to verify and to ship, and the decoder runs on one
device, so sharded restore is not needed. Dtypes numpy has no name for (bfloat16) are
stored as their raw bits (`manifest.params[i].stored`), viewed back on load.
Integrity: `manifest.files` holds every file's size and sha256; the loader checks the
serialized functions before deserializing them (a corrupt flatbuffer must never reach
XLA) and the weights' shapes and dtypes against the manifest.

Platforms: the artifact is lowered for `--platforms` (default: this machine's backend);
`--platforms=cpu,cuda` exports one artifact for both. Before any work the flags and paths
are checked; a mistake is one line on stderr and exit code 2 (liveinterp/common/cli.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

from liveinterp.common import cli, files as files_lib
from liveinterp.serving.loader import file_sha256

FORMAT = "liveinterp-export"
FORMAT_VERSION = 2               # 2: per-row sampling keys, weights_dtype
WEIGHTS_DTYPES = ("float32", "bfloat16")
FILES = ("manifest.json", "init.bin", "step.bin", "params.npz", "tokenizer.model",
         "tokenizer.json", "config.json")


def _parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m liveinterp.export",
                         description=__doc__.split("\n")[0])
  p.add_argument("--workdir", required=True, help="trained run directory")
  p.add_argument("--out", default=None, help="export directory (default WORKDIR/export)")
  p.add_argument("--config", default=None, help="config file[:stage] or config.json "
                 "(default WORKDIR/config.json); override fields with --config.a.b=v")
  p.add_argument("--stage", default=None, help="LLM stage to export (default: latest of "
                 "rl2, rl1, sft, pretrain)")
  p.add_argument("--step", type=int, default=None,
                 help="checkpoint step of that stage (default: latest)")
  p.add_argument("--tokenizer", default=None,
                 help="sentencepiece prefix (default: as liveinterp.translate finds it)")
  cli.add_decoding_args(p)
  p.add_argument("--weights_dtype", choices=WEIGHTS_DTYPES, default="float32",
                 help="dtype the floating weights are stored and fed in (bfloat16: half "
                      "the memory; the model still computes as trained)")
  p.add_argument("--speaker_window_ms", type=int, default=3000,
                 help="source audio the speaker embedding is computed from")
  p.add_argument("--codec_blocks", default="16,4",
                 help="frame blocks the codec decodes at once, comma-separated ('' = "
                      "frame by frame)")
  p.add_argument("--platforms", default=None,
                 help="comma-separated jax platforms to lower for (default: this "
                      "machine's backend), e.g. cpu,cuda")
  p.add_argument("--quiet", action="store_true", help="no progress lines")
  p.add_argument("--verbose", action="store_true",
                 help="show the traceback of user errors too")
  return p


def _check_args(args):
  if not os.path.isdir(args.workdir):
    raise cli.UserError(f"--workdir={args.workdir}: no such directory")
  if args.step is not None and args.stage is None:
    raise cli.UserError("--step needs --stage (the stage whose checkpoint step it is)")
  if args.tokenizer and not os.path.exists(args.tokenizer.removesuffix(".model") + ".model"):
    raise cli.UserError(f"--tokenizer={args.tokenizer}: no "
                        f"{args.tokenizer.removesuffix('.model')}.model")
  try:
    _codec_blocks(args.codec_blocks)
  except ValueError:
    raise cli.UserError(f"--codec_blocks={args.codec_blocks!r}: expected comma-separated "
                        "positive integers such as 16,4") from None
  out = args.out or os.path.join(args.workdir, "export")
  if os.path.exists(out) and not os.path.isdir(out):
    raise cli.UserError(f"--out={out}: exists and is not a directory")
  cli.check_writable_dir(out, "--out")


def _codec_blocks(text: str) -> tuple[int, ...]:
  blocks = tuple(int(x) for x in text.split(",") if x.strip())
  if any(k < 1 for k in blocks):
    raise ValueError(text)
  return blocks


def _tokenizer_prefix(path: str | None, cfg, workdir: str) -> str | None:
  """The sentencepiece prefix, found as `liveinterp.translate` finds it: `--tokenizer`,
  else `tokenizer.model_path`, else the recipe's `<workdir>/../data/tokenizer/...`;
  None without one (the export then detokenizes nothing: text shows as ids)."""
  from data_pipelines import build  # pylint: disable=g-import-not-at-top
  path = path or cfg.tokenizer.get("model_path", "")
  if not path:
    guess = build.tokenizer_prefix_for(
        os.path.join(os.path.dirname(os.path.abspath(workdir)), "data"), cfg)
    path = guess if os.path.exists(guess + ".model") else ""
  return path.removesuffix(".model") or None


def state_paths(state) -> list[str]:
  """The flat names of a `DecoderState`'s leaves ("model/cache/k", ..., "rng"), in the
  order of `jax.tree.leaves`."""
  import jax  # pylint: disable=g-import-not-at-top
  return [jax.tree_util.keystr(p, simple=True, separator="/")
          for p, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


def export_decoder(decoder, out_dir: str, *, cfg=None, tokenizer_prefix: str | None = None,
                   platforms=None, weights_dtype: str = "float32",
                   info: dict | None = None) -> dict:
  """Writes the export of `decoder` (an `inference.decoder.StreamingDecoder`) to
  `out_dir` (module docstring); returns the manifest.

  cfg: the config saved as `config.json` (default `decoder.cfg`). tokenizer_prefix: the
  sentencepiece model to copy (PREFIX.model + PREFIX.json; None: the loader's
  `.tokenizer` is None and text shows as ids). platforms: jax platforms to lower for
  (default: the current backend). weights_dtype: float32 or bfloat16, the dtype the
  floating weights are stored and fed in (module docstring). info: extra manifest
  entries (where it came from).
  The manifest is written last, so a directory without one is no export.
  """
  # pylint: disable=g-import-not-at-top
  import dataclasses

  import jax
  import jax.numpy as jnp
  import numpy as np

  from liveinterp.common import config as config_lib
  from liveinterp.inference.decode_step import _init_pure, _step_pure
  # pylint: enable=g-import-not-at-top

  if weights_dtype not in WEIGHTS_DTYPES:
    raise ValueError(f"weights_dtype={weights_dtype!r}: expected one of {WEIGHTS_DTYPES}")
  cfg = decoder.cfg if cfg is None else cfg
  spec, prompt = decoder.spec, tuple(decoder.prompt_ids)
  os.makedirs(out_dir, exist_ok=True)
  for name in FILES:  # a stale manifest must not describe a half-written export
    if os.path.exists(os.path.join(out_dir, name)):
      os.remove(os.path.join(out_dir, name))

  # ---- the weights: a flat list, saved as .npz ------------------------------------------
  model_leaves, params_tree = jax.tree.flatten(decoder.params)
  param_paths = [jax.tree_util.keystr(p, simple=True, separator="/")
                 for p, _ in jax.tree_util.tree_flatten_with_path(decoder.params)[0]]
  model_dtypes = [jnp.dtype(x.dtype) for x in model_leaves]
  fed = jnp.dtype(weights_dtype)
  fed_dtypes = [fed if jnp.issubdtype(d, jnp.floating) and d.itemsize > fed.itemsize
                else d for d in model_dtypes]
  leaves = []
  arrays, params_meta = {}, []
  for i, (path, x, d) in enumerate(zip(param_paths, model_leaves, fed_dtypes)):
    a = np.asarray(jax.device_get(x))
    if a.dtype != d:
      a = a.astype(d)  # ml_dtypes: round to nearest even
    leaves.append(a)
    dtype = str(a.dtype)
    stored = a
    if a.dtype.kind == "V" or dtype in ("bfloat16",) or dtype.startswith("float8"):
      stored = a.view(f"uint{8 * a.dtype.itemsize}")  # numpy has no name for it
    arrays[f"p{i:05d}"] = stored
    params_meta.append({"path": path, "shape": list(a.shape), "dtype": dtype,
                        "stored": str(stored.dtype), "model_dtype": str(model_dtypes[i])})
  npz = os.path.join(out_dir, "params.npz")
  with files_lib.replaced_on_success(npz, ".npz") as tmp:
    np.savez(tmp, **arrays)

  # ---- the functions: flat state dict, raw key data, symbolic batch ---------------------
  key_impl = str(jax.random.key_impl(jax.random.key(0)))
  abstract = jax.eval_shape(
      lambda: _init_pure(spec, decoder.params, 1, jax.random.key(0), prompt))
  state_tree = jax.tree.structure(abstract)
  names = state_paths(abstract)
  if "rng" not in names:
    raise ValueError(f"decoder state has no 'rng' leaf: {names}")
  if len(set(names)) != len(names):
    raise ValueError(f"decoder state leaf names collide: {names}")

  def to_dict(state):
    state = state._replace(rng=jax.random.key_data(state.rng))
    return dict(zip(names, jax.tree.leaves(state)))

  def from_dict(d):
    state = jax.tree.unflatten(state_tree, [d[k] for k in names])
    return state._replace(rng=jax.random.wrap_key_data(state.rng, impl=key_impl))

  def model_params(param_leaves):
    """The weights as the model was built: each leaf back in its own dtype."""
    return jax.tree.unflatten(params_tree, [
        x.astype(d) for x, d in zip(param_leaves, model_dtypes)])

  def init_fn(param_leaves, valid_b, rng_data_b):
    return to_dict(_init_pure(spec, model_params(param_leaves), valid_b.shape[0],
                              jax.random.wrap_key_data(rng_data_b, impl=key_impl), prompt))

  def step_fn(param_leaves, state, audio_bc, valid_b, forced_bm, forced_len_b):
    p = model_params(param_leaves)
    new, out = _step_pure(spec, p, from_dict(state), audio_bc, valid_b, forced_bm,
                          forced_len_b)
    return to_dict(new), {k: v for k, v in out._asdict().items() if v is not None}

  (b,) = jax.export.symbolic_shape("b")
  platforms = tuple(platforms) if platforms else (jax.default_backend(),)
  m, c = decoder.max_turn_tokens, decoder.chunk_samples
  p_specs = [jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves]
  key_spec = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
  rng_spec = jax.ShapeDtypeStruct((b, *key_spec.shape), key_spec.dtype)  # one per row
  exp_init = jax.export.export(jax.jit(init_fn), platforms=platforms)(
      p_specs, jax.ShapeDtypeStruct((b,), jnp.bool_), rng_spec)
  state_specs = jax.tree.unflatten(exp_init.out_tree, exp_init.out_avals)
  exp_step = jax.export.export(jax.jit(step_fn), platforms=platforms)(
      p_specs, state_specs, jax.ShapeDtypeStruct((b, c), jnp.float32),
      jax.ShapeDtypeStruct((b,), jnp.bool_), jax.ShapeDtypeStruct((b, m), jnp.int32),
      jax.ShapeDtypeStruct((b,), jnp.int32))
  files_lib.write_atomic(os.path.join(out_dir, "init.bin"), bytes(exp_init.serialize()))
  files_lib.write_atomic(os.path.join(out_dir, "step.bin"), bytes(exp_step.serialize()))
  out_names = [k for k, v in jax.tree.unflatten(exp_step.out_tree,
                                                exp_step.out_avals)[1].items()]

  # ---- tokenizer, config, manifest ------------------------------------------------------
  tokenizer_files = None
  if tokenizer_prefix:
    prefix = tokenizer_prefix.removesuffix(".model")
    for ext in ("model", "json"):
      src = f"{prefix}.{ext}"
      if not os.path.exists(src):
        raise FileNotFoundError(f"tokenizer: {src} does not exist")
      shutil.copyfile(src, os.path.join(out_dir, f"tokenizer.{ext}"))
    tokenizer_files = {"model": "tokenizer.model", "meta": "tokenizer.json"}
  config_lib.save(cfg, os.path.join(out_dir, "config.json"))
  with open(os.path.join(out_dir, "config.json")) as f:
    config_dict = json.load(f)

  import jaxlib  # pylint: disable=g-import-not-at-top
  files = {}
  for name in ("init.bin", "step.bin", "params.npz", "config.json") + (
      ("tokenizer.model", "tokenizer.json") if tokenizer_files else ()):
    path = os.path.join(out_dir, name)
    files[name] = {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}
  grammar = spec.grammar
  manifest = {
      "format": FORMAT, "format_version": FORMAT_VERSION,
      "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
      "versions": {"jax": jax.__version__, "jaxlib": jaxlib.__version__,
                   "python": sys.version.split()[0]},
      "platforms": list(platforms),
      "calling_convention_version": exp_step.calling_convention_version,
      "batch": "symbolic",
      "sample_rate": int(decoder.sample_rate),
      "chunk_samples": int(c), "chunk_ms": int(decoder.chunk_ms),
      "max_turn_tokens": int(m), "vocab_size": int(decoder.vocab_size),
      "hop": int(spec.hop), "num_codebooks": int(spec.num_codebooks),
      "layout": dataclasses.asdict(decoder.layout),
      "prompt_ids": [int(i) for i in prompt],
      "decoding": {"temperature": spec.temperature, "top_p": spec.top_p,
                   "grammar": grammar is not None,
                   "allow_src": bool(grammar is not None and grammar.allow_src),
                   "speech_turns": bool(grammar is not None and grammar.speech),
                   "speaker_samples": int(spec.speaker_samples),
                   "voice_lag_chunks": int(spec.voice_lag_chunks),
                   "codec_blocks": list(spec.codec_blocks),
                   "decode_speech": bool(spec.decode_speech)},
      "key_impl": key_impl, "rng": "per_row",
      "weights_dtype": weights_dtype,
      "params": params_meta,
      "state": [{"name": k, "shape": [str(d) for d in a.shape], "dtype": str(a.dtype)}
                for k, a in state_specs.items()],
      "outputs": out_names,
      "tokenizer": tokenizer_files,
      "files": files,
      "config": config_dict,
      **(info or {}),
  }
  files_lib.write_atomic(os.path.join(out_dir, "manifest.json"),
                (json.dumps(manifest, indent=1) + "\n").encode())
  return manifest


def main(argv=None) -> dict:
  """Runs the CLI; returns the manifest it wrote (for tests)."""
  overrides, args = cli.parse_args(_parser(), argv)
  _check_args(args)
  cfg, config_path = cli.load_run_config(args.config, args.workdir, overrides)
  # Heavy imports after the checks, so `--help` and mistakes are instant.
  # pylint: disable=g-import-not-at-top
  from liveinterp.common import checkpointing, token_layout
  from liveinterp.inference import decoder as decoder_lib, loading
  # pylint: enable=g-import-not-at-top
  out = args.out or os.path.join(args.workdir, "export")
  log = (lambda s: None) if args.quiet else (  # noqa: E731
      lambda s: sys.stderr.write(f"[export] {s}\n"))
  t0 = time.perf_counter()
  prefix = _tokenizer_prefix(args.tokenizer, cfg, args.workdir)
  tokenizer = None
  if prefix:
    from data_pipelines import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
    tokenizer = tok_lib.Tokenizer.from_config(cfg, prefix)
  if args.step is None:
    model, codec, speaker = loading.build_models(cfg, workdir=args.workdir,
                                                 llm_stage=args.stage)
    stage = args.stage or next(
        s for s in loading.LLM_STAGES if os.path.isdir(
            checkpointing.stage_checkpoint_dir(args.workdir, s)))
  else:
    from liveinterp.models.voice import VoiceCodec  # pylint: disable=g-import-not-at-top
    model, _ = loading.restore_stage(args.workdir, args.stage, cfg, step=args.step)
    voice, _ = loading.restore_stage(args.workdir, "codec", cfg,
                                     model_fn=lambda r: VoiceCodec(cfg, rngs=r))
    codec, speaker, stage = voice.codec, voice.speaker, args.stage
  layout = (token_layout.TokenLayout.from_tokenizer(tokenizer) if tokenizer is not None
            else token_layout.TokenLayout.from_config(cfg))
  speech_turns = {"speech": True, "text": False}.get(
      args.turns, decoder_lib.speech_turns_for(cfg))
  decoder = decoder_lib.StreamingDecoder(
      model, codec, speaker, layout, cfg, temperature=args.temperature, top_p=args.top_p,
      max_turn_tokens=args.max_turn_tokens, allow_src=args.allow_src,
      prompt_ids=decoder_lib.prompt_for(cfg, tokenizer), speech_turns=speech_turns,
      speaker_window_ms=args.speaker_window_ms,
      codec_blocks=_codec_blocks(args.codec_blocks))
  log(f"restored {stage} from {args.workdir} ({time.perf_counter() - t0:.1f} s); exporting")
  t1 = time.perf_counter()
  manifest = export_decoder(
      decoder, out, cfg=cfg, tokenizer_prefix=prefix,
      platforms=args.platforms.split(",") if args.platforms else None,
      weights_dtype=args.weights_dtype, info={"source": {"workdir": os.path.abspath(args.workdir), "stage": stage,
                       "step": args.step, "config": os.path.abspath(config_path)}})
  size = sum(f["bytes"] for f in manifest["files"].values())
  log(f"wrote {out} ({size / 1e6:.1f} MB, {time.perf_counter() - t1:.1f} s); serve it "
      f"with: python -m liveinterp.serve --export={out}")
  return manifest


if __name__ == "__main__":
  cli.call(main, sys.argv[1:], prog="python -m liveinterp.export",
           verbose="--verbose" in sys.argv[1:])
