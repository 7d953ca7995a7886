"""SimulEval agents around the streaming decoder: score a trained run with the field's tool
(`simuleval`, 1.1.4), as StreamSpeech or SeamlessStreaming are scored.

    # speech in, text out (the module's @entrypoint class)
    simuleval --agent liveinterp/serving/simuleval_agent.py \
        --workdir runs/tiny --source src.list --target tgt.txt --output out/ \
        --source-segment-size 640 --quality-metrics BLEU --latency-metrics AL LAAL

    # speech in, speech out
    simuleval --agent-class liveinterp.serving.simuleval_agent.LiveInterpSpeechToSpeech \
        --workdir runs/tiny --source src.list --target tgt.txt --output out/ \
        --source-segment-size 640 --latency-metrics StartOffset EndOffset

(`PYTHONPATH` must hold the repository root; `--source` lists one wav per line, `--target`
one reference per line.) Agent options: `--workdir` (a run directory: checkpoints under
`<workdir>/<stage>/checkpoints`, config `<workdir>/config.json` unless `--config`),
`--stage` (LLM stage, default the latest of rl2, rl1, sft, pretrain), `--step` (that
stage's checkpoint step, default the latest), `--tokenizer`, `--turns`,
`--max-turn-tokens`, `--temperature`/`--top-p`/`--seed` (default greedy).

How SimulEval's loop maps onto the decoder (wired, not re-implemented): SimulEval pushes
source segments of `--source-segment-size` ms and pops one output segment per push. The
agent appends the samples to its buffer, runs one `StreamingDecoder.step` per complete
model chunk (`stream.chunk_ms` of audio at `audio.sample_rate`; other input rates are
resampled), and answers with a WriteAction of what those turns wrote, or a ReadAction when
every turn waited. At the source's end the partial last chunk is zero-padded and decoded
(as `liveinterp.inference.session.translate_stream` does) and everything still held is
written with `finished=True`.

Text output is in words, SimulEval's latency unit (`--eval-latency-unit word`; `char` for
Chinese/Japanese targets): each turn's text is detokenized like `translate_stream`'s
(`session.Detokenizer`), and with a sentencepiece tokenizer and a spaced target language
the last word of a turn is held until the next text shows it is complete (the next piece
starts a word) or the source ends, so a word split over two turns is one word, delayed to
when it was finished. Speech output: each chunk's decoded speech is one SpeechSegment;
SimulEval places them back to back as `liveinterp.eval.latency.speech_delays` does.

Delays: SimulEval stamps an output with the source it has sent so far. With
`--source-segment-size` equal to the model's `stream.chunk_ms` each push is one chunk and
the delays are the decoder's emission times (chunk ends, capped at the source length),
exactly what `liveinterp.evaluate` scores (`eval.streaming_metrics.text_delays`); a
multiple of it (e.g. 640 ms for 320 ms chunks) batches that many chunks per push and
stamps their words at the push's end. Latency scores of SimulEval and
`liveinterp.eval.latency` agree on the same delays
(tests/unit/serving/test_simuleval_agent.py).
"""

from __future__ import annotations

import argparse
import os
from typing import Optional

import numpy as np
from simuleval.agents import SpeechToSpeechAgent, SpeechToTextAgent
from simuleval.agents.actions import ReadAction, WriteAction
from simuleval.data.segments import SpeechSegment
from simuleval.utils import entrypoint

_CJK_LANGS = ("zh", "ja")


def complete_words(pending: str, finished: bool, hold_last: bool) -> tuple[str, str]:
  """(words to write now, text to keep) from the text written but not yet given out.

  `hold_last`: the last word may still continue (sentencepiece pieces in a spaced
  language), so it is kept until text after it starts a new word or the source is
  `finished`; otherwise everything is written. The words are stripped of outer space.
  """
  if finished or not hold_last:
    return pending.strip(), ""
  cut = max(pending.rfind(" "), pending.rfind("\n"))
  if cut <= 0 or not pending[:cut].strip():
    return "", pending
  return pending[:cut].strip(), pending[cut:]


