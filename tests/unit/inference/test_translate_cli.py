"""`load_params` from a training checkpoint, and the `python -m liveinterp.translate` CLI."""

import json
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import soundfile as sf
from flax import nnx

from liveinterp import translate
from liveinterp.common import cli
from liveinterp.common import checkpointing
from liveinterp.inference import loading
from liveinterp.models import s2st
from liveinterp.models.variables import split_model
from liveinterp.models.voice import VoiceCodec
from liveinterp.train import train_state

# Both CLI runs sample (temperature + nucleus) with equal settings: one compiled step.
SAMPLING = ("--temperature", "0.8", "--top_p", "0.9", "--seed", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


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


def _leaves(model):
  return jax.tree.leaves(nnx.state(model))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, cfg, models):
  """A run directory with an `sft` (S2ST) and a `codec` (VoiceCodec) checkpoint."""
  workdir = str(tmp_path_factory.mktemp("run"))
  _save_stage(workdir, "sft", models[0], 7)
  voice = loading.random_model(lambda r: VoiceCodec(cfg, rngs=r), seed=5)
  _save_stage(workdir, "codec", voice, 3)
  return workdir, voice


def test_load_params_round_trip(cfg, models, trained):
  workdir, voice = trained
  loaded, step = loading.restore_stage(workdir, "sft", cfg)
  assert step == 7 and isinstance(loaded, s2st.S2ST)
  for a, b in zip(_leaves(models[0]), _leaves(loaded)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # build_models picks the latest LLM stage present and the codec stage.
  _, c2, s2 = loading.build_models(cfg, workdir=workdir)
  for a, b in zip(_leaves(voice.codec) + _leaves(voice.speaker), _leaves(c2) + _leaves(s2)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(FileNotFoundError, match="rl1"):
    loading.restore_stage(workdir, "rl1", cfg)


def _write_source(path, rate=22050, seconds=0.9):
  t = np.arange(int(rate * seconds)) / rate
  x = 0.3 * np.sin(2 * np.pi * 220 * t)
  sf.write(path, np.stack([x, 0.5 * x], axis=1).astype(np.float32), rate)  # stereo


def test_cli_random_init_writes_wav_and_json(tmp_path, capsys):
  src = str(tmp_path / "in.wav")
  _write_source(src, seconds=2.0)
  out = str(tmp_path / "out" / "translated.wav")
  payload = translate.main([src, "--out", out, "--config",
                            os.path.join(ROOT, "configs", "micro.py"), "--init", "random",
                            *SAMPLING])
  err = capsys.readouterr().err
  assert "chunk 7/7" in err and "RTF" in err
  y, sr = sf.read(out, dtype="float32")
  assert sr == 16000 and y.ndim == 1 and y.size >= 2.24 * sr      # >= source (7 chunks)
  with open(os.path.splitext(out)[0] + ".json") as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(payload))
  assert saved["chunks"] == 7 and saved["source_ms"] == 2240 and saved["init"] == "random"
  assert saved["rtf"] > 0
  # This seed's random model does speak: text (shown as ids, no sentencepiece model
  # given) and speech, each placed on the playback timeline.
  assert saved["segments"] and saved["text"] == "".join(s["text"] for s in saved["segments"])
  for seg in saved["segments"]:
    assert seg["emit_ms"] % 320 == 0 and 320 <= seg["emit_ms"] <= 2240
    assert seg["ready_ms"] >= seg["emit_ms"] and seg["play_start_ms"] >= seg["emit_ms"]
    assert seg["text"].strip().startswith("[") and seg["audio_ms"] > 0
    start = int(seg["play_start_ms"] * sr / 1000)
    n = int(seg["audio_ms"] * sr / 1000)
    assert np.abs(y[start:start + n]).max() > 0                    # speech where it plays


def test_cli_trained_workdir(tmp_path, trained, capsys):
  workdir, _ = trained
  src = str(tmp_path / "in.wav")
  _write_source(src, rate=16000, seconds=0.5)
  out = str(tmp_path / "o.wav")
  payload = translate.main([src, "--out", out, "--workdir", workdir, "--config",
                            os.path.join(ROOT, "configs", "micro.py"), "--concat", *SAMPLING,
                            # speech turns, as the random-init run: the same compiled step
                            # (`auto` would pick text turns for this run without codes;
                            # test_text_decoding checks that choice)
                            "--turns", "speech",
                            "--json", str(tmp_path / "segments.json")])
  assert payload["init"] == "trained" and payload["chunks"] == 2
  assert os.path.exists(str(tmp_path / "segments.json")) and os.path.exists(out)
  assert "wrote" in capsys.readouterr().err


def test_cli_usage_errors(tmp_path):
  src = str(tmp_path / "x.wav")
  _write_source(src)
  with pytest.raises(cli.UserError, match="workdir"):
    translate.main([src, "--out", str(tmp_path / "o.wav")])
  with pytest.raises(ValueError, match="no config file .*nope.py"):  # config.ConfigError
    translate.main([src, "--out", str(tmp_path / "o.wav"), "--config", "nope.py",
                    "--init", "random"])


@pytest.mark.parametrize("out,msg", [
    ("file/o.wav", "--out={tmp}/file/o.wav: {tmp}/file exists and is not a directory"),
    (".", "--out={tmp}: is a directory"),
])
def test_cli_checks_out_before_any_work(tmp_path, monkeypatch, out, msg):
  """Issue #12: an unwritable --out failed only when writing, after the whole run."""
  src = str(tmp_path / "in.wav")
  _write_source(src)
  (tmp_path / "file").write_text("")

  def no_work(*args, **kwargs):
    raise AssertionError("models were built before --out was checked")

  monkeypatch.setattr(loading, "build_models", no_work)
  with pytest.raises(cli.UserError, match=re.escape(msg.format(tmp=tmp_path))):
    translate.main([src, "--out", str(tmp_path / out), "--config",
                    os.path.join(ROOT, "configs", "micro.py"), "--init", "random"])


@pytest.mark.parametrize("args,msg", [
    (["{tmp}/missing.wav", "--out", "{tmp}/o.wav", "--init", "random", "--config",
      "configs/micro.py"], "{tmp}/missing.wav: no such audio file"),
    (["{tmp}/in.wav", "--out", "{tmp}/in.wav/o.wav", "--init", "random", "--config",
      "configs/micro.py"], "--out={tmp}/in.wav/o.wav: {tmp}/in.wav exists and is not a "
                           "directory"),
    (["{tmp}/in.wav", "--out", "{tmp}/o.wav", "--init", "random", "--config",
      "configs/micro.py", "--config.train.stepz=3"],  # overrides: config.load (issue #11)
     "config spec 'configs/micro.py': override train.stepz: unknown field 'train.stepz'"),
    (["{tmp}/in.wav", "--out", "{tmp}/o.wav", "--init", "random", "--config",
      "{tmp}/bad.json"], "data.seq_len=4096 exceeds llm.max_len=512"),
])
def test_cli_user_errors_are_one_line_and_exit_code_2(tmp_path, args, msg):
  """`python -m liveinterp.translate`: one line and exit code 2 for a user error (it was
  a traceback and exit code 1), before the model is built."""
  _write_source(str(tmp_path / "in.wav"))
  from configs import micro
  c = micro.get_config()
  c.data.seq_len = 4096
  (tmp_path / "bad.json").write_text(c.to_json())
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "liveinterp.translate",
                        *[a.format(tmp=tmp_path) for a in args]], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2, out.stderr[-3000:]
  assert out.stderr.startswith(
      f"python -m liveinterp.translate: error: {msg.format(tmp=tmp_path)}"), out.stderr
  assert out.stderr.count("\n") == 1


