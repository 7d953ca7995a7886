"""The whole tiny pipeline, resumable: `python -m liveinterp.recipe --run_dir=runs/tiny`.

    data (corpus → TFDS → tokenizer) → codec → speech tokens → pretrain → sft_text → sft
    → rl1 → rl2 → evaluate → export

sft_text is the sft stage on text-only turns (what to say and when, without codec tokens,
~3x shorter streams); sft then adds the speech tokens, starting from it. rl1 and rl2 are
the two RL stages (liveinterp/rl/), each starting from the one before. `evaluate` and
`export` take the selected LLM stage (`select_stage`: the latest of rl2, rl1, sft that
finished and scores within 1 BLEU of the best on the RL stages' dev episodes; written to
RUN_DIR/selected_stage.json): `evaluate` writes its report to `RUN_DIR/eval_<stage>` (`RUN_DIR/eval`
for sft); `export` writes the serving artifact to `RUN_DIR/export` (`liveinterp.export`)
and translates one test utterance through it into `RUN_DIR/example_translation.wav`
(source: `example_source.wav`, text and timeline: `example_translation.json`).

Each step is skipped when its output is complete (a finished stage has a checkpoint at
its last step), and a stage interrupted half-way resumes from its last checkpoint, so
re-running the same command continues where it stopped (the export is redone when the
exported stage has a newer result than its manifest). Stage configs come from the
recipe file (`configs/<recipe>.py:<stage>`); paths between steps are filled in here.
`--config.a.b=v` overrides (as for `python -m liveinterp.train`) apply to every stage's
config (and to the corpus build's model config, except data.pair / data.build, which
name the build), e.g. `--config.train.learning_rate=1e-3`; a bad one is reported before
any step runs.

A stage that diverges stops the recipe (exit code 3: its weights are not handed on); one
stopped by SIGTERM stops it with exit code 75, "preempted, re-run me" (the exit codes of
`python -m liveinterp.train`, liveinterp/train/__main__.py). A user error (an unknown
step, a bad config value, an unwritable --run_dir) is one line with exit code 2
(liveinterp/common/cli.py; `--verbose` for the traceback).
"""

from __future__ import annotations

import json
import os
import time
import warnings

from absl import flags, logging

from liveinterp.common import cli, config as config_lib, distributed, files
from liveinterp.train import stage_configs
from liveinterp.train.stage_configs import stage_config

_RECIPE = flags.DEFINE_string("recipe", "tiny", "configs/<recipe>.py")
_RUN_DIR = flags.DEFINE_string("run_dir", "runs/tiny", "outputs of every step")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "corpus build dir (default RUN_DIR/../data)")
_CPU = flags.DEFINE_integer("cpu_devices", 0, "CPU devices (0 = default)")
_STEPS = flags.DEFINE_list("steps", ["data", "codec", "asr_judge", "speech_tokens",
                                     "pretrain", "sft_text", "sft", "rl1", "rl2", "evaluate",
                                     "export"],
                           "steps to run, in order (asr_judge: the ASR-BLEU recogniser, "
                           "trained on the corpus's reference speech; sft_text: SFT on "
                           "text-only turns, which sft then starts from; evaluate and "
                           "export take the stage chosen by dev score of rl2, rl1, sft)")
_SCALE = flags.DEFINE_float("budget_scale", 1.0, "multiply every stage's step budget")
from configs.base import RL_ABLATIONS  # noqa: E402  (stage name -> RL stage + changes)

STEPS = ("data", "codec", "asr_judge", "speech_tokens", "pretrain", "sft_text", "sft",
         "rl1", "rl2", *RL_ABLATIONS, "evaluate", "export")
# The LLM stages `evaluate` and `export` choose from, latest first (the RL ablations are
# side branches of rl1/rl2, evaluated by benchmarks/rl_table.py, never "the" model).
TRAINED_STAGES = ("rl2", "rl1", "sft")
EXAMPLE_WAV = "example_translation.wav"
EXAMPLE_SOURCE_WAV = "example_source.wav"

