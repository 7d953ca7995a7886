"""Translate a speech file: `python -m liveinterp.translate in.wav --out out.wav`.

    python -m liveinterp.translate talk.wav --out talk.en.wav --workdir=runs/tiny
    python -m liveinterp.translate talk.wav --out /tmp/o.wav --config=configs/micro.py \
        --init=random                                # smoke run, random weights

The source is fed to the streaming decoder chunk by chunk, as a live stream would be.
Writes the translated speech (`--out`; placed on the playback timeline next to the
source unless `--concat`) and, next to it (`OUT.json`, or `--json`), the text segments
with their emission times in ms of source consumed, computation-aware ready times, the
speech playback spans and the real-time factor. Progress (chunks, source seconds, RTF)
goes to stderr.

Live source transcript (a model trained with `data.src_transcript`, whose turns start with
`<src> newly heard source words`; `--allow_src` forces it on): the JSON carries it per
segment (`source_text`) and whole (`source_text`, and `source_words`: each word with its
emission and computation-aware ready times in ms), kept out of the translated `text`;
each turn's newly heard words are also printed on stderr (`[translate] heard @ T ms: ...`).

Weights: `--workdir` of a trained run (`python -m liveinterp.recipe --run_dir=...`:
checkpoints under `<workdir>/<stage>/checkpoints`, the LLM from the latest of rl2, rl1,
sft, pretrain, the codec and speaker encoder from `codec`; the config is `--config` or
`<workdir>/config.json`), or `--init=random` (numpy-drawn random weights, smoke tests).
A model trained without speech codes (text-only turns) writes text only: `--turns`
picks the matching turn grammar (auto from the config by default).

Before any work the flags, the input, the output paths and the config are checked; a
mistake there is one line on stderr and exit code 2 (`--verbose`: with the traceback;
liveinterp/common/cli.py).
"""

from __future__ import annotations

import json
import os
import sys
import time

from liveinterp.common import cli


def _parser() -> cli.ArgumentParser:
  p = cli.ArgumentParser(prog="python -m liveinterp.translate",
                         description=__doc__.split("\n")[0])
  cli.add_audio_io_args(p, "segments")
  p.add_argument("--workdir", default=None, help="trained run directory")
  p.add_argument("--config", default=None, help="config file[:stage] or config.json "
                 "(config.load spec); override fields with --config.a.b=v")
  p.add_argument("--init", choices=("trained", "random"), default="trained",
                 help="weights: from --workdir (trained) or random (smoke test)")
  p.add_argument("--stage", default=None, help="LLM stage to load (default: latest)")
  p.add_argument("--tokenizer", default=None,
                 help="sentencepiece prefix (default: config tokenizer.model_path, else "
                      "the recipe's WORKDIR/../data/tokenizer/...; without one, text is "
                      "written as token ids)")
  cli.add_decoding_args(p, seed_help="sampling key (and --init=random weights)")
  p.add_argument("--concat", action="store_true",
                 help="write the speech segments back to back instead of on the timeline")
  p.add_argument("--normalize", action="store_true",
                 help="rescale the input to a peak of 0.99 (for float audio far above 1.0, "
                      "which is otherwise used as is, with a warning)")
  p.add_argument("--quiet", action="store_true", help="no progress line")
  p.add_argument("--verbose", action="store_true",
                 help="show the traceback of user errors (bad flags, paths, config) too")
  return p


def _check_args(args):
  """UserError for flags that cannot work, before anything is loaded or computed."""
  if args.init == "trained" and not args.workdir:
    raise cli.UserError("give --workdir=DIR of a trained run, or --init=random")
  if args.init == "random" and args.workdir:
    raise cli.UserError("--init=random ignores --workdir; pass one or the other")
  if args.workdir and not os.path.isdir(args.workdir):
    raise cli.UserError(f"--workdir={args.workdir}: no such directory")
  if not os.path.exists(args.input):
    raise cli.UserError(f"{args.input}: no such audio file")
  if os.path.isdir(args.input):
    raise cli.UserError(f"{args.input}: is a directory, expected an audio file")
  if not os.access(args.input, os.R_OK):
    raise cli.UserError(f"{args.input}: not readable")
  # The outputs are written last: a full run must not end on an unwritable path.
  cli.check_writable_file(args.out, "--out")
  cli.check_writable_file(args.json or os.path.splitext(args.out)[0] + ".json", "--json")
  if args.tokenizer and not os.path.exists(args.tokenizer.removesuffix(".model") + ".model"):
    raise cli.UserError(f"--tokenizer={args.tokenizer}: no "
                        f"{args.tokenizer.removesuffix('.model')}.model")


