"""Building the decoder's networks: random weights (`random_model`, smoke tests and
benchmarks) or trained ones restored from a run's stage checkpoints (`build_models`,
`restore_stage`, both through `liveinterp.common.checkpointing.restore_model`), and the
streaming decoder of a run as the CLIs build it (`run_decoder`)."""

from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from liveinterp.common import checkpointing
from liveinterp.models import s2st as s2st_lib
from liveinterp.models.codec import Codec
from liveinterp.models.voice import SpeakerEncoder


RANDOM_INITS = ("real", "fill")


def random_model(model_fn: Callable[[nnx.Rngs], nnx.Module], seed: int = 0, *,
                 init: str = "fill") -> nnx.Module:
  """The model of `model_fn` with random weights (smoke tests, benchmarks, random-init
  runs), on the default device and unsharded.

  init="real": the layers' own initializers, as training starts from, run inside one
  jitted program (`_real_init`: one compile per model, not one small program per
  parameter). init="fill" (default): numpy draws by parameter name (`_fill_init`),
  nothing compiled: not the trained models' initialisation, only for running code paths.

  "fill" stays the default because compiling the init costs 13-20x more on CPU (2
  shared cores, CPU seconds fill -> real; micro: S2ST 1.3 -> 24.5, Codec 3.4 -> 51,
  speaker encoder 0.4 -> 7.2; tiny: 2.4 -> 38, 3.1 -> 41, 0.4 -> 6.1), and the tests
  that pick a seed for its decoding behaviour (writes and waits) pick it for these
  weights.
  """
  if init == "real":
    return _real_init(model_fn, seed)
  if init == "fill":
    return _fill_init(model_fn, seed)
  raise ValueError(f"random_model: init={init!r}, expected one of {RANDOM_INITS}")


def _real_init(model_fn: Callable[[nnx.Rngs], nnx.Module], seed: int) -> nnx.Module:
  """`model_fn(nnx.Rngs(seed))` built by one jitted function returning its state, merged
  with the graph of an abstract build. The seed is an argument (a key), so other seeds of
  the same model reuse the compile cache's program."""
  with nnx.use_eager_sharding(False):
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: model_fn(nnx.Rngs(0))))
    state = jax.jit(lambda key: nnx.split(model_fn(nnx.Rngs(key)))[1])(
        jax.random.key(seed))
  return nnx.merge(graphdef, state)


def _fill_init(model_fn: Callable[[nnx.Rngs], nnx.Module], seed: int) -> nnx.Module:
  """The structure of `model_fn` (from `nnx.eval_shape`, nothing compiled) filled by name
  with numpy draws: `scale` -> 1, `bias` -> 0, embeddings/codebooks -> N(0, 1), every
  other float weight -> N(0, 1 / fan_in) with fan_in = all axes but the last (and but a
  leading stacked-layers axis), integer state -> 0, codebook statistics consistent with
  the codebooks."""
  with nnx.use_eager_sharding(False):
    abstract = nnx.eval_shape(lambda: model_fn(nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(seed)
  flat, treedef = jax.tree_util.tree_flatten_with_path(state)

  def name_of(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", getattr(k, "idx", None))) for k in path]
    keys = [str(k) for k in keys if k is not None and str(k) != "value"]
    return keys[-1] if keys else ""

  values = []
  for path, leaf in flat:
    shape, dtype, name = tuple(leaf.shape), np.dtype(leaf.dtype), name_of(path)
    stacked = any(str(getattr(k, "key", "")) == "blocks" for k in path)
    if not np.issubdtype(dtype, np.floating):
      v = np.zeros(shape, dtype)
    elif name in ("scale", "cluster_size"):
      v = np.ones(shape, dtype)
    elif name == "bias":
      v = np.zeros(shape, dtype)
    elif name in ("embedding", "embed_sum"):
      v = rng.standard_normal(shape).astype(dtype)
    else:
      fan_axes = shape[1 if stacked and len(shape) > 2 else 0:-1]
      fan_in = max(1, int(np.prod(fan_axes))) if len(shape) > 1 else 1
      v = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(dtype)
    values.append(v)
  # EMA codebooks: embedding = embed_sum / cluster_size; keep them consistent.
  by_path = {jax.tree_util.keystr(p): i for i, (p, _) in enumerate(flat)}
  for key, i in by_path.items():
    if "'embed_sum'" in key:
      j = by_path.get(key.replace("'embed_sum'", "'embedding'"))
      if j is not None:
        values[i] = values[j].copy()
  state = jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v) for v in values])
  return nnx.merge(graphdef, state)


def load_tokenizer(path: str | None, cfg, workdir: str | None):
  """The sentencepiece tokenizer: `path` (a `--tokenizer` flag), else `tokenizer.model_path`, else the one
  the recipe built next to a run (`<workdir>/../data/tokenizer/...`); None if none."""
  from data_pipelines import build, tokenizer as tok_lib
  path = path or cfg.tokenizer.get("model_path", "")
  if not path and workdir:
    guess = build.tokenizer_prefix_for(
        os.path.join(os.path.dirname(os.path.abspath(workdir)), "data"), cfg)
    path = guess if os.path.exists(guess + ".model") else ""
  if not path:
    return None
  return tok_lib.Tokenizer.from_config(cfg, path)