def _say(msg):
  from liveinterp.common import reporting
  reporting.console(f"[recipe] {msg}")


def stage_finished(workdir: str, steps: int | None = None) -> bool:
  """Whether the stage trained in `workdir` finished: its result.json says it ran its
  whole budget (at least `steps` steps when given; not stopped early, diverged, preempted
  or stopped at a step) and its checkpoints directory exists. The one test of both the
  recipe's skip of a trained stage and `latest_trained_stage`."""
  path = os.path.join(workdir, "result.json")
  if not os.path.exists(path) or not os.path.isdir(os.path.join(workdir, "checkpoints")):
    return False
  with open(path) as f:
    r = json.load(f)
  return ((steps is None or r.get("step", 0) >= steps)
          and not r.get("stopped_early", False) and not r.get("stopped"))


def latest_trained_stage(run_dir: str, stages=TRAINED_STAGES) -> str:
  """The first of `stages` (latest first: rl2, rl1, sft) that finished training in
  `run_dir` (`stage_finished`); UserError naming the run and the stages when none has."""
  for stage in stages:
    if stage_finished(os.path.join(run_dir, stage)):
      return stage
  raise cli.UserError(f"{run_dir}: none of the stages {', '.join(stages)} has finished "
                      f"training (a result.json without 'stopped' and a checkpoints "
                      f"directory); run the recipe's sft step first")


SELECTED_STAGE = "selected_stage.json"
SELECT_METRIC = "eval/simul_bleu"  # the dev score the RL stages record at both ends
# An RL stage's policy is taken over its starting policy's when it is at most this much
# below the best dev score (the BLEU budget of issue #13's goal: latency bought for at
# most 1 BLEU); a larger loss falls back to the policy it started from.
SELECT_TOLERANCE = 1.0


def select_stage(run_dir: str, tolerance: float = SELECT_TOLERANCE) -> tuple[str, dict]:
  """The LLM stage the recipe evaluates and exports, chosen by dev score, not by age:
  (stage, record with the scores and the reason).

  Every RL stage scores its starting policy and its final policy on the same dev
  episodes (`rl.trainer.starting_policy_eval`: `start/eval/simul_bleu` and
  `eval/simul_bleu` in its result.json), so sft's score is rl1's start and rl2's start
  must equal rl1's final score (to 0.01 BLEU: the same episodes, greedy decoding, the
  same checkpoint) for rl2 to be compared with sft. The chosen stage is the latest whose
  score is at most `tolerance` BLEU below the best score of the chain; a stage whose
  evaluation does not chain (no start score, or a start that differs from its parent's
  final) ends the comparison, and the stages after it are left out with that reason.
  Without any RL dev scores (no RL stage finished, or results from before the starting
  policy was scored) this is `latest_trained_stage`."""
  latest = latest_trained_stage(run_dir)  # raises when no stage finished
  scores: dict[str, float] = {}
  notes: list[str] = []
  for stage in ("rl1", "rl2"):
    parent = os.path.basename(stage_configs.init_from(stage, run_dir))  # its KL reference
    workdir = os.path.join(run_dir, stage)
    if not stage_finished(workdir):
      break
    with open(os.path.join(workdir, "result.json")) as f:
      r = json.load(f)
    start, final = r.get("start/" + SELECT_METRIC), r.get(SELECT_METRIC)
    if start is None or final is None:
      notes.append(f"{stage}: no dev score of its starting policy or of itself in its "
                   f"result.json; not compared")
      break
    known = scores.get(parent)
    if known is None and parent == "sft":
      scores["sft"] = known = float(start)
    if known is None or abs(float(start) - known) > 0.01:
      notes.append(f"{stage}: its starting policy scored {start:.2f}, not the "
                   f"{parent} score {known} it should chain from (other dev "
                   f"episodes?); not compared")
      break
    scores[stage] = float(final)
  if not scores:
    record = dict(stage=latest, metric=SELECT_METRIC, scores={}, notes=notes,
                  reason=f"no RL dev scores to compare: the latest trained stage, {latest}")
    return latest, record
  best = max(scores.values())
  stage = next(s for s in TRAINED_STAGES if s in scores and scores[s] >= best - tolerance)
  left = [s for s in TRAINED_STAGES if s in scores and s != stage]
  reason = (f"{stage}: dev {SELECT_METRIC} {scores[stage]:.2f}, the latest stage within "
            f"{tolerance:g} of the best ({best:.2f})")
  if latest in scores and TRAINED_STAGES.index(stage) > TRAINED_STAGES.index(latest):
    reason += f"; {latest} trained later but scored lower"
  record = dict(stage=stage, metric=SELECT_METRIC, tolerance=tolerance, scores=scores,
                notes=notes, reason=reason, compared=[stage, *left])
  return stage, record


