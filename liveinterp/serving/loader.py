"""Load and run an exported streaming decoder without the training code.

    dec = load_export("runs/tiny/export")     # written by `python -m liveinterp.export`
    results = session.translate_stream(dec, blocks, tokenizer=dec.tokenizer)
    state = dec.init_stream(batch, rng)
    state, out = dec.step(state, audio_chunk_bc)          # out: a `StepOutputs`

`ExportedDecoder` has the interface `liveinterp.inference.session` and the server use
from `inference.decoder.StreamingDecoder` (`chunk_samples`, `chunk_ms`, `sample_rate`,
`max_turn_tokens`, `layout`, `init_stream`, `step`), plus `.tokenizer` (the export's
sentencepiece model, or None) and `.manifest`. It runs the serialized StableHLO of
`liveinterp/export.py` with jax alone: importing this module (and running it) pulls in
neither flax nor `liveinterp.models` / `.layers` / `.train` (a test checks this in a
fresh interpreter). Each batch size compiles once, on its first `init_stream` / `step`.

The state is a flat dict `{leaf name: array}` (names such as `model/cache/k`; the
manifest lists them with their shapes, `b` the batch axis); the PRNG keys are their raw
`uint32` key data under `rng`, one key per row (`[b, *key]`): each row samples from its
own key only. `init_stream(batch, rng)` takes an int seed or one key (split into `batch`
row keys, `jax.random.split`, as the server's slots start) or `batch` keys. `step`
donates the state passed in, as the in-process decoder does by default: use the returned
one.

Weights: stored in `manifest.weights_dtype` (float32 or bfloat16; bfloat16 is kept in
`params.npz` as its raw bits, `uint16`, named by `manifest.params[i].stored`, and viewed
back as bfloat16 on load); they are fed to the exported functions in that dtype.

Every problem with the artifact is an `ExportError` (a ValueError) naming the file: a
missing directory or file, a manifest that is not JSON or of another format version, a
file whose size or sha256 differs from the manifest (checked before deserializing), a
weight whose shape or dtype differs. Format 1 exports (one sampling key shared by all
rows) are refused with a message naming the version.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np

from liveinterp.common.token_layout import TokenLayout
from liveinterp.inference.stream_types import StepOutputs, check_finite, step_inputs

FORMAT = "liveinterp-export"     # = liveinterp.export.FORMAT (not imported: it is the
FORMAT_VERSION = 2               # writer's module, and this side stays minimal)
_OLD_FORMATS = {1: "one sampling key shared by all rows"}


class ExportError(ValueError):
  """A missing, corrupt or incompatible export artifact (the message names the file)."""


def file_sha256(path: str) -> str:
  """Hex SHA-256 of a file (the manifest records one per artifact file)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _read_manifest(path: str) -> dict:
  if not os.path.isdir(path):
    raise ExportError(f"{path}: no such export directory (write one with "
                      "`python -m liveinterp.export --workdir=RUN`)")
  mpath = os.path.join(path, "manifest.json")
  if not os.path.exists(mpath):
    raise ExportError(f"{mpath}: missing (not an export directory, or an export that "
                      "did not finish; export again)")
  try:
    with open(mpath, encoding="utf-8") as f:
      manifest = json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise ExportError(f"{mpath}: not valid JSON ({e}); export again") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise ExportError(f"{mpath}: not a {FORMAT} manifest")
  version = manifest.get("format_version")
  if version != FORMAT_VERSION:
    why = f" ({_OLD_FORMATS[version]})" if version in _OLD_FORMATS else ""
    raise ExportError(f"{mpath}: format_version {version!r}{why}, this loader reads "
                      f"{FORMAT_VERSION}; export again with this version "
                      "(python -m liveinterp.export)")
  for key in ("sample_rate", "chunk_samples", "chunk_ms", "max_turn_tokens", "vocab_size",
              "layout", "prompt_ids", "params", "files", "outputs", "weights_dtype"):
    if key not in manifest:
      raise ExportError(f"{mpath}: missing the entry {key!r}; export again")
  return manifest