def load_decoder(workdir: str, *, stage: str | None = None, step: int | None = None,
                 config: str | None = None, tokenizer: str | None = None,
                 turns: str = "auto", max_turn_tokens: int | None = None,
                 temperature: float = 0.0, top_p: float = 1.0,
                 decode_speech: bool = True, codec_blocks=(16, 4)):
  """(StreamingDecoder, Tokenizer or None, config) of a trained run directory.

  The config is `config` (a `config.load` spec, or a config itself) or
  `<workdir>/config.json`; the LLM comes
  from `stage` (default the latest of `loading.LLM_STAGES` with checkpoints) at `step`
  (default its latest), codec and speaker encoder from the `codec` stage; the tokenizer
  as `python -m liveinterp.translate` finds it (`cli.run_config_path` picks the config).
  Raises `cli.UserError` when there is no config, FileNotFoundError naming a missing run
  directory or checkpoint.
  """
  # Heavy imports here, so that `simuleval --help` and argument errors stay fast.
  # pylint: disable=g-import-not-at-top
  from liveinterp.common import cli, config as config_lib, token_layout
  from liveinterp.inference import decoder as decoder_lib, loading
  from liveinterp.models.voice import VoiceCodec
  # pylint: enable=g-import-not-at-top
  if not workdir or not os.path.isdir(workdir):
    raise FileNotFoundError(f"--workdir={workdir!r}: no such run directory")
  cfg = (config_lib.load(cli.run_config_path(config, workdir))
         if config is None or isinstance(config, str) else config)
  if turns not in ("auto", "speech", "text"):
    raise ValueError(f"--turns={turns!r}: expected auto, speech or text")
  if stage is None:
    found = [s for s in loading.LLM_STAGES if os.path.isdir(
        os.path.join(workdir, s, "checkpoints"))]
    if not found:
      raise FileNotFoundError(f"--workdir={workdir}: no checkpoints of any of the stages "
                              f"{loading.LLM_STAGES}")
    stage = found[0]
  model, _ = loading.restore_stage(workdir, stage, cfg, step=step)
  voice, _ = loading.restore_stage(workdir, "codec", cfg,
                                   model_fn=lambda r: VoiceCodec(cfg, rngs=r))
  tok = loading.load_tokenizer(tokenizer, cfg, workdir)
  layout = (token_layout.TokenLayout.from_tokenizer(tok) if tok is not None
            else token_layout.TokenLayout.from_config(cfg))
  speech_turns = {"speech": True, "text": False}.get(turns,
                                                     decoder_lib.speech_turns_for(cfg))
  decoder = decoder_lib.StreamingDecoder(
      model, voice.codec, voice.speaker, layout, cfg, temperature=temperature, top_p=top_p,
      max_turn_tokens=max_turn_tokens, prompt_ids=decoder_lib.prompt_for(cfg, tok),
      speech_turns=speech_turns, decode_speech=decode_speech, codec_blocks=codec_blocks)
  return decoder, tok, cfg


def add_agent_args(parser: argparse.ArgumentParser) -> None:
  """The agents' options (added to SimulEval's own parser; no name clashes with it)."""
  parser.add_argument("--workdir", required=True, help="trained run directory")
  parser.add_argument("--stage", default=None,
                      help="LLM stage to load (default: the latest of rl2, rl1, sft, "
                           "pretrain with checkpoints)")
  parser.add_argument("--step", type=int, default=None,
                      help="checkpoint step of that stage (default: its latest)")
  parser.add_argument("--config", default=None,
                      help="config spec (default: WORKDIR/config.json)")
  parser.add_argument("--tokenizer", default=None,
                      help="sentencepiece prefix (default: as liveinterp.translate finds "
                           "it; without one, text is written as [id] words)")
  parser.add_argument("--turns", choices=("auto", "speech", "text"), default="auto",
                      help="turn grammar (auto: as the config trained it)")
  parser.add_argument("--max-turn-tokens", type=int, default=None)
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top-p", type=float, default=1.0)
  parser.add_argument("--seed", type=int, default=0, help="stream PRNG seed")
  parser.add_argument("--codec-blocks", type=_int_list, default=(16, 4),
                      help="speech agent: codec frame-block sizes decoded at once, comma "
                           "separated ('' = frame by frame: the smallest program to "
                           "compile, slower per chunk)")


def _int_list(text: str) -> tuple[int, ...]:
  """'16,4' -> (16, 4); '' -> ()."""
  try:
    return tuple(int(p) for p in str(text).split(",") if p.strip())
  except ValueError as e:
    raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from e


