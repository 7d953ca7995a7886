"""`python -m liveinterp.export` and `liveinterp.serving.loader.load_export`: the exported
decoder gives the in-process decoder's outputs, runs without flax or the model code, and
names the file when the artifact is broken.

One micro export per module (random weights of `loading.build_models(cfg, seed=2)`, which
write text and speech on the test audio) saved as a run directory's `sft` and `codec`
checkpoints, with a small sentencepiece tokenizer.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import micro
from data_pipelines import tokenizer as tok_lib
from liveinterp import export as export_lib
from liveinterp.common import checkpointing, cli, config as config_lib, token_layout
from liveinterp.inference import decoder as decoder_lib, loading, session
from liveinterp.models.variables import split_model
from liveinterp.models.voice import VoiceCodec
from liveinterp.serving import loader
from liveinterp.train import train_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
TURN_TOKENS = 16
# bf16 vs float32 weights: float outputs (speech, log-probs, values) may differ by this
# much (measured: at most 0.0086 on speech peaking at 1.75; the ids agree exactly).
BF16_ATOL = 0.05
# Small program: short turns, one codec block size, a one-chunk speaker window.
OPTIONS = dict(max_turn_tokens=TURN_TOKENS, speaker_window_ms=320, codec_blocks=(4,))
CLI_OPTIONS = ["--max_turn_tokens", "16", "--speaker_window_ms", "320", "--codec_blocks",
               "4", "--turns", "speech", "--quiet"]
TEXTS = ["the cat sat on the mat", "we speak a little every day", "where is the station",
         "我们每天说一点", "猫坐在垫子上", "车站在哪里", "good morning to you all"]


def _save_stage(workdir, stage, model, step):
  """What the training loop writes: a TrainState (with optimizer state) via Checkpointer."""
  _, params, rest = split_model(model)
  tx = optax.adam(1e-3)
  state = train_state.TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                                 opt_state=tx.init(params), model_state=rest)
  ckpt = checkpointing.Checkpointer(checkpointing.stage_checkpoint_dir(workdir, stage),
                                    every_steps=1)
  ckpt.save(step, state, meta={"stage": stage, "step": step}, force=True)
  ckpt.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """(cfg, tokenizer, models, run dir, export dir, export seconds)."""
  root = tmp_path_factory.mktemp("export_run")
  workdir = str(root / "run")
  cfg = micro.get_config()
  prefix = str(root / "tok" / "micro")
  tok = tok_lib.Tokenizer.train_from_config(TEXTS, prefix, cfg)
  cfg.tokenizer.model_path = prefix
  config_lib.save(cfg, os.path.join(workdir, "config.json"))
  models = loading.build_models(cfg, seed=2)
  _save_stage(workdir, "sft", models[0], 5)
  voice = loading.random_model(lambda r: VoiceCodec(cfg, rngs=r), seed=9)
  voice.codec, voice.speaker = models[1], models[2]
  _save_stage(workdir, "codec", voice, 3)
  out = os.path.join(workdir, "export")
  t0 = time.perf_counter()
  manifest = export_lib.main(["--workdir", workdir, "--out", out] + CLI_OPTIONS)
  seconds = time.perf_counter() - t0
  size = sum(f["bytes"] for f in manifest["files"].values())
  print(f"\n[test_export] micro export: {size / 1e6:.2f} MB in {seconds:.1f} s")
  return cfg, tok, models, workdir, out


@pytest.fixture(scope="module")
def exported(run):
  return loader.load_export(run[4])


# Run in a fresh interpreter (the isolation test): load the export, translate the two
# test streams as one batch, step three chunks raw, record which forbidden modules got
# imported. Everything the exported decoder computes in this module is computed here, so
# its programs compile once.
_CHILD = """
import json, sys, time
import numpy as np
from liveinterp.serving.loader import load_export
from liveinterp.inference import session
dec = load_export(sys.argv[1])
with np.load(sys.argv[2] + ".in.npz") as z:
  waves = [z["w0"], z["w1"]]