def _check_file(path: str, name: str, entry: dict | None, *, hash_it: bool) -> str:
  fpath = os.path.join(path, name)
  if entry is None:
    raise ExportError(f"{os.path.join(path, 'manifest.json')}: lists no {name}")
  if not os.path.isfile(fpath):
    raise ExportError(f"{fpath}: missing (the export is incomplete; export again)")
  size = os.path.getsize(fpath)
  if size != entry.get("bytes"):
    raise ExportError(f"{fpath}: {size} bytes, the manifest says {entry.get('bytes')} "
                      "(truncated or replaced; export again)")
  if hash_it and file_sha256(fpath) != entry.get("sha256"):
    raise ExportError(f"{fpath}: sha256 differs from the manifest (corrupt; export again)")
  return fpath


def _deserialize(path: str, name: str, manifest: dict):
  fpath = _check_file(path, name, manifest["files"].get(name), hash_it=True)
  with open(fpath, "rb") as f:
    blob = f.read()
  try:
    return jax.export.deserialize(bytearray(blob))
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{fpath}: cannot be deserialized by jax {jax.__version__} "
                      f"(exported with jax {manifest.get('versions', {}).get('jax')}): "
                      f"{e}") from e


def _load_params(path: str, manifest: dict) -> list[np.ndarray]:
  # Zip members carry CRCs that are checked on read: no separate hash of the weights.
  fpath = _check_file(path, "params.npz", manifest["files"].get("params.npz"),
                      hash_it=False)
  out = []
  try:
    with np.load(fpath, allow_pickle=False) as z:
      for i, meta in enumerate(manifest["params"]):
        key = f"p{i:05d}"
        if key not in z.files:
          raise ExportError(f"{fpath}: no array {key} (weight {meta['path']})")
        a = z[key]
        if str(a.dtype) != meta["stored"] or list(a.shape) != list(meta["shape"]):
          raise ExportError(f"{fpath}: weight {meta['path']} is {a.dtype}{list(a.shape)}, "
                            f"the manifest says {meta['stored']}{meta['shape']}")
        if meta["stored"] != meta["dtype"]:
          a = a.view(jnp.dtype(meta["dtype"]))
        out.append(a)
  except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
    if isinstance(e, ExportError):
      raise
    raise ExportError(f"{fpath}: unreadable weights ({e}); export again") from e
  return out


class ExportedDecoder:
  """The exported streaming decoder (module docstring); build it with `load_export`."""

  def __init__(self, path: str, manifest: dict, init_exp, step_exp,
               params: list[np.ndarray], tokenizer):
    self.path = path
    self.manifest = manifest
    self.sample_rate = int(manifest["sample_rate"])
    self.chunk_samples = int(manifest["chunk_samples"])
    self.chunk_ms = int(manifest["chunk_ms"])
    self.max_turn_tokens = int(manifest["max_turn_tokens"])
    self.vocab_size = int(manifest["vocab_size"])
    self.layout = TokenLayout(**manifest["layout"])
    self.prompt_ids = tuple(int(i) for i in manifest["prompt_ids"])
    self.tokenizer = tokenizer
    self.key_impl = manifest.get("key_impl")
    self.weights_dtype = str(manifest["weights_dtype"])
    self.device = jax.local_devices()[0]
    self._init_exp, self._step_exp = init_exp, step_exp
    # Committed to one device once: every step reuses these buffers.
    self._params = [jax.device_put(jnp.asarray(a), self.device) for a in params]
    self._init = jax.jit(init_exp.call)
    self._step = jax.jit(step_exp.call, donate_argnums=(1,))
    self._key_shape = tuple(init_exp.in_avals[-1].shape[1:])   # [b, *key]

  @property
  def params(self) -> list[jax.Array]:
    """The weights (the first argument of both exported functions)."""
    return self._params

  def init_stream(self, batch: int, rng: jax.Array | int = 0) -> dict:
    """A fresh state for `batch` streams; `rng` an int seed, one PRNG key (split into
    `batch` row keys) or `batch` keys (typed, or raw key data)."""
    if isinstance(batch, bool) or int(batch) < 1:
      raise ValueError(f"init_stream: batch={batch} must be >= 1")
    batch = int(batch)
    if isinstance(rng, (int, np.integer)):
      rng = jax.random.key(int(rng), impl=self.key_impl)
    if not hasattr(rng, "dtype"):
      rng = np.asarray(rng)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
      rng = jax.random.key_data(rng)
    rng = jnp.asarray(rng, jnp.uint32)
    if tuple(rng.shape) == self._key_shape:  # one key: a key per row
      rng = jax.random.key_data(jax.random.split(
          jax.random.wrap_key_data(rng, impl=self.key_impl), batch))
    if tuple(rng.shape) != (batch, *self._key_shape):
      raise ValueError(f"init_stream: rng key data has shape {tuple(rng.shape)}, the "
                       f"export expects {self._key_shape} (one key) or "
                       f"{(batch, *self._key_shape)} (one per stream; {self.key_impl})")
    return self._init(self._params, jnp.ones((batch,), bool), rng)

  def step(self, state: dict, audio_chunk_bc, valid_b=None, forced_tokens_bm=None,
           forced_len_b=None) -> tuple[dict, StepOutputs]:
    """Reads one chunk per stream and writes its turn -> (new state, `StepOutputs`);
    the arguments are those of `StreamingDecoder.step` (`state` is donated)."""
    if not isinstance(state, dict) or "chunks" not in state:
      raise ValueError("step: state must be the dict of init_stream / step")
    audio, valid, forced, forced_n = step_inputs(
        self, int(state["chunks"].shape[0]), audio_chunk_bc, valid_b, forced_tokens_bm,
        forced_len_b)
    state, out = self._step(self._params, state, audio, valid, forced, forced_n)
    return state, StepOutputs(**out)