def main(argv=None) -> dict:
  """Runs the CLI; returns the JSON payload it wrote (for tests). User errors raise
  (cli.UserError, ConfigError, ...); `python -m` reports them in one line (cli.call)."""
  overrides, args = cli.parse_args(_parser(), argv)
  _check_args(args)
  cfg, config_path = cli.load_run_config(args.config, args.workdir, overrides)
  # Heavy imports after the checks, so `--help` and mistakes are instant.
  import jax  # pylint: disable=g-import-not-at-top
  # pylint: disable=g-import-not-at-top
  from liveinterp.inference import audio_io, loading
  from liveinterp.inference import session as session_lib
  # pylint: enable=g-import-not-at-top

  sr = int(cfg.audio.sample_rate)
  input_report = audio_io.InputReport()  # suspect input: warned here, counted in the JSON
  source = audio_io.read_audio(args.input, sr, normalize=args.normalize,
                               report=input_report)
  for message in input_report.messages:
    sys.stderr.write(f"[translate] warning: {message}\n")
  tokenizer = loading.load_tokenizer(args.tokenizer, cfg, args.workdir)
  decoder = loading.run_decoder(
      cfg, tokenizer, workdir=args.workdir, init=args.init, seed=args.seed, stage=args.stage,
      temperature=args.temperature, top_p=args.top_p, max_turn_tokens=args.max_turn_tokens,
      turns=args.turns, allow_src=args.allow_src)
  speech_turns = decoder.spec.grammar.speech
  n_chunks = -(-source.size // decoder.chunk_samples)
  compile_s = session_lib.warmup(decoder, 1)
  progress = {"compute_ms": 0.0}
  t_start = time.perf_counter()

  def on_chunk(ev):
    progress["compute_ms"] += ev.compute_ms
    done = ev.chunk + 1
    heard = ev.source_text[0].strip()
    if heard and not args.quiet:  # the live transcript: one line per turn that has one
      sys.stderr.write(f"\r[translate] heard @ {float(ev.end_ms[0]):.0f} ms: {heard}\n")
    if not args.quiet and (done == n_chunks or done % 10 == 0):
      src_s = done * decoder.chunk_ms / 1000
      rtf = progress["compute_ms"] / 1000 / src_s
      sys.stderr.write(f"\r[translate] chunk {done}/{n_chunks} | {src_s:.1f} s of source "
                       f"| RTF {rtf:.3f}")
      if done == n_chunks:
        sys.stderr.write("\n")
      sys.stderr.flush()

  (result,) = session_lib.translate_stream(decoder, [source[None]], batch=1,
                                         tokenizer=tokenizer, rng=jax.random.key(args.seed),
                                         on_chunk=on_chunk)
  wall_s = time.perf_counter() - t_start
  speech = result.speech if args.concat else result.timeline()
  audio_io.write_audio(args.out, speech, sr)
  json_path = args.json or os.path.splitext(args.out)[0] + ".json"
  payload = dict(result.as_json(), input=os.path.abspath(args.input),
                 output=os.path.abspath(args.out), sample_rate=sr,
                 chunk_ms=decoder.chunk_ms, chunks=n_chunks, compile_s=compile_s,
                 wall_s=wall_s, init=args.init, config=config_path,
                 workdir=args.workdir, timeline=not args.concat, speech_turns=speech_turns,
                 src_transcript=bool(decoder.spec.grammar is not None
                                     and decoder.spec.grammar.allow_src),
                 detokenized=tokenizer is not None,
                 input_warnings=dict(input_report.counts))
  os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)  # as --out's
  with open(json_path, "w") as f:
    json.dump(payload, f, indent=1, ensure_ascii=False)
  if not args.quiet:
    sys.stderr.write(f"[translate] wrote {args.out} ({speech.size / sr:.2f} s) and "
                     f"{json_path}: {len(result.segments)} segment(s), RTF {result.rtf:.3f}"
                     + (f"; input warnings {dict(input_report.counts)}"
                        if input_report.counts else "") + "\n")
  return payload


if __name__ == "__main__":
  cli.call(main, sys.argv[1:], prog="python -m liveinterp.translate",
           verbose="--verbose" in sys.argv[1:])