class _StreamingAgentMixin:
  """The decoder loop both agents share: buffer samples, one `step` per full chunk."""

  def _setup(self, args, decoder=None, tokenizer=None, cfg=None, *, speech: bool):
    if decoder is None:
      decoder, tokenizer, cfg = load_decoder(
          args.workdir, stage=args.stage, step=args.step, config=args.config,
          tokenizer=args.tokenizer, turns=args.turns, max_turn_tokens=args.max_turn_tokens,
          temperature=args.temperature, top_p=args.top_p, decode_speech=speech,
          codec_blocks=args.codec_blocks)
    from liveinterp.inference import session  # pylint: disable=g-import-not-at-top
    self.decoder = decoder
    self.tokenizer = tokenizer
    self.seed = int(getattr(args, "seed", 0) or 0)
    tgt = str(cfg.data.pair).partition("-")[2] if cfg is not None else ""
    self.target_lang = tgt
    # Only sentencepiece text in a spaced language can end a turn inside a word.
    self.hold_partial_words = tokenizer is not None and not tgt.startswith(_CJK_LANGS)
    self._detok_cls = session.Detokenizer

  def reset(self) -> None:
    super().reset()
    self._stream = None          # DecoderState, made at the first chunk
    self._consumed = 0           # source samples (at the model rate) already decoded
    self._samples = np.zeros(0, np.float32)
    self._said_text = False
    self._pending = ""           # text written by the model, not yet given to SimulEval
    self.detok = self._detok_cls(getattr(self, "tokenizer", None))

  def _source_at_model_rate(self) -> np.ndarray:
    """The source so far as mono float32 at `audio.sample_rate` (channels averaged,
    resampled when needed)."""
    from liveinterp.common.audio import resample  # pylint: disable=g-import-not-at-top

    def mono(frames):  # SimulEval reads a multi-channel wav as [frames, channels]
      x = np.asarray(frames, np.float32)
      return x.mean(axis=1) if x.ndim == 2 else x.reshape(-1)

    src = self.states.source
    rate = int(self.states.source_sample_rate or self.decoder.sample_rate)
    if rate == self.decoder.sample_rate:
      if len(src) > self._samples.size:
        self._samples = np.concatenate([self._samples, mono(src[self._samples.size:])])
      return self._samples
    # Another rate: resample the whole source so far (streaming resampling would shift
    # chunk boundaries by filter delays); only the part past `_consumed` is used.
    return resample(mono(src), rate, self.decoder.sample_rate)

  def _run_chunks(self):
    """Decodes every complete chunk not yet decoded (and, at the source's end, the padded
    rest) -> (text of those turns, list of their audio arrays)."""
    import jax  # pylint: disable=g-import-not-at-top
    x = self._source_at_model_rate()
    n = self.decoder.chunk_samples
    texts, audio = [], []
    while x.size - self._consumed >= n or (self.states.source_finished
                                          and x.size > self._consumed):
      chunk = np.zeros((1, n), np.float32)
      part = x[self._consumed:self._consumed + n]
      chunk[0, :part.size] = part
      self._consumed += part.size
      if self._stream is None:
        self._stream = self.decoder.init_stream(1, self.seed)
      self._stream, out = self.decoder.step(self._stream, chunk)
      host = jax.device_get(out._replace(logits=None, tokens=None, logprob_raw=None,
                                         logprob_sampled=None, values=None))
      ids = [int(i) for i in host.text[0, :host.n_text[0]]]
      text = self.detok(ids, self._said_text)
      self._said_text |= bool(text)
      texts.append(text)
      audio.append(np.asarray(host.audio[0, :host.n_samples[0]], np.float32))
    return "".join(texts), audio


@entrypoint
class LiveInterpSpeechToText(_StreamingAgentMixin, SpeechToTextAgent):
  """Speech in, text out: one WriteAction of whole words per push that wrote some."""

  def __init__(self, args: Optional[argparse.Namespace] = None, *, decoder=None,
               tokenizer=None, cfg=None):
    self._setup(args, decoder, tokenizer, cfg, speech=False)
    super().__init__(args)

  @staticmethod
  def add_args(parser: argparse.ArgumentParser):
    add_agent_args(parser)

  def policy(self):
    text, _ = self._run_chunks()
    done = self.states.source_finished
    out, self._pending = complete_words(self._pending + text, done,
                                        self.hold_partial_words)
    if out or done:
      return WriteAction(out, finished=done)
    return ReadAction()


class LiveInterpSpeechToSpeech(_StreamingAgentMixin, SpeechToSpeechAgent):
  """Speech in, speech out: one SpeechSegment of the pushed chunks' decoded speech per
  push that spoke (select it with `--agent-class`)."""

  def __init__(self, args: Optional[argparse.Namespace] = None, *, decoder=None,
               tokenizer=None, cfg=None):
    self._setup(args, decoder, tokenizer, cfg, speech=True)
    super().__init__(args)

  @staticmethod
  def add_args(parser: argparse.ArgumentParser):
    add_agent_args(parser)

  def policy(self):
    _, audio = self._run_chunks()
    samples = np.concatenate(audio) if audio else np.zeros(0, np.float32)
    done = self.states.source_finished
    if samples.size or done:
      return WriteAction(SpeechSegment(index=0, content=samples.tolist(),
                                       sample_rate=self.decoder.sample_rate,
                                       finished=done, tgt_lang=self.target_lang),
                         finished=done)
    return ReadAction()


__all__ = ["LiveInterpSpeechToText", "LiveInterpSpeechToSpeech", "load_decoder",
           "add_agent_args", "complete_words"]
