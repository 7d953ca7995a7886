"""The recipe's closing steps (issue #15, the main job): `evaluate` and `export` take the
latest trained LLM stage, and `export` writes the serving artifact and one example
translation made through it, then skips both on a re-run.

The export runs on a micro run directory: the micro corpus (its test split gives the
example utterance), random weights of `loading.build_models(cfg, seed=2)` saved as the
run's `sft` and `codec` checkpoints (the helpers of tests/unit/serving/test_export.py).
"""

import json
import os
from unittest import mock

import numpy as np
import soundfile as sf
from absl import flags
from absl.testing import flagsaver

from liveinterp.common import cli, config as config_lib
from liveinterp.inference import loading
from liveinterp.models.voice import VoiceCodec
from liveinterp.train.stage_configs import stage_config
from tests.integration.micro_corpus import micro_corpus
from tests.unit.serving.test_export import _save_stage

# Small export program (as test_export's): short turns, one codec block size, a short
# speaker window.
EXPORT_ARGS = ["--max_turn_tokens", "16", "--speaker_window_ms", "320", "--codec_blocks",
               "4", "--turns", "speech"]


def _result(run_dir, stage, checkpoints=True, **result):
  d = os.path.join(run_dir, stage)
  os.makedirs(os.path.join(d, "checkpoints") if checkpoints else d, exist_ok=True)
  with open(os.path.join(d, "result.json"), "w") as f:
    json.dump(dict({"step": 10, "stopped_early": False}, **result), f)


def test_latest_trained_stage_is_the_latest_that_finished(tmp_path):
  from liveinterp import recipe
  run = str(tmp_path)
  try:
    recipe.latest_trained_stage(run)
    raise AssertionError("no stage trained: expected a UserError")
  except cli.UserError as e:
    assert "rl2, rl1, sft" in str(e) and run in str(e)
  _result(run, "sft")
  assert recipe.latest_trained_stage(run) == "sft"
  _result(run, "rl2", stopped="preempted", stopped_early=True)  # stopped half-way
  _result(run, "rl1", checkpoints=False)                        # no checkpoints
  assert recipe.latest_trained_stage(run) == "sft"
  _result(run, "rl1")
  assert recipe.latest_trained_stage(run) == "rl1"
  _result(run, "rl2", stopped_early=True)                        # budget not reached
  assert recipe.latest_trained_stage(run) == "rl1"
  _result(run, "rl2")
  assert recipe.latest_trained_stage(run) == "rl2"
  assert recipe.latest_trained_stage(run, stages=("rl1", "sft")) == "rl1"


def _rl(run, stage, start, final):
  _result(run, stage, **{"start/eval/simul_bleu": start, "eval/simul_bleu": final})


def test_selected_stage_is_chosen_by_dev_score(tmp_path):
  """`select_stage`: the latest stage within 1 BLEU of the best dev score of the chain
  sft (rl1's start) -> rl1 -> rl2 (whose start must be rl1's final score)."""
  from liveinterp import recipe
  run = str(tmp_path)
  _result(run, "sft")
  assert recipe.select_stage(run)[0] == "sft"  # nothing to compare: the latest
  _rl(run, "rl1", 30.0, 25.9)                     # rl1 lost 4.1 BLEU: keep SFT
  stage, rec = recipe.select_stage(run)
  assert stage == "sft" and rec["scores"] == {"sft": 30.0, "rl1": 25.9}, rec
  _rl(run, "rl1", 30.0, 29.2)                     # within the 1 BLEU budget: rl1
  assert recipe.select_stage(run)[0] == "rl1"
  assert recipe.select_stage(run, tolerance=0.5)[0] == "sft"
  _rl(run, "rl2", 29.2, 20.1)                     # rl2 lost 9 BLEU: rl1
  stage, rec = recipe.select_stage(run)
  assert stage == "rl1" and "rl2 trained later but scored lower" in rec["reason"], rec
  _rl(run, "rl2", 29.2, 31.0)                     # the best: rl2
  assert recipe.select_stage(run)[0] == "rl2"
  _rl(run, "rl1", 30.0, 25.0)                     # rl1 worse, rl2 (from it) best: rl2
  _rl(run, "rl2", 25.0, 29.5)
  assert recipe.select_stage(run)[0] == "rl2"
  _rl(run, "rl2", 25.3, 35.0)                     # rl2's start is not rl1's final: not
  stage, rec = recipe.select_stage(run)           # comparable, left out
  assert stage == "sft" and "rl2" not in rec["scores"] and "rl2:" in rec["notes"][0], rec
  _result(run, "rl2", stopped_early=True)         # unfinished: not a candidate
  assert recipe.select_stage(run)[0] == "sft"
  _result(run, "rl1", **{"eval/simul_bleu": 40.0})  # no start score (older run): latest
  stage, rec = recipe.select_stage(run)
  assert stage == "rl1" and "no RL dev scores" in rec["reason"], rec
  # Written and said by the recipe's evaluate/export steps.
  _rl(run, "rl1", 30.0, 25.9)
  said = []
  assert recipe.write_selection(run, log=said.append) == "sft"
  written = json.load(open(os.path.join(run, recipe.SELECTED_STAGE)))
  assert written["stage"] == "sft" and written["scores"]["rl1"] == 25.9
  assert said and "sft" in said[0] and "25.90" in said[0]