def build_models(cfg, *, workdir: str | None = None, seed: int = 0,
                 llm_stage: str | None = None, codec_stage: str = "codec",
                 init: str = "fill"):
  """(S2ST, Codec, SpeakerEncoder): trained from `workdir`, or random (`workdir=None`,
  `random_model` with `init` and seeds seed, seed + 1, seed + 2).

  Trained: the LLM-side model from `llm_stage` (default: the latest of rl2, rl1, sft,
  pretrain that has checkpoints) and the codec + speaker encoder from `codec_stage`.
  """
  from liveinterp.models.voice import VoiceCodec
  if workdir is None:
    return (random_model(lambda r: s2st_lib.S2ST(cfg, rngs=r), seed, init=init),
            random_model(lambda r: Codec(cfg, rngs=r), seed + 1, init=init),
            random_model(lambda r: SpeakerEncoder(cfg, rngs=r), seed + 2, init=init))
  if llm_stage is None:
    found = [s for s in LLM_STAGES
             if os.path.isdir(checkpointing.stage_checkpoint_dir(workdir, s))]
    if not found:
      raise FileNotFoundError(
          f"{workdir}: no checkpoints of any of the stages {LLM_STAGES} (looked for "
          f"{checkpointing.stage_checkpoint_dir(workdir, '<stage>')})")
    llm_stage = found[0]
  model, _ = restore_stage(workdir, llm_stage, cfg)
  voice_codec, _ = restore_stage(workdir, codec_stage, cfg,
                                 model_fn=lambda r: VoiceCodec(cfg, rngs=r))
  return model, voice_codec.codec, voice_codec.speaker


# ---- checkpoints -------------------------------------------------------------------------
LLM_STAGES = ("rl2", "rl1", "sft", "pretrain")  # latest first


def _stage_model_fn(stage: str, cfg) -> Callable[[nnx.Rngs], nnx.Module]:
  from liveinterp.models.voice import VoiceCodec
  if stage == "codec":
    return lambda rngs: VoiceCodec(cfg, rngs=rngs)
  return lambda rngs: s2st_lib.S2ST(cfg, rngs=rngs)


def restore_stage(workdir: str, stage: str, cfg, *, step: int | None = None,
                  model_fn: Callable[[nnx.Rngs], nnx.Module] | None = None):
  """`(model, step)`: a stage's trained model from `<workdir>/<stage>/checkpoints`, on
  the first local device (`liveinterp.common.checkpointing.restore_model`, the one
  restore function). `model_fn` builds the model the stage trained (default:
  `VoiceCodec` for `codec`, `S2ST` otherwise). Raises FileNotFoundError naming the
  stage and directory when there is no checkpoint."""
  directory = checkpointing.stage_checkpoint_dir(workdir, stage)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"no checkpoints for stage {stage!r}: {directory} does not exist")
  try:
    return checkpointing.restore_model(model_fn or _stage_model_fn(stage, cfg), directory,
                                       step=step)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"no checkpoints for stage {stage!r}: {e}") from e


__all__ = ["random_model", "build_models", "restore_stage", "LLM_STAGES"]


def run_decoder(cfg, tokenizer=None, *, workdir: str | None = None, init: str = "trained",
                seed: int = 0, stage: str | None = None, temperature: float = 0.0,
                top_p: float = 1.0, max_turn_tokens: int | None = None, turns: str = "auto",
                allow_src: bool | None = None, codec_rows: int = 0, turn_rows=()):
  """The streaming decoder of a run, as `translate` and `serve` build it: the networks
  (`build_models`: trained from `workdir`, or random with `init="random"`), the token
  layout of `tokenizer` (else the config's), the SFT prompt of `cfg.data.pair`, and speech
  or text turns (`turns`: "speech" | "text" | "auto" = speech for random weights, else
  what the run was trained on, `decoder.speech_turns_for`); `codec_rows`: the codec on
  the speaking rows only, k at a time (`StreamingDecoder`; 0 = every row); `turn_rows`:
  the turn's token loop compacted to these many rows (`StreamingDecoder`; () = never)."""
  from liveinterp.common import token_layout  # pylint: disable=g-import-not-at-top
  from liveinterp.inference import decoder as decoder_lib  # pylint: disable=g-import-not-at-top
  model, codec, speaker = build_models(
      cfg, workdir=workdir if init == "trained" else None, seed=seed, llm_stage=stage)
  layout = (token_layout.TokenLayout.from_tokenizer(tokenizer) if tokenizer is not None
            else token_layout.TokenLayout.from_config(cfg))
  speech_turns = {"speech": True, "text": False}.get(
      turns, init == "random" or decoder_lib.speech_turns_for(cfg))
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, layout, cfg, temperature=temperature, top_p=top_p,
      max_turn_tokens=max_turn_tokens, allow_src=allow_src,
      prompt_ids=decoder_lib.prompt_for(cfg, tokenizer), speech_turns=speech_turns,
      codec_rows=codec_rows, turn_rows=turn_rows)