def test_cli_json_and_console_carry_the_live_source_transcript(tmp_path, capsys,
                                                              monkeypatch):
  """A model trained with `data.src_transcript` (here: forced to write `<src> w w <eot>`
  after chunk 0 and `<src> w <eot>` after chunk 2 through the decoder's `forced`
  argument, sampling otherwise) has its transcript in the JSON, per segment and whole,
  with per-word emit/ready times, out of the translated text, and one stderr line per
  turn that heard something."""
  from liveinterp.common import token_layout
  from liveinterp.inference import decoder as decoder_lib
  from liveinterp.inference.decode_step import EOT
  real_step = decoder_lib.StreamingDecoder.step
  w = lambda k: token_layout.NUM_SPECIAL_TOKENS + k                      # noqa: E731
  turns = {0: [token_layout.SRC, w(1), w(2), EOT], 2: [token_layout.SRC, w(3), EOT]}

  def forced_step(self, state, chunk, valid=None, forced=None, forced_n=None):
    assert forced is None
    turn = turns.get(int(np.asarray(state.chunks)[0]))
    forced = np.full((1, self.max_turn_tokens), EOT, np.int32)
    if turn is not None:
      forced[0, :len(turn)] = turn
    n = np.asarray([len(turn) if turn is not None else -1], np.int32)
    return real_step(self, state, chunk, valid, forced, n)

  monkeypatch.setattr(decoder_lib.StreamingDecoder, "step", forced_step)
  src = str(tmp_path / "in.wav")
  _write_source(src, rate=16000, seconds=0.96)                         # 3 chunks
  out = str(tmp_path / "o.wav")
  payload = translate.main([src, "--out", out, "--config",
                            os.path.join(ROOT, "configs", "micro.py"), "--init", "random",
                            "--config.data.src_transcript=True"])
  err = capsys.readouterr().err
  with open(os.path.splitext(out)[0] + ".json") as f:
    saved = json.load(f)
  assert saved == json.loads(json.dumps(payload))
  assert saved["src_transcript"] is True and saved["chunks"] == 3
  # Chunks 0 and 2 heard the forced words (ids shown as [id]: no sentencepiece model);
  # chunk 1 sampled, under the grammar that allows a transcript too.
  by_chunk = {s["chunk"]: s for s in saved["segments"]}
  assert by_chunk[0]["source_text"] == f"[{w(1)}] [{w(2)}]" and by_chunk[0]["text"] == ""
  assert by_chunk[2]["source_text"].strip() == f"[{w(3)}]"
  assert by_chunk[0]["src_ids"] == [w(1), w(2)]
  assert saved["source_text"] == "".join(s["source_text"] for s in saved["segments"])
  assert saved["text"] == "".join(s["text"] for s in saved["segments"])
  assert f"[{w(1)}]" not in saved["text"]
  words = saved["source_words"]
  assert [x["word"] for x in words if x["chunk"] != 1] == [f"[{w(i)}]" for i in (1, 2, 3)]
  for x in words:
    seg = by_chunk[x["chunk"]]
    assert x["emit_ms"] == seg["emit_ms"] == 320 * (x["chunk"] + 1)
    assert x["ready_ms"] == seg["ready_ms"] and x["ready_ms"] > x["emit_ms"]
  assert f"heard @ 320 ms: [{w(1)}] [{w(2)}]" in err
  assert f"heard @ 960 ms: [{w(3)}]" in err