def write_selection(run_dir: str, tolerance: float = SELECT_TOLERANCE, log=None) -> str:
  """`select_stage`, written to RUN_DIR/selected_stage.json and said; -> the stage."""
  stage, record = select_stage(run_dir, tolerance)
  files.write_json_atomic(os.path.join(run_dir, SELECTED_STAGE), record, indent=1)
  scores = ", ".join(f"{k} {v:.2f}" for k, v in record["scores"].items())
  (log or _say)(f"selected stage {record['reason']}"
                + (f" (dev scores: {scores})" if scores else "")
                + "".join(f"; {n}" for n in record["notes"]))
  return stage


def _newer(path: str, than: str) -> bool:
  return (os.path.exists(path) and os.path.exists(than)
          and os.path.getmtime(path) > os.path.getmtime(than))


def export_stage(run_dir: str, stage: str, *, export_args=(), log=None) -> tuple[str, bool]:
  """Exports `run_dir/<stage>` (its latest checkpoint, with the run's codec and speaker
  encoder and tokenizer) to `run_dir/export` with `liveinterp.export` (default decoding:
  greedy, as `liveinterp.translate`); `export_args` are extra `python -m
  liveinterp.export` flags. Skipped when the manifest there is newer than the stage's
  and the codec's result.json, names the same stage and has this version's export format
  (an older format is exported again: the loader refuses it). The config is the stage's own resolved
  `config.json` (else the run's). Returns (export dir, whether it was exported now)."""
  from liveinterp import export as export_lib  # pylint: disable=g-import-not-at-top
  log = log or _say
  out = os.path.join(run_dir, "export")
  manifest_path = os.path.join(out, "manifest.json")
  if all(_newer(manifest_path, os.path.join(run_dir, s, "result.json"))
         for s in (stage, "codec")):
    with open(manifest_path) as f:
      manifest = json.load(f)
    if (manifest.get("source", {}).get("stage") == stage
        and manifest.get("format_version") == export_lib.FORMAT_VERSION):
      log(f"export of {stage} up to date ({out})")
      return out, False
  config = os.path.join(run_dir, stage, "config.json")
  if not os.path.exists(config):
    config = os.path.join(run_dir, "config.json")
  export_lib.main(["--workdir", run_dir, "--out", out, "--stage", stage, "--config",
                   config, "--quiet", *export_args])
  log(f"exported {stage} to {out}")
  return out, True


