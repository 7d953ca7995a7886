"""Evaluation of a trained run: `python -m liveinterp.evaluate --run_dir=runs/tiny --split=test`.

Streams every test utterance through the streaming decoder (the trained SFT model, the
codec and the speaker encoder: speech comes out in the source speaker's voice) and
reports, as JSON + markdown + plots in `<run_dir>/eval/`:

- latency (SimulEval definitions, `liveinterp.eval.latency`): AL, LAAL, AP, DAL,
  StartOffset, EndOffset, FLAL of the text output and of the played speech (segments back
  to back), non-computation-aware and computation-aware (measured step times);
- quality: BLEU / chrF of the text output; ASR-BLEU of the speech output through an
  independent recogniser (`speech_recognizer`: the run's ASR judge, trained on the
  corpus's reference speech, when it has one; else pocketsphinx, English targets only)
  with its ceiling (the reference speech recognised the same way);
- the offline ceiling: the same model and prompt given the whole source first (every turn
  before the last chunk waits);
- reference policy points: the training targets' own latency (alignment ready times and
  wait-k on the references: BLEU 100 by construction), to place the model on the plot;
- voice: similarity of output speech to its source speaker vs to other speakers, with a
  training-free embedding independent of the model's speaker encoder; the voice-lost
  control (the same speech decoded with another speaker's embedding: own − control
  margin); and in two-speaker talks (`--multi_speaker_talks`), whether each output
  segment has the voice of the speaker it translates (report["voice_multi"]);
- speed: real-time factor of the streaming decoder on this machine;
- optionally (`--controls`) the same utterances with zeroed and with swapped source audio:
  far lower BLEU than on the real audio shows the model translates what it hears.

`--text_only` evaluates the text side alone (no codec checkpoint needed). The streaming
loop (`translate_records`, `simul_scores`) is also what the SFT stage's dev evaluation
runs on the in-training model.

This module runs the models and orchestrates; the metrics are pure functions in
`liveinterp.eval` (`streaming_metrics`: delays, latency rows, scores; `inputs`: audio
controls and two-speaker talks; `speaker_similarity`; `report`: markdown and the
published JSON; `plots`), which import neither `liveinterp.inference` nor
`liveinterp.models`.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import flags, logging

from liveinterp.eval import inputs, plots, report as report_lib, streaming_metrics as sm
from liveinterp.eval.inputs import source_waves
from liveinterp.eval.streaming_metrics import simul_scores  # noqa: F401

ROOT = report_lib.ROOT


def speech_recognizer(run_dir: str, lang: str):
  """The recogniser ASR-BLEU uses for `lang` speech: the run's trained judge
  (`RUN_DIR/asr_judge`, `models/asr_judge.py`: a word CTC recogniser trained on the
  corpus's reference target speech) when it has one for `lang`, else the shared
  pocketsphinx (English only; `recognizers.NoRecognizerError` otherwise). One judge per
  directory per process."""
  from liveinterp.models import asr_judge
  judge_dir = os.path.abspath(os.path.join(run_dir, asr_judge.STAGE))
  if asr_judge.trained_for(judge_dir, lang):
    if judge_dir not in _JUDGES:
      _JUDGES[judge_dir] = asr_judge.JudgeRecognizer.from_dir(judge_dir)
    return _JUDGES[judge_dir]
  from liveinterp.eval import recognizers
  return recognizers.get_recognizer(lang)


_JUDGES: dict = {}


def codec_quality(codec, speaker, records, cfg, max_items: int = 16,
                  recognizer=None) -> dict:
  """Target speech → codec encode → decode in the voice of the *source* utterance (same
  speaker, other language): mel distance to the original, and ASR chrF/BLEU of the
  resynthesis vs of the original audio against the reference text (`recognizer`, default
  pocketsphinx: English only)."""
  import jax.numpy as jnp
  from flax import nnx
  from liveinterp.eval import quality
  from liveinterp.layers.audio_frontend import LogMelFrontend
  fe = LogMelFrontend.from_config(cfg.audio)
  from liveinterp.models.voice import resynthesize
  resynth = nnx.jit(resynthesize)
  items = [r for r in records if len(r["tgt_audio"]) and len(r["src_audio"])][:max_items]
  mel_d, orig, resy, refs = [], [], [], []
  for r in items:
    x = np.asarray(r["tgt_audio"], np.float32)[None] / 32768.0
    n = x.shape[1] // codec.hop * codec.hop
    x = x[:, :n]
    ref = np.asarray(r["src_audio"], np.float32)[None] / 32768.0
    y = np.asarray(resynth(codec, speaker, jnp.asarray(x), jnp.asarray(ref)))
    mx, my = fe(jnp.asarray(x))[0], fe(jnp.asarray(y[:, :n]))[0]
    mel_d.append(float(jnp.mean(jnp.abs(mx - my))))
    orig.append(x[0])
    resy.append(y[0])
    refs.append(r["tgt_text"])
  out = {"items": len(items), "mel_l1": float(np.mean(mel_d)) if mel_d else None}
  if items and (recognizer is not None or items[0]["tgt_lang"].startswith("en")):
    from liveinterp.eval import recognizers
    rec = recognizer or recognizers.get_recognizer("en")
    hyp_o = [rec(a, cfg.audio.sample_rate) for a in orig]
    hyp_r = [rec(a, cfg.audio.sample_rate) for a in resy]
    orig_s, resy_s = quality.asr_scores(hyp_o, refs), quality.asr_scores(hyp_r, refs)
    out.update(asr_chrf_original=orig_s["asr_chrf"], asr_chrf_resynthesized=resy_s["asr_chrf"],
               asr_bleu_original=orig_s["asr_bleu"], asr_bleu_resynthesized=resy_s["asr_bleu"],
               transcripts=list(zip(refs[:2], hyp_o[:2], hyp_r[:2])), recognizer=rec.name)
  return out


def _speaker_ref(audio: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """The last `n` samples of float32 `audio` as ([1, n], validity mask [1, n]); shorter
  audio is left-padded with zeros (masked), as the decoder's rolling speaker buffer."""
  x = np.asarray(audio, np.float32)[-n:]
  out = np.zeros((1, n), np.float32)
  mask = np.zeros((1, n), bool)
  if x.size:
    out[0, n - x.size:] = x
    mask[0, n - x.size:] = True
  return out, mask


def voice_lost_controls(codec, speaker, results, records, sample_rate: int,
                        window_samples: int | None = None, bucket_s: float = 1.0):
  """The voice-lost control of every output (`speaker_similarity.voice_control`): the
  same speech codes decoded by the codec with the speaker embedding of ANOTHER speaker's
  source utterance (`speaker_similarity.control_partners`: the next record of a different
  speaker), and the same codes decoded with the output's own source embedding
  (`resynth`, the round-trip check).

  The codes: `result.speech_codes` ([T, Q]) when the decoder result carries them, else
  the codec's own encoding of the output speech (a StreamResult carries the decoded
  audio, not the codes; the codec decodes its encoding back to nearly the same audio,
  and `resynth` shows how near). The embedding is the speaker encoder's on the last
  `window_samples` of that source (the decoder's speaker window; default 3 s).
  Audio is zero-padded to `bucket_s` × a power of two (one compile per bucket, a few per
  evaluation; codec encoder and decoder are causal, so the padding does not change the
  kept samples).

  Returns (controls, resynth): float32 audio per output, None where the output has no
  speech (shorter than one codec hop) or no other speaker exists.
  """
  import jax.numpy as jnp
  from flax import nnx
  from liveinterp.eval import speaker_similarity
  from liveinterp.models import voice
  n_win = int(window_samples or 3 * sample_rate)
  hop = int(codec.hop)
  min_frames = max(1, -(-int(bucket_s * sample_rate) // hop))

  def padded_frames(n_frames: int) -> int:  # min_frames x the next power of two
    k = -(-n_frames // min_frames)
    return min_frames * (1 << max(0, (k - 1).bit_length()))

  ids = [str(r["speaker"]) for r in records]
  partners = speaker_similarity.control_partners(ids)
  srcs = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
  from_audio = nnx.jit(voice.resynthesize)
  from_codes = nnx.jit(lambda c, s, q, ref, m: c.decode(q, s.embed_audio(ref, m)))
  controls, resynth = [], []
  for i, res in enumerate(results):
    codes = getattr(res, "speech_codes", None)
    speech = res.speech if res.speech is not None else np.zeros(0, np.float32)
    n = (int(np.shape(codes)[0]) * hop if codes is not None
         else speech.size // hop * hop)
    if n == 0:
      controls.append(None)
      resynth.append(None)
      continue
    if codes is not None:
      frames = padded_frames(n // hop)
      q = np.zeros((1, frames, np.shape(codes)[1]), np.int32)
      q[0, :len(codes)] = np.asarray(codes, np.int32)
      run = lambda ref, m, q=q: from_codes(codec, speaker, jnp.asarray(q), ref, m)  # noqa: E731
    else:
      x = np.zeros((1, padded_frames(n // hop) * hop), np.float32)
      x[0, :n] = speech[:n]
      run = lambda ref, m, x=x: from_audio(codec, speaker, jnp.asarray(x), ref, m)  # noqa: E731
    outs = []
    for j in (partners[i], i):
      if j is None:
        outs.append(None)
        continue
      ref, m = _speaker_ref(srcs[j], n_win)
      outs.append(np.asarray(run(jnp.asarray(ref), jnp.asarray(m)))[0, :n])
    controls.append(outs[0])
    resynth.append(outs[1])
  return controls, resynth


def without_mesh():
  """Context with no mesh: the streaming decoder's weights sit on one device, so its
  steps must carry no sharding constraints, even when called inside a training loop's
  mesh (the SFT dev evaluation). A no-op outside one."""
  import jax
  return jax.set_mesh(None)


def translate_records(decoder, records, tokenizer, *, audio: str = "real",
                      batch: int = 8, log=None, whole_source_first: bool = False) -> list:
  """Streams every record's source audio (`source_waves(records, audio)`) through
  `decoder`, `batch` streams at a time; returns one `streaming.StreamResult` each.
  whole_source_first: each stream waits until its last chunk and writes then (offline).

  Always `batch` streams (short batches are filled with silent one-chunk streams), so
  the compiled step is reused and the computation-aware latency measures decoding, not
  compilation. Runs `without_mesh`, so it works inside a training loop's mesh context
  too.
  """
  from liveinterp.inference import session as session_lib
  waves = source_waves(records, audio)
  results, t0 = [], time.time()
  with without_mesh():
    for i in range(0, len(waves), batch):
      part = waves[i:i + batch]
      fill = [np.zeros(decoder.chunk_samples, np.float32)] * (batch - len(part))
      results += session_lib.translate_waveforms(
          decoder, part + fill, tokenizer=tokenizer,
          whole_source_first=whole_source_first)[:len(part)]
      if log is not None:
        log(f"streamed {len(results)}/{len(waves)} ({time.time() - t0:.0f}s)")
  return results


def turn_stats(results, chunk_ms: int, frame_ms: float, num_codebooks: int) -> dict:
  """Per turn (one per chunk read, waits included): text tokens written, seconds of
  speech written (from the speech token count, so text-only decoding reports it too),
  and the speech backlog of `liveinterp.rl.rewards.speech_backlog_ms` (how far speech
  played back to back runs past the end of the next chunk), averaged over all turns."""
  from liveinterp.rl import rewards  # pylint: disable=g-import-not-at-top
  text, speech, backlog = [], [], []
  for r in results:
    n = max(1, int(np.ceil(r.source_ms / chunk_ms)))
    sp = np.zeros((n,), np.float64)
    tx = np.zeros((n,), np.int64)
    for seg in r.segments:
      t = min(int(seg.chunk), n - 1)
      sp[t] += seg.speech_tokens // num_codebooks * frame_ms
      tx[t] += len(seg.text_ids)
    ep = rewards.Episode(chunk_ms=float(chunk_ms), source_ms=float(r.source_ms),
                         text=[""] * n, speech_ms=sp, n_text_tokens=tx,
                         well_formed=np.ones((n,), bool),
                         emit_ms=(np.arange(n) + 1.0) * chunk_ms, tgt_lang="en")
    backlog.append(rewards.speech_backlog_ms(ep, float("inf")))
    text.append(tx)
    speech.append(sp / 1000.0)
  cat = lambda xs: np.concatenate(xs) if xs else np.zeros((0,))  # noqa: E731
  return {"text_tokens_per_turn": float(np.mean(cat(text))),
          "speech_s_per_turn": float(np.mean(cat(speech))),
          "speech_backlog_ms": float(np.mean(cat(backlog)))}


def text_decoder(cfg, model, tokenizer, seed: int = 0, max_turn_tokens: int | None = None):
  """A greedy, text-only `StreamingDecoder` of `model` (the codec does not run, so its
  weights cannot change the text: random codec and speaker encoder). Its turn grammar
  matches how `model` was trained (`streaming.speech_turns_for(cfg)`); its turn loop
  compacts to the rows still writing (`turn_rows="auto"`: same tokens, less work)."""
  from liveinterp.inference import decoder as decoder_lib, loading
  from liveinterp.models.codec import Codec
  from liveinterp.models.voice import SpeakerEncoder
  codec = loading.random_model(lambda r: Codec(cfg, rngs=r), seed + 1)
  speaker = loading.random_model(lambda r: SpeakerEncoder(cfg, rngs=r), seed + 2)
  return decoder_lib.StreamingDecoder(model, codec, speaker, tokenizer, cfg,
                                    prompt_ids=decoder_lib.prompt_for(cfg, tokenizer),
                                    speech_turns=decoder_lib.speech_turns_for(cfg),
                                    decode_speech=False, max_turn_tokens=max_turn_tokens,
                                    turn_rows="auto")


def run(cfg, run_dir: str, split: str = "test", max_examples: int = 64,
        publish: bool = False, *, speech: bool = True, controls: bool = False,
        offline: bool = True, batch: int = 8, stage: str = "sft",
        out_subdir: str | None = None, multi_speaker_talks: int = 4) -> str:
  """Evaluates `run_dir`; returns the path of the markdown report.

  speech=False: text only (the SFT checkpoint alone; no codec run, no speech metrics).
  controls: also stream the same utterances with zeroed and with swapped source audio
  (`source_waves`) and report their BLEU/chrF (report["controls"]).
  offline: also score the offline ceiling (same model and prompt, whole source first).
  batch: streams decoded together (`translate_records`).
  stage: the trained stage whose weights are evaluated (`sft`, `rl1`, `rl2`, an RL
    ablation: `run_dir/<stage>`); reports of `sft` go to `run_dir/eval`, of any other
    stage to `run_dir/eval_<stage>` (or `run_dir/<out_subdir>`).
  multi_speaker_talks: with speech, also stream this many two-speaker talks built from
    the records (`two_speaker_talks`) and score whose voice each segment has
    (report["voice_multi"], `voice_multi`); 0 = off.
  """
  from data_pipelines import pipelines, stream_format as sfmt, tokenizer as tokmod
  from liveinterp.common import reporting
  from liveinterp.eval import quality
  from liveinterp.inference import decoder as decoder_lib, session as session_lib, loading

  if int(multi_speaker_talks) < 0:
    raise ValueError(f"multi_speaker_talks={multi_speaker_talks}: must be >= 0")
  from liveinterp.eval import report as report_lib
  out_dir = os.path.join(run_dir, out_subdir or report_lib.stage_report_subdir(stage))
  os.makedirs(out_dir, exist_ok=True)
  tok = tokmod.Tokenizer.load(cfg.tokenizer.model_path)
  if speech:
    model, codec, speaker = loading.build_models(cfg, workdir=run_dir, llm_stage=stage)
    decoder = decoder_lib.StreamingDecoder(model, codec, speaker, tok, cfg,
                                         prompt_ids=decoder_lib.prompt_for(cfg, tok),
                                         speech_turns=decoder_lib.speech_turns_for(cfg),
                                         turn_rows="auto")
  else:
    model, _ = loading.restore_stage(run_dir, stage, cfg)
    decoder = text_decoder(cfg, model, tok)
  source = pipelines.open_corpus(cfg, split)
  records = [source[i] for i in range(min(len(source), max_examples))]
  if not records:
    raise ValueError(f"split {split!r} of {cfg.data.data_dir} is empty")
  src_lang, tgt_lang = records[0]["src_lang"], records[0]["tgt_lang"]
  if sfmt.simul_prompt_ids(tok, src_lang, tgt_lang) != list(decoder.prompt_ids):
    raise ValueError(f"data.pair={cfg.data.pair!r} but the {split} records are "
                     f"{src_lang}->{tgt_lang}: the decoder's prompt would not match them")
  reporting.console(f"[eval] {len(records)} {split} utterances ({src_lang}->{tgt_lang}), "
                    f"streaming with {decoder.chunk_ms} ms chunks")

  # ---- simultaneous (streaming) -----------------------------------------------------
  # The warm-up compiles the step outside the timed streams (computation-aware latency).
  with without_mesh():
    session_lib.warmup(decoder, batch)
  log = lambda m: reporting.console(f"[eval] {m}")  # noqa: E731
  results = translate_records(decoder, records, tok, batch=batch, log=log)
  hyps = [r.text.strip() for r in results]
  refs = [r["tgt_text"] for r in records]
  source_ms, ref_lens, starts = sm.record_timing(records, cfg.audio.sample_rate)
  report = {"run_dir": run_dir, "split": split, "examples": len(records),
            "pair": f"{src_lang}-{tgt_lang}", "chunk_ms": decoder.chunk_ms,
            "speech": bool(speech), "stage": stage}
  report["simul"] = simul_scores(results, records, cfg.audio.sample_rate)
  report["simul"]["turns"] = turn_stats(
      results, decoder.chunk_ms, 1000.0 * decoder.spec.hop / cfg.audio.sample_rate,
      decoder.layout.num_codebooks)
  for key, ca in (("speech_latency", False), ("speech_latency_ca", True)):
    sp = [sm.speech_word_delays(r, tgt_lang, x, ca) for r, x in zip(results, source_ms)]
    report["simul"][key] = sm.latency_scores([d for d, _ in sp], source_ms, ref_lens,
                                             starts, ends=[e for _, e in sp],
                                             cap_to_source=False)
  if controls:  # does the model translate what it hears? (`source_waves`)
    report["controls"] = {}
    for variant in ("zero", "swap"):
      res = translate_records(decoder, records, tok, audio=variant, batch=batch, log=log)
      sc = simul_scores(res, records, cfg.audio.sample_rate)
      report["controls"][f"{variant}_audio"] = {
          "bleu": sc["bleu"], "chrf": sc["chrf"], "empty_outputs": sc["empty_outputs"],
          "examples": [r.text.strip() for r in res[:3]]}

  if speech:
    # ASR-BLEU with an independent recogniser: the run's judge, else pocketsphinx.
    rec = None
    try:
      rec = speech_recognizer(run_dir, tgt_lang)
      waves = [r.speech if r.speech is not None and r.speech.size
               else np.zeros(160, np.float32) for r in results]
      asr = quality.asr_bleu(waves, refs, rec, tgt_lang, cfg.audio.sample_rate)
      report["simul"]["asr_bleu"] = asr["asr_bleu"]
      report["simul"]["asr_chrf"] = asr["asr_chrf"]
      report["simul"]["asr_recognizer"] = asr["recognizer"]
      # The recogniser's ceiling: the reference speech itself (the corpus's target
      # speech, same TTS voices) recognised and scored the same way.
      ref_waves = [np.asarray(r["tgt_audio"], np.float32) / 32768.0
                   if len(r["tgt_audio"]) else np.zeros(160, np.float32) for r in records]
      ceil = quality.asr_bleu(ref_waves, refs, rec, tgt_lang, cfg.audio.sample_rate)
      report["asr_ceiling"] = {"asr_bleu": ceil["asr_bleu"], "asr_chrf": ceil["asr_chrf"]}
      report["asr_examples"] = list(zip(refs[:3], asr["transcripts"][:3]))
    except (ImportError, ValueError) as e:
      report["simul"]["asr_bleu"] = None
      report["simul"]["asr_note"] = f"no independent recogniser: {e}"
    # Voice similarity (independent embedding), and the voice-lost control: the same
    # speech in another speaker's voice (`voice_lost_controls`).
    try:
      from liveinterp.eval import speaker_similarity as sim
      outs = [r.speech if r.speech is not None else np.zeros(0, np.float32)
              for r in results]
      srcs = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
      ids = [str(r["speaker"]) for r in records]
      report["voice"] = sim.speaker_similarity(outs, srcs, ids, sr=cfg.audio.sample_rate)
      win = getattr(getattr(decoder, "spec", None), "speaker_samples", None)
      ctl, resyn = voice_lost_controls(codec, speaker, results, records,
                                       cfg.audio.sample_rate, win)
      report["voice"]["control"] = sim.voice_control(outs, ctl, srcs, ids,
                                                     sr=cfg.audio.sample_rate)
      report["voice"]["control_resynth"] = sim.voice_control(
          resyn, ctl, srcs, ids, sr=cfg.audio.sample_rate)
      report["voice"]["control_codes"] = (
          "decoder codes" if getattr(results[0], "speech_codes", None) is not None
          else "codec re-encoding of the output speech")
    except ImportError as e:
      report["voice"] = {"note": f"unavailable: {e}"}
    # Multi-speaker talks: two test utterances of different speakers, one stream.
    if multi_speaker_talks > 0:
      talk_recs = inputs.two_speaker_talks(records, multi_speaker_talks)
      if talk_recs:
        res_t = translate_records(decoder, talk_recs, tok, batch=batch, log=log)
        report["voice_multi"] = sm.voice_multi(res_t, talk_recs, cfg.audio.sample_rate)
      else:
        report["voice_multi"] = {"note": "no two records of different speakers"}
    # ---- codec: resynthesis quality and intelligibility (English target speech) ------
    report["codec"] = codec_quality(codec, speaker, records, cfg, recognizer=rec)
  else:
    report["simul"]["asr_bleu"] = None
    report["simul"]["asr_note"] = "text-only evaluation (speech=False)"

  # ---- offline ceiling: same model and prompt, whole source first ---------------------
  # Every turn before the last chunk is forced to wait, so the model writes the whole
  # translation after hearing everything; the last turn's budget covers a whole stream.
  # (`offline_eval`, task "simul": also the pretrain stage's dev evaluation function).
  offline_hyps = []
  if offline:
    from liveinterp import offline_eval as offline_lib
    report["offline"], pairs = offline_lib.offline_eval(
        model, tok, records, "simul", cfg=cfg, max_new_tokens=int(cfg.data.seq_len),
        batch=batch, log=log)
    offline_hyps = [h for _, h in pairs]
  # ---- floor: the best constant output (one training target for every input) ---------
  train = pipelines.open_corpus(cfg, "train")
  report["constant"] = sm.constant_baseline(
      [train[i]["tgt_text"] for i in range(min(len(train), 400))], refs, tgt_lang)
  # ---- reference policies (training targets) -----------------------------------------
  report["policies"] = sm.reference_policies(records, decoder.chunk_ms,
                                             cfg.audio.sample_rate)
  report["examples_text"] = [
      {"ref": a, "simul": b, "offline": offline_hyps[j] if j < len(offline_hyps) else None}
      for j, (a, b) in enumerate(zip(refs[:5], hyps[:5]))]

  plots.write_plots(report, records, results, cfg.audio.sample_rate, out_dir)
  with open(os.path.join(out_dir, f"report_{split}.json"), "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False, default=float)
  md = report_lib.markdown(report)
  path = os.path.join(out_dir, f"report_{split}.md")
  with open(path, "w") as f:
    f.write(md)
  if publish:
    report_lib.publish(report, out_dir, split)
  reporting.console(md)
  return path


def _define_flags():
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny", "trained run (recipe output)"),
      config=flags.DEFINE_string("config", "", "config file[:stage] (config.load spec); "
                                 "default: the run's own (RUN_DIR/<stage>/config.json, "
                                 "else RUN_DIR/config.json); override fields with "
                                 "--config.a.b=v"),
      split=flags.DEFINE_string("split", "test", "corpus split"),
      n=flags.DEFINE_integer("max_examples", 64, "utterances to evaluate"),
      data_dir=flags.DEFINE_string("data_dir", "", "corpus dir (default RUN_DIR/../data)"),
      publish=flags.DEFINE_bool("publish", False,
                                "also write benchmarks/results/evaluation.json"),
      text_only=flags.DEFINE_bool("text_only", False,
                                  "text only: the SFT checkpoint alone, no codec/speech "
                                  "metrics"),
      controls=flags.DEFINE_bool("controls", False,
                                 "also stream with zeroed and with swapped source audio"),
      offline=flags.DEFINE_bool("offline", True, "also score the offline ceiling"),
      multi_speaker_talks=flags.DEFINE_integer(
          "multi_speaker_talks", 4, "two-speaker talks built from the split's records "
          "to check the voice follows the speaker (speech only; 0 = off)"),
      stage=flags.DEFINE_string("stage", "sft", "trained stage to evaluate (sft, rl1, rl2, "
                                "an RL ablation); reports go to RUN_DIR/eval_<stage>"))


def run_config(run_dir: str, stage: str) -> str:
  """The config a run was trained with, for evaluating its `stage`: the stage's own saved
  config (every stage writes `config.json` into its workdir), else the run's (the recipe
  writes RUN_DIR/config.json after each LLM stage); UserError when there is neither, so
  that a run of another recipe is never evaluated with tiny's shapes."""
  for path in (os.path.join(run_dir, stage, "config.json"),
               os.path.join(run_dir, "config.json")):
    if os.path.exists(path):
      return path
  from liveinterp.common import cli  # pylint: disable=g-import-not-at-top
  raise cli.UserError(f"--config is required: {run_dir} has no {stage}/config.json nor "
                      f"config.json (the recipe and the train CLI write them)")


def main(argv):
  """User errors (a missing run or corpus, a bad config value, an unwritable output) are
  reported before any work, in one line with exit code 2 (liveinterp/common/cli.py)."""
  del argv
  logging.set_verbosity(logging.WARNING)
  F = {k: v.value for k, v in _FLAGS.items()}
  from liveinterp.common import cli, config as config_lib
  from liveinterp.train.stage_configs import stage_config
  from data_pipelines import build
  run_dir = os.path.abspath(F["run_dir"])
  if not os.path.isdir(run_dir):
    raise cli.UserError(f"--run_dir={F['run_dir']}: no such directory (the --run_dir of "
                        f"python -m liveinterp.recipe)")
  if F["n"] < 1:
    raise cli.UserError(f"--max_examples={F['n']}: must be >= 1")
  if F["multi_speaker_talks"] < 0:
    raise cli.UserError(f"--multi_speaker_talks={F['multi_speaker_talks']}: must be >= 0")
  cli.check_writable_dir(os.path.join(run_dir, "eval"), "--run_dir")
  if F["publish"]:
    cli.check_writable_file(os.path.join(ROOT, "benchmarks", "results", "evaluation.json"),
                            "--publish")
  data_dir = os.path.abspath(F["data_dir"] or os.path.join(os.path.dirname(run_dir), "data"))
  base = config_lib.load(F["config"] or run_config(run_dir, F["stage"]),
                         cli.config_overrides())
  tok = build.tokenizer_prefix_for(data_dir, base)
  cfg = stage_config(base.name if base.name != "base" else "tiny", "sft", run_dir, data_dir, tok,
                     overrides=cli.config_overrides())
  config_lib.validate(cfg)
  config_lib.check_inputs(cfg, init_from=False)  # the corpus build and the tokenizer
  if not os.path.isdir(os.path.join(run_dir, F["stage"], "checkpoints")):
    raise cli.UserError(f"--stage={F['stage']}: {run_dir} has no {F['stage']}/checkpoints")
  run(cfg, run_dir, F["split"], F["n"], F["publish"], speech=not F["text_only"],
      controls=F["controls"], offline=F["offline"], stage=F["stage"],
      multi_speaker_talks=F["multi_speaker_talks"])


if __name__ == "__main__":
  from liveinterp.common import cli as _cli
  _FLAGS = _define_flags()
  _cli.run(main, prog="python -m liveinterp.evaluate", config_overrides=True)