def load_export(path: str) -> ExportedDecoder:
  """The exported decoder in `path` (a directory written by `python -m
  liveinterp.export`); raises `ExportError` naming the file when something is missing,
  corrupt or of another format."""
  path = os.fspath(path)
  manifest = _read_manifest(path)
  init_exp = _deserialize(path, "init.bin", manifest)
  step_exp = _deserialize(path, "step.bin", manifest)
  here = jax.export.default_export_platform()
  if here not in step_exp.platforms:
    raise ExportError(f"{os.path.join(path, 'step.bin')}: lowered for "
                      f"{', '.join(step_exp.platforms)}, this machine runs {here}; export "
                      f"again with --platforms={','.join(step_exp.platforms + (here,))}")
  params = _load_params(path, manifest)
  n_args = len(step_exp.in_avals)
  n_state = len(manifest.get("state", ())) or None
  if n_state is not None and n_args != len(params) + n_state + 4:
    raise ExportError(f"{os.path.join(path, 'step.bin')}: takes {n_args} arrays, the "
                      f"manifest describes {len(params)} weights + {n_state} state leaves "
                      "+ 4 inputs (files of different exports?)")
  for i, (a, aval) in enumerate(zip(params, step_exp.in_avals)):
    if tuple(a.shape) != tuple(aval.shape) or jnp.dtype(a.dtype) != aval.dtype:
      raise ExportError(f"{os.path.join(path, 'params.npz')}: weight "
                        f"{manifest['params'][i]['path']} is {a.dtype}{list(a.shape)}, "
                        f"step.bin expects {aval.dtype}{list(aval.shape)}")
  tokenizer = None
  tok = manifest.get("tokenizer")
  if tok:
    from data_pipelines import tokenizer as tok_lib  # pylint: disable=g-import-not-at-top
    for key in ("model", "meta"):
      name = tok[key]
      _check_file(path, name, manifest["files"].get(name), hash_it=True)
    try:
      tokenizer = tok_lib.Tokenizer.load(os.path.join(path, tok["model"]))
    except Exception as e:  # pylint: disable=broad-except
      raise ExportError(f"{os.path.join(path, tok['model'])}: cannot load the tokenizer: "
                        f"{e}") from e
  return ExportedDecoder(path, manifest, init_exp, step_exp, params, tokenizer)


__all__ = ["load_export", "ExportedDecoder", "ExportError"]