def example_translation(run_dir: str, export_dir: str, cfg, *, split: str = "test",
                        index: int = 0, log=None) -> dict:
  """Translates record `index` of the corpus split `split` (`cfg.data`) through the
  exported artifact in `export_dir` (`serving.loader.load_export`, streamed chunk by
  chunk with `session.translate_stream`) and writes, in `run_dir`: the translated speech
  on the playback timeline (`example_translation.wav`, as `liveinterp.translate` writes
  it), the source (`example_source.wav`) and the text with its emission times
  (`example_translation.json`, plus the reference). Skipped when the wav is newer than
  the export's manifest. Returns {"wav", "source_wav", "json", "text", "reference"}."""
  # pylint: disable=g-import-not-at-top
  from data_pipelines import pipelines
  from liveinterp.eval import inputs
  from liveinterp.inference import audio_io, session
  from liveinterp.serving import loader
  # pylint: enable=g-import-not-at-top
  log = log or _say
  paths = {"wav": os.path.join(run_dir, EXAMPLE_WAV),
           "source_wav": os.path.join(run_dir, EXAMPLE_SOURCE_WAV),
           "json": os.path.join(run_dir, "example_translation.json")}
  if _newer(paths["wav"], os.path.join(export_dir, "manifest.json")) and os.path.exists(
      paths["json"]):
    with open(paths["json"]) as f:
      payload = json.load(f)
    log(f"example translation up to date ({paths['wav']})")
    return dict(paths, text=payload["text"], reference=payload.get("reference"))
  source = pipelines.open_corpus(cfg, split)
  if len(source) <= index:
    raise ValueError(f"split {split!r} of {cfg.data.data_dir} has {len(source)} records, "
                     f"no record {index} for the example translation")
  record = source[index]
  (wave,) = inputs.source_waves([record])
  decoder = loader.load_export(export_dir)
  (result,) = session.translate_stream(decoder, [wave[None]], batch=1,
                                       tokenizer=decoder.tokenizer)
  sr = decoder.sample_rate
  audio_io.write_audio(paths["source_wav"], wave, sr)
  audio_io.write_audio(paths["wav"], result.timeline(), sr)
  payload = dict(result.as_json(), reference=str(record.get("tgt_text", "")),
                 source_text_reference=str(record.get("src_text", "")),
                 record=str(record.get("id", index)), split=split, export=export_dir,
                 source_wav=paths["source_wav"], output=paths["wav"], sample_rate=sr,
                 timeline=True)
  with open(paths["json"], "w") as f:
    json.dump(payload, f, indent=1, ensure_ascii=False, default=float)
  log(f"example translation: {result.text.strip()!r} (reference "
      f"{payload['reference']!r}) -> {paths['wav']}")
  return dict(paths, text=result.text, reference=payload["reference"])