res = session.translate_waveforms(dec, waves, tokenizer=dec.tokenizer)
arrays, summary = {}, {"streams": []}
for r, x in enumerate(res):
  arrays[f"speech{r}"] = x.speech
  summary["streams"].append({
      "text": x.text, "source_ms": x.source_ms, "compute_ms": x.compute_ms,
      "segments": [[s.chunk, s.text_ids, s.speech_tokens] for s in x.segments]})
c = dec.chunk_samples
st = dec.init_stream(2, 7)
for t in range(3):  # the first stream's first 3 chunks, in both rows
  st, out = dec.step(st, np.stack([waves[0][t * c:(t + 1) * c]] * 2))
  for k, v in out._asdict().items():
    if v is not None:
      arrays[f"step{t}_{k}"] = np.asarray(v)
summary["forbidden"] = sorted(m for m in sys.modules if m == "flax" or m.startswith(
    ("flax.", "liveinterp.models", "liveinterp.train", "liveinterp.layers")))
np.savez(sys.argv[2] + ".npz", **arrays)
json.dump(summary, open(sys.argv[2] + ".json", "w"))
"""


class _Child:
  """`_CHILD` running on the export in a fresh interpreter, started at once; `get()`
  waits for it. The in-process reference compiles meanwhile (XLA compiles on one core)."""

  def __init__(self, export_dir: str, out: str):
    self.out = out
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    self.t0 = time.perf_counter()
    self.log = open(out + ".log", "w")  # a file, not a pipe: it cannot fill and block
    self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, export_dir, out], cwd=ROOT,
                                 env=env, stdout=self.log, stderr=subprocess.STDOUT)
    self.result = None

  def get(self):
    """(summary dict, arrays) the child wrote."""
    if self.result is None:
      self.proc.wait(timeout=900)
      self.log.close()
      with open(self.out + ".log") as f:
        log = f.read()
      assert self.proc.returncode == 0, log[-4000:]
      print(f"\n[test_export] fresh interpreter: load + compile + 8 steps "
            f"{time.perf_counter() - self.t0:.1f} s")
      with open(self.out + ".json") as f:
        summary = json.load(f)
      with np.load(self.out + ".npz") as z:
        self.result = summary, dict(z)
    return self.result


def _child_on(run, export_dir, tmp_path_factory):
  """A `_Child` on `export_dir` and the two test streams; killed when the module ends."""
  out = str(tmp_path_factory.mktemp("child") / "result")
  cfg = run[0]
  w0, w1 = _waves(cfg.audio.sample_rate * cfg.stream.chunk_ms // 1000, cfg.audio.sample_rate)
  np.savez(out + ".in.npz", w0=w0, w1=w1)
  c = _Child(export_dir, out)
  yield c
  if c.proc.poll() is None:
    c.proc.kill()
    c.proc.wait()
  c.log.close()


@pytest.fixture(scope="module")
def child(run, tmp_path_factory):
  yield from _child_on(run, run[4], tmp_path_factory)


@pytest.fixture(scope="module")
def bf16_export(run):
  """The same run exported with --weights_dtype=bfloat16 (manifest)."""
  out = os.path.join(run[3], "export_bf16")
  return export_lib.main(["--workdir", run[3], "--out", out, "--weights_dtype",
                          "bfloat16"] + CLI_OPTIONS), out


@pytest.fixture(scope="module")
def bf16_child(run, bf16_export, tmp_path_factory):
  yield from _child_on(run, bf16_export[1], tmp_path_factory)


@pytest.fixture(scope="module")
def reference(run):
  """The in-process decoder with the options the export CLI was given."""
  cfg, tok, (model, codec, speaker), _, _ = run
  return decoder_lib.StreamingDecoder(
      model, codec, speaker, token_layout.TokenLayout.from_tokenizer(tok), cfg,
      prompt_ids=decoder_lib.prompt_for(cfg, tok), speech_turns=True, **OPTIONS)


def _waves(chunk, rate):
  """Two streams of different lengths (5 and 2.5 chunks): tones with a changing pitch."""
  rng = np.random.default_rng(0)
  out = []
  for n, f0 in ((5 * chunk, 180.0), (5 * chunk // 2, 260.0)):
    t = np.arange(n) / rate
    x = 0.4 * np.sin(2 * np.pi * f0 * (1 + 0.3 * t) * t) + 0.02 * rng.standard_normal(n)
    out.append(x.astype(np.float32))
  return out


def test_manifest_describes_the_export(run, exported):
  cfg, tok, _, workdir, out = run
  m = exported.manifest
  assert m["batch"] == "symbolic" and m["versions"]["jax"] == jax.__version__
  assert (exported.sample_rate, exported.chunk_ms) == (cfg.audio.sample_rate,
                                                       cfg.stream.chunk_ms)
  assert exported.chunk_samples == cfg.audio.sample_rate * cfg.stream.chunk_ms // 1000
  assert exported.max_turn_tokens == TURN_TOKENS and exported.layout == tok.layout
  assert exported.prompt_ids == decoder_lib.prompt_for(cfg, tok)
  assert m["config"]["stream"]["chunk_ms"] == cfg.stream.chunk_ms
  assert m["source"]["stage"] == "sft" and m["source"]["workdir"] == os.path.abspath(workdir)
  assert exported.tokenizer.decode_text(tok.encode_text("the cat")) == "the cat"
  # One artifact, any batch: the state's batch axis is the symbolic `b`.
  assert {"b"} <= {d for leaf in m["state"] for d in leaf["shape"]}
  shapes = jax.eval_shape(lambda: exported.init_stream(3, 0))
  # One sampling key per row (format 2): raw key data [b, 2] (threefry).
  assert shapes["chunks"].shape == (3,) and shapes["rng"].shape == (3, 2)
  assert m["weights_dtype"] == "float32" and exported.weights_dtype == "float32"


def test_exported_equals_in_process(run, child, reference):
  """translate_stream on two streams of different lengths (one batch): the same text,
  text ids and speech tokens per segment, the same speech to 1e-4."""
  _, tok, *_ = run
  waves = _waves(reference.chunk_samples, reference.sample_rate)
  want = session.translate_waveforms(reference, waves, tokenizer=tok)
  summary, arrays = child.get()
  got = summary["streams"]
  print(f"\n[test_export] steady step ms (batch 2): exported "
        f"{np.median(got[0]['compute_ms'][1:]):.1f}, in-process "
        f"{np.median(want[0].compute_ms[1:]):.1f}")
  n_text = n_speech = 0
  for r, (g, w) in enumerate(zip(got, want)):
    assert g["text"] == w.text and g["source_ms"] == w.source_ms
    assert g["segments"] == [[s.chunk, s.text_ids, s.speech_tokens] for s in w.segments]
    assert arrays[f"speech{r}"].shape == w.speech.shape
    np.testing.assert_allclose(arrays[f"speech{r}"], w.speech, atol=1e-4)
    n_text += sum(len(s.text_ids) for s in w.segments)
    n_speech += sum(s.speech_tokens for s in w.segments)
  # The comparison covers real turns: the model wrote text and speech.
  assert n_text > 0 and n_speech > 0 and arrays["speech0"].size > 0, (
      f"the seed-2 weights wrote {n_text} text and {n_speech} speech ids: the test no "
      "longer compares real turns (did random_model's weights change?)")
  assert got[0]["source_ms"] != got[1]["source_ms"]


def test_step_outputs_equal_token_for_token(child, reference):
  """Raw `step` on three chunks: every output field (ids exactly, floats to 1e-4)."""
  _, arrays = child.get()
  x = _waves(reference.chunk_samples, reference.sample_rate)[0]
  c = reference.chunk_samples
  state = reference.init_stream(2, 7)
  for t in range(3):
    chunk = np.stack([x[t * c:(t + 1) * c]] * 2)
    state, out = reference.step(state, chunk)
    for name, value in out._asdict().items():
      if value is None:
        continue
      got = arrays[f"step{t}_{name}"]
      if np.issubdtype(got.dtype, np.floating):
        np.testing.assert_allclose(got, np.asarray(value), atol=1e-4, err_msg=name)
      else:
        np.testing.assert_array_equal(got, np.asarray(value), err_msg=name)
  assert arrays["step0_n_tokens"].sum() > 0


def test_loader_runs_without_flax_or_model_code(child):
  """The fresh interpreter loaded the export and ran it with none of flax, the models,
  the layers or the training code imported."""
  summary, arrays = child.get()
  assert summary["forbidden"] == []
  assert "step2_chunk_index" in arrays


def test_exported_step_checks_its_inputs(exported):
  state = jax.eval_shape(lambda: exported.init_stream(1, 0))
  with pytest.raises(ValueError, match=r"expected \[1, "):
    exported.step(state, np.zeros((2, exported.chunk_samples), np.float32))
  with pytest.raises(ValueError, match="non-finite"):
    exported.step(state, np.full((1, exported.chunk_samples), np.nan, np.float32))
  with pytest.raises(ValueError, match="forced_tokens_bm has ids outside"):
    exported.step(state, np.zeros((1, exported.chunk_samples), np.float32),
                  forced_tokens_bm=np.full((1, TURN_TOKENS), 10 ** 6, np.int32))
  with pytest.raises(ValueError, match="batch=0"):
    exported.init_stream(0)


def _copy(run, tmp_path):
  dst = str(tmp_path / "export")
  shutil.copytree(run[4], dst)
  return dst


def test_broken_artifacts_name_the_file(run, tmp_path):
  good = _copy(run, tmp_path)
  with pytest.raises(loader.ExportError, match="no such export directory"):
    loader.load_export(str(tmp_path / "nowhere"))

  d = _copy(run, tmp_path / "a")
  os.remove(os.path.join(d, "manifest.json"))
  with pytest.raises(loader.ExportError, match=r"manifest\.json: missing"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "b")
  with open(os.path.join(d, "manifest.json"), "w") as f:
    f.write('{"format": "liveinterp-export", ')
  with pytest.raises(loader.ExportError, match=r"manifest\.json: not valid JSON"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "c")
  path = os.path.join(d, "step.bin")
  blob = bytearray(open(path, "rb").read())
  blob[len(blob) // 2] ^= 0xFF  # same size, one flipped byte
  open(path, "wb").write(bytes(blob))
  with pytest.raises(loader.ExportError, match=r"step\.bin: sha256 differs"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "d")
  os.remove(os.path.join(d, "init.bin"))
  with pytest.raises(loader.ExportError, match=r"init\.bin: missing"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "e")
  path = os.path.join(d, "params.npz")
  blob = open(path, "rb").read()
  open(path, "wb").write(blob[:len(blob) // 2])
  with pytest.raises(loader.ExportError, match=r"params\.npz: \d+ bytes"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "f")  # same size, damaged inside: the zip CRC catches it
  path = os.path.join(d, "params.npz")
  blob = bytearray(open(path, "rb").read())
  blob[len(blob) // 3] ^= 0xFF
  open(path, "wb").write(bytes(blob))
  with pytest.raises(loader.ExportError, match=r"params\.npz: unreadable weights"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "g")
  manifest = json.load(open(os.path.join(d, "manifest.json")))
  manifest["format_version"] = 99
  json.dump(manifest, open(os.path.join(d, "manifest.json"), "w"))
  with pytest.raises(loader.ExportError, match="format_version 99"):
    loader.load_export(d)
  manifest["format_version"] = 1  # before per-row keys: refused, naming the version
  json.dump(manifest, open(os.path.join(d, "manifest.json"), "w"))
  with pytest.raises(loader.ExportError, match=r"format_version 1 \(one sampling key "
                     r"shared by all rows\), this loader reads 2; export again"):
    loader.load_export(d)

  d = _copy(run, tmp_path / "h")
  os.remove(os.path.join(d, "tokenizer.model"))
  with pytest.raises(loader.ExportError, match=r"tokenizer\.model: missing"):
    loader.load_export(d)
  assert loader.load_export(good).chunk_samples == run[0].audio.sample_rate * 320 // 1000


def test_cli_user_errors(tmp_path):
  with pytest.raises(cli.UserError, match="no such directory"):
    export_lib.main(["--workdir", str(tmp_path / "nope")])
  with pytest.raises(cli.UserError, match="--step needs --stage"):
    export_lib.main(["--workdir", str(tmp_path), "--step", "3"])
  with pytest.raises(cli.UserError, match="--codec_blocks"):
    export_lib.main(["--workdir", str(tmp_path), "--codec_blocks", "4,x"])
  with pytest.raises(cli.UserError, match="config.json"):
    export_lib.main(["--workdir", str(tmp_path)])


def test_exported_rows_sample_from_their_own_keys(run, exported):
  """init_stream: an int seed or one key = that key split per row; `batch` keys as
  given; a wrong key shape is refused naming both accepted shapes."""
  key = jax.random.key(5, impl=exported.key_impl)
  want = np.asarray(jax.random.key_data(jax.random.split(key, 3)))
  np.testing.assert_array_equal(exported.init_stream(3, 5)["rng"], want)
  np.testing.assert_array_equal(exported.init_stream(3, key)["rng"], want)
  np.testing.assert_array_equal(exported.init_stream(3, want[::-1])["rng"], want[::-1])
  with pytest.raises(ValueError, match=r"rng key data has shape \(2, 2\).*\(3, 2\)"):
    exported.init_stream(3, want[:2])


def test_bfloat16_weights_export(run, child, bf16_export, bf16_child):
  """--weights_dtype=bfloat16: the weights are stored (as uint16 bits) and fed in
  bfloat16, params.npz is about half the float32 one, the fresh-interpreter loader runs
  it without the model code, and its greedy outputs on the test streams agree with the
  float32 export's: every id exactly, floats to BF16_ATOL (the micro model computes in
  float32, so the only difference is the weights rounded to bf16's 8 mantissa bits, a
  relative 2^-9, which moves no argmax on these streams)."""
  manifest, out = bf16_export
  f32 = loader.load_export(run[4]).manifest
  assert manifest["weights_dtype"] == "bfloat16"
  floats = [p for p in manifest["params"] if p["model_dtype"] == "float32"]
  assert floats and all(p["dtype"] == "bfloat16" and p["stored"] == "uint16"
                        for p in floats)
  dec = loader.load_export(out)
  assert dec.weights_dtype == "bfloat16"
  assert {str(a.dtype) for a in dec.params} >= {"bfloat16"}
  ratio = manifest["files"]["params.npz"]["bytes"] / f32["files"]["params.npz"]["bytes"]
  print(f"\n[test_export] params.npz bf16/f32 = {ratio:.3f}")
  assert 0.45 < ratio < 0.55
  (got, got_arrays), (want, want_arrays) = bf16_child.get(), child.get()
  assert got["forbidden"] == []
  for g, w in zip(got["streams"], want["streams"]):
    assert (g["text"], g["source_ms"], g["segments"]) == (w["text"], w["source_ms"],
                                                          w["segments"])
  assert sum(len(seg[1]) for g in want["streams"] for seg in g["segments"]) > 0
  assert set(got_arrays) == set(want_arrays)
  for name, w in want_arrays.items():
    if np.issubdtype(w.dtype, np.floating):
      np.testing.assert_allclose(got_arrays[name], w, rtol=0, atol=BF16_ATOL, err_msg=name)
    else:
      np.testing.assert_array_equal(got_arrays[name], w, err_msg=name)