def test_one_stage_finished_rule_for_the_skip_and_the_latest_stage(tmp_path):
  """`run_stage`'s skip and `latest_trained_stage` share `stage_finished(workdir, steps)`:
  a whole budget (>= steps when given), not stopped, with a checkpoints directory."""
  from liveinterp import recipe
  run = str(tmp_path)
  sft = os.path.join(run, "sft")
  _result(run, "sft", step=10)
  assert recipe.stage_finished(sft) and recipe.stage_finished(sft, steps=10)
  assert not recipe.stage_finished(sft, steps=11)  # the budget grew: train on
  _result(run, "sft", step=10, checkpoints=False)  # still there from the call above
  os.rmdir(os.path.join(sft, "checkpoints"))
  assert not recipe.stage_finished(sft, steps=10)  # no checkpoints: nothing to skip to
  _result(run, "sft", step=10, stopped="preempted")
  assert not recipe.stage_finished(sft, steps=10)


def test_export_step_writes_the_artifact_and_an_example_then_skips(tmp_path):
  from liveinterp import recipe
  from liveinterp.serving import loader
  data_dir, tok_prefix = micro_corpus()
  run = str(tmp_path / "run")
  cfg = stage_config("micro", "sft", run, data_dir, tok_prefix)
  config_lib.save(cfg, os.path.join(run, "sft", "config.json"))
  models = loading.build_models(cfg, seed=2)  # writes text and speech on test audio
  _save_stage(run, "sft", models[0], 5)
  voice = loading.random_model(lambda r: VoiceCodec(cfg, rngs=r), seed=9)
  voice.codec, voice.speaker = models[1], models[2]
  _save_stage(run, "codec", voice, 3)
  _result(run, "sft", step=5)
  _result(run, "codec", step=3)
  stage = recipe.latest_trained_stage(run)
  assert stage == "sft"

  said = []
  out, exported = recipe.export_stage(run, stage, export_args=EXPORT_ARGS, log=said.append)
  assert exported and out == os.path.join(run, "export")
  manifest = json.load(open(os.path.join(out, "manifest.json")))
  assert manifest["source"]["stage"] == "sft" and manifest["tokenizer"]
  assert loader.load_export(out).max_turn_tokens == 16  # the export args were applied
  example = recipe.example_translation(run, out, cfg, log=said.append)
  assert example["wav"] == os.path.join(run, recipe.EXAMPLE_WAV)
  speech, sr = sf.read(example["wav"], dtype="float32")
  source, sr_src = sf.read(example["source_wav"], dtype="float32")
  assert sr == sr_src == cfg.audio.sample_rate
  assert source.size > sr // 4 and np.abs(source).max() > 0.01  # a spoken utterance
  # The timeline covers the source, and the model spoke on it.
  assert speech.size >= source.size and np.sqrt(np.mean(speech ** 2)) > 1e-4
  payload = json.load(open(example["json"]))
  assert payload["reference"] and payload["segments"] and payload["text"] == example["text"]
  assert any(s["audio_ms"] > 0 for s in payload["segments"])

  # Re-run through the recipe's own `export` step: both parts are up to date.
  stamps = [os.path.getmtime(p) for p in (os.path.join(out, "manifest.json"),
                                          example["wav"])]
  with flagsaver.flagsaver():
    flags.FLAGS(["recipe", "--recipe=micro", f"--run_dir={run}", f"--data_dir={data_dir}",
                 "--steps=export"])
    assert not recipe.main([])
  assert stamps == [os.path.getmtime(p) for p in (os.path.join(out, "manifest.json"),
                                                  example["wav"])]
  times = json.load(open(os.path.join(run, "recipe_times.json")))
  assert set(times) == {"export"}

  # An export in an older format (the loader refuses it) is exported again, not skipped.
  from liveinterp import export as export_lib
  manifest["format_version"] = export_lib.FORMAT_VERSION - 1
  with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  calls = []
  with mock.patch.object(export_lib, "main", calls.append):
    _, exported = recipe.export_stage(run, stage, log=said.append)
  assert exported and len(calls) == 1 and "--stage" in calls[0]