def run_stage(config, workdir) -> int:
  """Trains one stage (unless already finished); returns its exit code (`loop.exit_code`):
  0 to go on, else the recipe stops with that code and the message printed here."""
  from liveinterp.train import loop, stages
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:  # each stage directory carries its resolved config
    config_lib.save(config, os.path.join(workdir, "config.json"))
  if stage_finished(workdir, config.train.steps):
    _say(f"{config.stage}: already trained ({workdir}), skipping")
    return 0
  if config.stage in ("rl1", "rl2"):
    from liveinterp.rl import trainer  # pylint: disable=g-import-not-at-top
    trainer.check_config(config)
    result = trainer.run(config, workdir)
  else:
    result = loop.run(config, workdir, stages.build(config))
  with open(os.path.join(workdir, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  code = loop.exit_code(result)
  name = os.path.basename(workdir)
  if result.get("stopped") == "diverged":
    _say(f"{name} diverged ({result.get('stop_reason')}): stopping here, later steps are "
         f"not run on its weights. Fix it (a lower train.learning_rate in the recipe's "
         f"config, check the data) and re-run: the stage resumes from its last checkpoint, "
         f"or remove {workdir} to retrain it from the start. Exit code {code}.")
  elif result.get("stopped") == "preempted":
    _say(f"{name} stopped at step {result['step']} by SIGTERM, checkpoint saved: resume "
         f"later by re-running the same command (it continues this stage). Exit code "
         f"{code}.")
  return code


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  unknown = [s for s in _STEPS.value if s not in STEPS]
  if unknown:  # before any step runs
    raise cli.UserError(f"--steps: unknown step(s) {', '.join(unknown)}; expected some of "
                        f"{', '.join(STEPS)}")
  overrides = cli.config_overrides()
  # Overrides checked before any step runs: every stage's config loads with them.
  base = config_lib.load(f"{_RECIPE.value}:pretrain", overrides)
  cli.check_writable_dir(_RUN_DIR.value, "--run_dir")
  distributed.initialize(cpu_devices=_CPU.value)
  import jax  # after distributed init
  from data_pipelines import build
  from liveinterp.train import speech_tokens

  run_dir = os.path.abspath(_RUN_DIR.value)
  data_dir = os.path.abspath(_DATA_DIR.value or os.path.join(os.path.dirname(run_dir), "data"))
  os.makedirs(run_dir, exist_ok=True)
  tok_prefix = build.tokenizer_prefix_for(data_dir, base)
  steps = list(_STEPS.value)
  times = {}
  for i, step in enumerate(steps, 1):
    _say(f"step {i}/{len(steps)}: {step}")
    t0 = time.time()
    if step == "data":
      # data.pair / data.build name the build (build.run's own arguments, from `base`,
      # overrides applied): the build's model config takes the other overrides.
      build.run(base.data.pair, base.data.build, data_dir, model=_RECIPE.value,
                config_overrides=[o for o in overrides if config_lib.parse_override(o)[0]
                                  not in build.FLAG_FIELDS])
    elif step in ("codec", "asr_judge", "pretrain", "sft_text", "sft", "rl1", "rl2",
                  *RL_ABLATIONS):
      cfg = stage_config(_RECIPE.value, step, run_dir, data_dir, tok_prefix, _SCALE.value,
                         overrides)
      # Checked before the stage is built (its data pipeline and model): issue #12.
      config_lib.validate(cfg, num_devices=jax.device_count())
      config_lib.check_inputs(cfg)
      with warnings.catch_warnings():  # validated (and warned) just above
        warnings.simplefilter("ignore", config_lib.ConfigWarning)
        code = run_stage(cfg, os.path.join(run_dir, step))
      if code:
        return code  # app.run exits with it: 3 diverged, 75 preempted (loop.exit_code)
      if step in ("sft", "rl1", "rl2") and jax.process_index() == 0:
        # The run directory's own config (the latest LLM stage's): `translate`,
        # `evaluate` and `export` need only --workdir/--run_dir.
        config_lib.save(cfg, os.path.join(run_dir, "config.json"))
    elif step == "speech_tokens":
      cfg = stage_config(_RECIPE.value, "pretrain", run_dir, data_dir, tok_prefix,
                         overrides=overrides)
      out = cfg.data.codes_path
      codec_ckpt = os.path.join(run_dir, "codec", "result.json")
      if os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(codec_ckpt):
        _say(f"speech tokens up to date ({out})")
      else:
        stats = speech_tokens.encode_corpus(cfg, os.path.join(run_dir, "codec"), out)
        _say(f"speech tokens: {stats}")
    elif step == "evaluate":
      from liveinterp import evaluate
      stage = write_selection(run_dir)
      cfg = stage_config(_RECIPE.value, "sft", run_dir, data_dir, tok_prefix,
                         overrides=overrides)
      _say(f"evaluating {stage} (the selected stage)")
      report = evaluate.run(cfg, run_dir, split="test", publish=True, controls=True,
                            stage=stage)
      _say(f"evaluation report of {stage}: {report} (plots next to it)")
    elif step == "export":
      stage = write_selection(run_dir)
      cfg = stage_config(_RECIPE.value, "sft", run_dir, data_dir, tok_prefix,
                         overrides=overrides)
      if jax.process_index() == 0:  # one writer (the export runs on one device)
        out, _ = export_stage(run_dir, stage)
        example = example_translation(run_dir, out, cfg)
        _say(f"exported artifact: {out}; example translation: {example['wav']} (source "
             f"{example['source_wav']})")
    else:
      raise AssertionError(f"step {step!r} is in STEPS but has no branch here")
    times[step] = round(time.time() - t0, 1)
    _say(f"{step} done in {times[step]}s")
    _record_time(run_dir, step, times[step])


def _record_time(run_dir: str, step: str, seconds: float) -> None:
  """Adds one step's wall time to RUN_DIR/recipe_times.json (steps run in earlier
  invocations keep theirs; a step run again gets its latest time)."""
  path = os.path.join(run_dir, "recipe_times.json")
  times = {}
  if os.path.exists(path):
    with open(path) as f:
      times = json.load(f)
  times[step] = seconds
  files.write_json_atomic(path, times, indent=1)


if __name__ == "__main__":
  cli.run(main, prog="python -m liveinterp.recipe", config_overrides=True)
