"""Evaluation of a trained run: `python -m liveinterp.evaluate --run_dir=runs/tiny --split=test`.

Streams every test utterance through the streaming decoder (the trained SFT model, the
codec and the speaker encoder: speech comes out in the source speaker's voice) and
reports, as JSON + markdown + plots in `<run_dir>/eval/`:

- latency (SimulEval definitions, `liveinterp.eval.latency`): AL, LAAL, AP, DAL,
  StartOffset, EndOffset, FLAL of the text output and of the played speech (segments back
  to back), non-computation-aware and computation-aware (measured step times);
- quality: BLEU / chrF of the text output; ASR-BLEU of the speech output through an
  independent recogniser (pocketsphinx, English targets only);
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
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
from absl import flags, logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _words(text: str, lang: str) -> list[str]:
  if lang.startswith("zh") or lang == "ja":
    return [c for c in text if not c.isspace()]
  return text.split()


def text_delays(segments, lang: str, computation_aware: bool = False, *,
                compute_ms=None, source_ms: float | None = None) -> list[float]:
  """One delay per output word: the emission time of its segment, capped at the source
  duration when `source_ms` is given; computation-aware (SimulEval's elapsed): plus all
  compute up to and including the segment's chunk (`compute_ms`, per chunk), or the
  segment's own ready time when `compute_ms` is not given."""
  cum = np.cumsum(compute_ms) if computation_aware and compute_ms is not None else None
  out = []
  for s in segments:
    t = s.emit_ms if source_ms is None else min(s.emit_ms, source_ms)
    if computation_aware:
      t = t + float(cum[min(s.chunk, len(cum) - 1)]) if cum is not None else s.ready_ms
    out += [t] * len(_words(s.text, lang))
  return out


def speech_word_delays(result, lang: str, source_ms: float,
                       computation_aware: bool = False):
  """Per output word, when it starts playing: segments queue one after another from their
  (capped) emission time, or from when they were computed (`computation_aware`); word
  onsets inside a segment come from where its audio is voiced
  (`latency.audible_word_offsets`). Returns (delays, end of the last played sample)."""
  from liveinterp.eval import latency as L
  sr, pos = result.sample_rate, 0
  cum = np.cumsum(result.compute_ms) if len(result.compute_ms) else np.zeros(1)
  write, durs, offs = [], [], []
  for s in result.segments:
    n = int(round(s.audio_ms * sr / 1000))
    if not n:
      continue
    seg = (result.speech[pos:pos + n] if result.speech is not None
           else np.zeros(n, np.float32))
    pos += n
    emit = min(s.emit_ms, source_ms)
    write.append(emit + float(cum[min(s.chunk, len(cum) - 1)]) if computation_aware
                 else emit)
    durs.append(s.audio_ms)
    offs.append(L.audible_word_offsets(seg, sr, len(_words(s.text, lang))))
  delays, spans = L.speech_delays(write, durs, offs)
  return delays, (spans[-1][1] if spans else None)


def oracle_delays(rec, policy: str, chunk_ms: int, k: int = 3) -> list[float]:
  """Delays of the reference words under a data policy, emitted at chunk ends."""
  from data_pipelines import stream_format as sfmt
  ready = sfmt.ready_times(rec, policy, k)
  n_chunks = sfmt.num_chunks(len(rec["src_audio"]), sfmt.StreamSpec(chunk_ms=chunk_ms))
  turns = sfmt.turn_schedule(ready, n_chunks, chunk_ms)
  return [float((t + 1) * chunk_ms) for t in turns]


def codec_quality(codec, speaker, records, cfg, max_items: int = 16) -> dict:
  """Target speech → codec encode → decode in the voice of the *source* utterance (same
  speaker, other language): mel distance to the original, and pocketsphinx chrF of the
  resynthesis vs of the original audio against the reference text (English only)."""
  import jax.numpy as jnp
  from flax import nnx
  from liveinterp.eval import quality
  from liveinterp.layers.audio_frontend import LogMelFrontend
  fe = LogMelFrontend.from_config(cfg.audio)
  resynth = nnx.jit(lambda c, s, x, ref: c.decode(c.encode(x), s.embed_audio(ref)))
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
  if items and items[0]["tgt_lang"].startswith("en"):
    from liveinterp.eval import recognizers
    rec = recognizers.get_recognizer("en")
    hyp_o = [rec(a, cfg.audio.sample_rate) for a in orig]
    hyp_r = [rec(a, cfg.audio.sample_rate) for a in resy]
    orig_s, resy_s = quality.asr_scores(hyp_o, refs), quality.asr_scores(hyp_r, refs)
    out.update(asr_chrf_original=orig_s["asr_chrf"], asr_chrf_resynthesized=resy_s["asr_chrf"],
               asr_bleu_original=orig_s["asr_bleu"], asr_bleu_resynthesized=resy_s["asr_bleu"],
               transcripts=list(zip(refs[:2], hyp_o[:2], hyp_r[:2])))
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
  """The voice-lost control of every output (`voice.voice_control`): the same speech codes
  decoded by the codec with the speaker embedding of ANOTHER speaker's source utterance
  (`voice.control_partners`: the next record of a different speaker), and the same codes
  decoded with the output's own source embedding (`resynth`, the round-trip check).

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
  from liveinterp.eval import voice
  n_win = int(window_samples or 3 * sample_rate)
  hop = int(codec.hop)
  min_frames = max(1, -(-int(bucket_s * sample_rate) // hop))

  def padded_frames(n_frames: int) -> int:  # min_frames x the next power of two
    k = -(-n_frames // min_frames)
    return min_frames * (1 << max(0, (k - 1).bit_length()))

  ids = [str(r["speaker"]) for r in records]
  partners = voice.control_partners(ids)
  srcs = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
  from_audio = nnx.jit(lambda c, s, x, ref, m: c.decode(c.encode(x), s.embed_audio(ref, m)))
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


def two_speaker_talks(records, n_talks: int, pause_ms: float = 800.0) -> list[dict]:
  """Up to `n_talks` two-speaker talks built from `records` (no synthesis): talk k =
  record i + pause + record j, i the first unused record and j the next unused record of
  another speaker (`talks.concat_examples(..., multi_speaker=True)`: word and ready times
  shifted, per-utterance speaker spans recorded). Fewer talks when the records run out
  of speaker pairs."""
  from data_pipelines import talks as talks_lib
  used, out = set(), []
  for i, r in enumerate(records):
    if len(out) >= n_talks:
      break
    if i in used:
      continue
    j = next((j for j in range(i + 1, len(records)) if j not in used
              and str(records[j]["speaker"]) != str(r["speaker"])), None)
    if j is None:
      continue
    used.update((i, j))
    recs = [dict(r, is_talk=False), dict(records[j], is_talk=False)]
    out.append(talks_lib.concat_examples(recs, [pause_ms], f"voice-multi-{len(out):02d}",
                                         multi_speaker=True))
  return out


def output_segments(result) -> list[tuple[np.ndarray, float]]:
  """(audio, emit_ms) of each StreamResult segment that has speech (`result.speech` cut
  by the segments' audio_ms, in order)."""
  sr, pos, out = result.sample_rate, 0, []
  speech = result.speech if result.speech is not None else np.zeros(0, np.float32)
  for s in result.segments:
    n = int(round(s.audio_ms * sr / 1000))
    if n:
      out.append((speech[pos:pos + n], float(s.emit_ms)))
      pos += n
  return out


def voice_multi(results, talk_records, sample_rate: int, guard_ms: float = 1000.0,
                merge: bool = True) -> dict:
  """Multi-speaker voice following (`voice.speaker_attribution`) of streamed talks.

  Each output segment is attributed to the speaker whose source span it was emitted in
  (`talks.speaker_at` of its emit time: words are translated after they are heard, so a
  segment emitted in the pause after a speaker's span belongs to that speaker).
  Segments emitted within `guard_ms` after a speaker change are ambiguous (they may
  still translate the previous speaker; the speaker window still holds their audio):
  counted, not scored. merge: consecutive segments of the same speaker are scored as
  one (a single turn's speech is often shorter than `voice.MIN_ACTIVE_S`). The
  references: each speaker's source audio in the talk.
  """
  from data_pipelines import talks as talks_lib
  from liveinterp.eval import voice
  segs_all, refs_all, ambiguous, raw = [], [], 0, 0
  for res, talk in zip(results, talk_records):
    spans, names = talks_lib.speaker_segments(talk, sample_rate)
    src = np.asarray(talk["src_audio"], np.float32) / 32768.0
    refs: dict = {}
    for (a, b), nm in zip(spans, names):
      part = src[int(round(a * sample_rate / 1000)):int(round(b * sample_rate / 1000))]
      refs[nm] = np.concatenate([refs[nm], part]) if nm in refs else part
    changes = [float(spans[k, 0]) for k in range(1, len(names)) if names[k] != names[k - 1]]
    segs: list = []
    last = None
    for audio, t in output_segments(res):
      raw += 1
      if any(c <= t < c + guard_ms for c in changes):
        ambiguous += 1
        last = None
        continue
      spk = talks_lib.speaker_at(spans, names, t)
      if merge and segs and last == spk:
        segs[-1] = (np.concatenate([segs[-1][0], audio]), spk)
      else:
        segs.append((audio, spk))
      last = spk
    segs_all.append(segs)
    refs_all.append(refs)
  out = voice.speaker_attribution(segs_all, refs_all, sample_rate)
  out.update(raw_segments=raw, ambiguous=ambiguous, guard_ms=guard_ms, merged=merge)
  return out


def _latency(delays_per_utt, source_ms, ref_lens, starts, ends=None, **score_kw):
  """SimulEval-exact latency (`latency.score`) per utterance, averaged; `ends` (speech)
  are the end times of the last played sample, for EndOffset."""
  from liveinterp.eval import latency as L
  scores = []
  for i, (d, src, n, st) in enumerate(zip(delays_per_utt, source_ms, ref_lens, starts)):
    d = list(np.maximum.accumulate(np.asarray(d, np.float64))) if len(d) else []
    end = {"output_end_ms": ends[i]} if ends and ends[i] is not None else {}
    scores.append(L.score(d, src, n, [st], [n], **score_kw, **end))
  return L.corpus_scores(scores)


AUDIO_VARIANTS = ("real", "zero", "swap")


def source_waves(records, audio: str = "real") -> list[np.ndarray]:
  """Each record's source audio as float32 in [-1, 1], or a control of it:

  - "zero": silence of the same length (the model hears only the stream's timing);
  - "swap": the next record's audio (last -> first), cut or zero-padded to this record's
    own length (same timing, other content).

  A model that translates what it hears scores far lower on the controls than on the
  real audio; one that replays memorised text from timing alone does not.
  """
  if audio not in AUDIO_VARIANTS:
    raise ValueError(f"audio={audio!r}: expected one of {AUDIO_VARIANTS}")
  waves = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
  if audio == "zero":
    return [np.zeros_like(w) for w in waves]
  if audio == "swap":
    out = []
    for i, w in enumerate(waves):
      other = waves[(i + 1) % len(waves)][:w.size]
      out.append(np.pad(other, (0, w.size - other.size)))
    return out
  return waves


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


def simul_scores(results, records, sample_rate: int) -> dict:
  """BLEU / chrF of the streamed text against the records' targets, text latency
  (SimulEval, non- and computation-aware), empty outputs and real-time factor."""
  from liveinterp.eval import quality
  tgt_lang = records[0]["tgt_lang"]
  hyps = [r.text.strip() for r in results]
  refs = [r["tgt_text"] for r in records]
  source_ms = [1000.0 * len(r["src_audio"]) / sample_rate for r in records]
  ref_lens = [len(_words(t, tgt_lang)) for t in refs]
  starts = [float(r["src_word_start_ms"][0]) if len(r["src_word_start_ms"]) else 0.0
            for r in records]
  return {
      "bleu": quality.corpus_bleu(hyps, refs, tgt_lang),
      "chrf": quality.corpus_chrf(hyps, refs),
      "empty_outputs": int(sum(not h for h in hyps)),
      "rtf": float(np.mean([r.rtf for r in results])),
      "text_latency": _latency([text_delays(r.segments, tgt_lang) for r in results],
                               source_ms, ref_lens, starts),
      "text_latency_ca": _latency(
          [text_delays(r.segments, tgt_lang, True, compute_ms=r.compute_ms, source_ms=x)
           for r, x in zip(results, source_ms)], source_ms, ref_lens, starts,
          cap_to_source=False),
  }


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
  matches how `model` was trained (`streaming.speech_turns_for(cfg)`)."""
  from liveinterp.inference import decoder as decoder_lib, loading
  from liveinterp.models.codec import Codec
  from liveinterp.models.voice import SpeakerEncoder
  codec = loading.random_model(lambda r: Codec(cfg, rngs=r), seed + 1)
  speaker = loading.random_model(lambda r: SpeakerEncoder(cfg, rngs=r), seed + 2)
  return decoder_lib.StreamingDecoder(model, codec, speaker, tokenizer, cfg,
                                    prompt_ids=decoder_lib.prompt_for(cfg, tokenizer),
                                    speech_turns=decoder_lib.speech_turns_for(cfg),
                                    decode_speech=False, max_turn_tokens=max_turn_tokens)


def constant_baseline(candidates, refs, lang: str) -> dict:
  """The floor of DESIGN §6: the single candidate sentence (training targets) that,
  output for every input, scores the best corpus chrF against `refs`; its BLEU/chrF."""
  from liveinterp.eval import quality  # pylint: disable=g-import-not-at-top
  cands = sorted({c.strip() for c in candidates if c and c.strip()})
  if not cands:
    raise ValueError("constant baseline: no candidate sentences")
  best = max(cands, key=lambda c: quality.corpus_chrf([c] * len(refs), refs))
  return {"sentence": best, "candidates": len(cands),
          "bleu": quality.corpus_bleu([best] * len(refs), refs, lang),
          "chrf": quality.corpus_chrf([best] * len(refs), refs)}


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
  out_dir = os.path.join(run_dir, out_subdir or ("eval" if stage == "sft"
                                                  else f"eval_{stage}"))
  os.makedirs(out_dir, exist_ok=True)
  tok = tokmod.Tokenizer.load(cfg.tokenizer.model_path)
  if speech:
    model, codec, speaker = loading.build_models(cfg, workdir=run_dir, llm_stage=stage)
    decoder = decoder_lib.StreamingDecoder(model, codec, speaker, tok, cfg,
                                         prompt_ids=decoder_lib.prompt_for(cfg, tok),
                                         speech_turns=decoder_lib.speech_turns_for(cfg))
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
  source_ms = [1000.0 * len(r["src_audio"]) / cfg.audio.sample_rate for r in records]
  ref_lens = [len(_words(t, tgt_lang)) for t in refs]
  starts = [float(r["src_word_start_ms"][0]) if len(r["src_word_start_ms"]) else 0.0
            for r in records]
  report = {"run_dir": run_dir, "split": split, "examples": len(records),
            "pair": f"{src_lang}-{tgt_lang}", "chunk_ms": decoder.chunk_ms,
            "speech": bool(speech)}
  report["simul"] = simul_scores(results, records, cfg.audio.sample_rate)
  report["simul"]["turns"] = turn_stats(
      results, decoder.chunk_ms, 1000.0 * decoder.spec.hop / cfg.audio.sample_rate,
      decoder.layout.num_codebooks)
  for key, ca in (("speech_latency", False), ("speech_latency_ca", True)):
    sp = [speech_word_delays(r, tgt_lang, x, ca) for r, x in zip(results, source_ms)]
    report["simul"][key] = _latency([d for d, _ in sp], source_ms, ref_lens, starts,
                                    ends=[e for _, e in sp], cap_to_source=False)
  if controls:  # does the model translate what it hears? (`source_waves`)
    report["controls"] = {}
    for variant in ("zero", "swap"):
      res = translate_records(decoder, records, tok, audio=variant, batch=batch, log=log)
      sc = simul_scores(res, records, cfg.audio.sample_rate)
      report["controls"][f"{variant}_audio"] = {
          "bleu": sc["bleu"], "chrf": sc["chrf"], "empty_outputs": sc["empty_outputs"],
          "examples": [r.text.strip() for r in res[:3]]}

  if speech:
    # ASR-BLEU with an independent recogniser (English only here).
    try:
      from liveinterp.eval import recognizers
      rec = recognizers.get_recognizer(tgt_lang)
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
      from liveinterp.eval import voice
      outs = [r.speech if r.speech is not None else np.zeros(0, np.float32)
              for r in results]
      srcs = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in records]
      ids = [str(r["speaker"]) for r in records]
      report["voice"] = voice.speaker_similarity(outs, srcs, ids, sr=cfg.audio.sample_rate)
      win = getattr(getattr(decoder, "spec", None), "speaker_samples", None)
      ctl, resyn = voice_lost_controls(codec, speaker, results, records,
                                       cfg.audio.sample_rate, win)
      report["voice"]["control"] = voice.voice_control(outs, ctl, srcs, ids,
                                                       sr=cfg.audio.sample_rate)
      report["voice"]["control_resynth"] = voice.voice_control(
          resyn, ctl, srcs, ids, sr=cfg.audio.sample_rate)
      report["voice"]["control_codes"] = (
          "decoder codes" if getattr(results[0], "speech_codes", None) is not None
          else "codec re-encoding of the output speech")
    except ImportError as e:
      report["voice"] = {"note": f"unavailable: {e}"}
    # Multi-speaker talks: two test utterances of different speakers, one stream.
    if multi_speaker_talks > 0:
      talk_recs = two_speaker_talks(records, multi_speaker_talks)
      if talk_recs:
        res_t = translate_records(decoder, talk_recs, tok, batch=batch, log=log)
        report["voice_multi"] = voice_multi(res_t, talk_recs, cfg.audio.sample_rate)
      else:
        report["voice_multi"] = {"note": "no two records of different speakers"}
    # ---- codec: resynthesis quality and intelligibility (English target speech) ------
    report["codec"] = codec_quality(codec, speaker, records, cfg)
  else:
    report["simul"]["asr_bleu"] = None
    report["simul"]["asr_note"] = "text-only evaluation (speech=False)"

  # ---- offline ceiling: same model and prompt, whole source first ---------------------
  # Every turn before the last chunk is forced to wait, so the model writes the whole
  # translation after hearing everything; the last turn's budget covers a whole stream.
  offline_hyps = []
  if offline:
    whole = text_decoder(cfg, model, tok, max_turn_tokens=int(cfg.data.seq_len))
    with without_mesh():
      session_lib.warmup(whole, batch)
    res = translate_records(whole, records, tok, batch=batch, log=log,
                            whole_source_first=True)
    offline_hyps = [r.text.strip() for r in res]
    report["offline"] = simul_scores(res, records, cfg.audio.sample_rate)
    report["offline"]["policy"] = "whole source first (turns before the last chunk wait)"
  # ---- floor: the best constant output (one training target for every input) ---------
  train = pipelines.open_corpus(cfg, "train")
  report["constant"] = constant_baseline(
      [train[i]["tgt_text"] for i in range(min(len(train), 400))], refs, tgt_lang)
  # ---- reference policies (training targets) -----------------------------------------
  report["policies"] = {}
  for name, policy, k in (("alignment", "alignment", 3), ("wait-3", "wait_k", 3)):
    delays = [oracle_delays(r, policy, decoder.chunk_ms, k) for r in records]
    report["policies"][name] = {"bleu": 100.0, "text_latency": _latency(
        delays, source_ms, ref_lens, starts)}
  report["examples_text"] = [
      {"ref": a, "simul": b, "offline": offline_hyps[j] if j < len(offline_hyps) else None}
      for j, (a, b) in enumerate(zip(refs[:5], hyps[:5]))]

  _plots(report, records, results, cfg.audio.sample_rate, out_dir)
  with open(os.path.join(out_dir, f"report_{split}.json"), "w") as f:
    json.dump(report, f, indent=1, ensure_ascii=False, default=float)
  md = _markdown(report)
  path = os.path.join(out_dir, f"report_{split}.md")
  with open(path, "w") as f:
    f.write(md)
  if publish:
    _publish(report, out_dir, split)
  reporting.console(md)
  return path


def _plots(report, records, results, sample_rate: int, out_dir: str):
  """Latency-quality scatter and the first two utterances' emission timelines."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  split, tgt_lang = report["split"], records[0]["tgt_lang"]
  fig, ax = plt.subplots(figsize=(6, 4))
  pts = [("SFT model (streaming)", report["simul"]["text_latency"].get("LAAL"),
          report["simul"]["bleu"])]
  if "offline" in report:
    pts.append(("same model, offline", report["offline"]["text_latency"].get("LAAL"),
                report["offline"]["bleu"]))
  pts += [(f"reference, {n} policy", v["text_latency"].get("LAAL"), v["bleu"])
          for n, v in report["policies"].items()]
  for name, x, y in pts:
    if x is not None and np.isfinite(x):
      ax.scatter([x], [y], label=name)
  ax.set_xlabel("LAAL (ms of source)")
  ax.set_ylabel(f"BLEU ({tgt_lang})")
  ax.set_title(f"latency–quality, {split} ({len(records)} utterances)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(os.path.join(out_dir, f"latency_quality_{split}.png"), dpi=110)
  plt.close(fig)
  for j in range(min(2, len(records))):
    fig, ax = plt.subplots(figsize=(9, 3))
    wav = np.asarray(records[j]["src_audio"], np.float32) / 32768.0
    t = np.arange(wav.size) / sample_rate * 1000
    ax.plot(t, wav, lw=0.4, color="0.6")
    for s in results[j].segments:
      ax.axvline(s.emit_ms, color="C1", lw=0.8)
      if s.text:
        ax.text(s.emit_ms, 0.9 * max(1e-3, np.abs(wav).max()), s.text[:24], fontsize=6,
                rotation=60, va="top")
      if s.audio_ms:
        ax.axvspan(s.play_start_ms, s.play_end_ms, color="C2", alpha=0.15)
    ax.set_xlabel("ms of source")
    ax.set_title(f"emissions over the source: {records[j]['id']} (orange: writes, "
                 f"green: speech playing)", fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, f"timeline_{split}_{j}.png"), dpi=110)
    plt.close(fig)


def _fmt(v):
  return "—" if v is None else (f"{v:.3g}" if isinstance(v, float) else str(v))


def _markdown(r) -> str:
  s, o = r["simul"], r.get("offline")
  lines = [f"# Evaluation: {r['pair']} {r['split']} ({r['examples']} utterances, "
           f"{r['chunk_ms']} ms chunks)", "",
           "| system | BLEU | chrF | ASR-BLEU | LAAL | AL | FLAL | StartOffset | EndOffset |",
           "|---|---|---|---|---|---|---|---|---|"]
  tl = s["text_latency"]
  lines.append(f"| SFT, streaming (text) | {_fmt(s['bleu'])} | {_fmt(s['chrf'])} | | "
               f"{_fmt(tl.get('LAAL'))} | {_fmt(tl.get('AL'))} | "
               f"{_fmt(tl.get('FLAL'))} | {_fmt(tl.get('StartOffset'))} | "
               f"{_fmt(tl.get('EndOffset'))} |")
  sl = s["speech_latency"]
  if r.get("speech", True):
    lines.append(f"| SFT, streaming (speech played) | | | {_fmt(s.get('asr_bleu'))} | "
                 f"{_fmt(sl.get('LAAL'))} | "
                 f"{_fmt(sl.get('AL'))} | {_fmt(sl.get('FLAL'))} | "
                 f"{_fmt(sl.get('StartOffset'))} | {_fmt(sl.get('EndOffset'))} |")
  ca = s["text_latency_ca"]
  lines.append(f"| SFT, computation-aware (text) | | | | {_fmt(ca.get('LAAL'))} | "
               f"{_fmt(ca.get('AL'))} | {_fmt(ca.get('FLAL'))} | | |")
  if r.get("asr_ceiling"):
    lines.append(f"| reference speech (recogniser ceiling) | | | "
                 f"{_fmt(r['asr_ceiling']['asr_bleu'])} | | | | | |")
  if o is not None:
    ol = o["text_latency"]
    lines.append(f"| same model, whole source first (offline) | {_fmt(o['bleu'])} | {_fmt(o['chrf'])} "
                 f"| | {_fmt(ol.get('LAAL'))} | {_fmt(ol.get('AL'))} | | | |")
  if r.get("constant"):
    k = r["constant"]
    lines.append(f"| constant output (floor: best of {k['candidates']} training targets) | "
                 f"{_fmt(k['bleu'])} | {_fmt(k['chrf'])} | | | | | | |")
  for n, v in r.get("controls", {}).items():
    lines.append(f"| control: {n.replace('_', ' ')} | {_fmt(v['bleu'])} | {_fmt(v['chrf'])} "
                 f"| | | | | | |")
  for n, v in r["policies"].items():
    pl = v["text_latency"]
    lines.append(f"| reference targets, {n} policy | 100 | | | {_fmt(pl.get('LAAL'))} | "
                 f"{_fmt(pl.get('AL'))} | {_fmt(pl.get('FLAL'))} | | |")
  lines += ["", f"Real-time factor of the streaming decoder: {_fmt(s['rtf'])}; "
            f"utterances with no text output: {s['empty_outputs']}.", ""]
  c = r.get("codec", {})
  if c.get("mel_l1") is not None:
    lines.append(f"Codec resynthesis ({c['items']} target utterances, voice from the source "
                 f"utterance): log-mel L1 {_fmt(c['mel_l1'])}; pocketsphinx chrF original "
                 f"{_fmt(c.get('asr_chrf_original'))} vs resynthesized "
                 f"{_fmt(c.get('asr_chrf_resynthesized'))} (BLEU "
                 f"{_fmt(c.get('asr_bleu_original'))} vs "
                 f"{_fmt(c.get('asr_bleu_resynthesized'))}).")
  v = r.get("voice", {})
  if "margin" in v:
    lines.append(f"Voice (independent MFCC embedding): same-speaker cosine "
                 f"{_fmt(v['same_speaker_cos'])}, other speakers {_fmt(v['other_speaker_cos'])}, "
                 f"margin {_fmt(v['margin'])}, top-1 speaker {_fmt(v['top1_rate'])} "
                 f"(n={v.get('n')}, skipped {v.get('skipped')}).")
  vc = v.get("control") or {}
  if "margin" in vc:
    q = vc.get("margin_quantiles", {})
    lines.append(f"Voice-lost control (same speech, another speaker's embedding): own "
                 f"speaker cosine {_fmt(vc['own_speaker_cos'])} vs control "
                 f"{_fmt(vc['control_cos'])}, margin {_fmt(vc['margin'])} (median "
                 f"{_fmt(q.get('median'))}, p25–p75 {_fmt(q.get('p25'))}–"
                 f"{_fmt(q.get('p75'))}, positive {_fmt(vc.get('positive_rate'))}; "
                 f"n={vc.get('n')}, skipped {vc.get('skipped')}; codes: "
                 f"{v.get('control_codes')}; resynthesised own voice margin "
                 f"{_fmt((v.get('control_resynth') or {}).get('margin'))}).")
  vm = r.get("voice_multi") or {}
  if "accuracy" in vm:
    lines.append(f"Voice in two-speaker talks ({vm['talks']} talks): segment closer to the "
                 f"speaker it translates {_fmt(vm['accuracy'])} of the time, margin "
                 f"{_fmt(vm['margin'])} (n={vm['n']} scored, {vm['skipped']} too short, "
                 f"{vm.get('ambiguous')} of {vm.get('raw_segments')} segments within "
                 f"{_fmt(vm.get('guard_ms'))} ms of a speaker change).")
  if s.get("asr_note"):
    lines.append(f"ASR-BLEU: {s['asr_note']}")
  lines += ["", "Examples:", ""]
  for e in r["examples_text"]:
    lines.append(f"- ref: {e['ref']}\n  - simul: {e['simul']}\n  - offline: {e['offline']}")
  return "\n".join(lines) + "\n"


# Layout of benchmarks/results/evaluation.json: 2 = each quality metric on the row of the
# output it measures (text BLEU/chrF on the text row, ASR-BLEU on the speech row, ASR
# normalised); files without "layout" had ASR-BLEU on the text row and the text BLEU
# repeated on the speech row (benchmarks/render_readme.py corrects them when rendering).
PUBLISH_LAYOUT = 2


def publish_payload(report) -> dict:
  """The results JSON the README table is rendered from (`_publish` writes it)."""
  s = report["simul"]
  row = lambda name, q, lat, asr=None: {  # noqa: E731
      "system": name, "BLEU": q["bleu"] if q else None, "chrF": q["chrf"] if q else None,
      "ASR-BLEU": asr, "LAAL_ms": lat.get("LAAL"), "AL_ms": lat.get("AL"),
      "FLAL_ms": lat.get("FLAL")}
  rows = [row("SFT streaming, text", s, s["text_latency"])]
  if report.get("speech", True):  # text BLEU does not measure the speech: ASR-BLEU does
    rows.append(row("SFT streaming, speech played", None, s["speech_latency"],
                    s.get("asr_bleu")))
  if report.get("asr_ceiling"):
    rows.append({"system": "reference speech (recogniser ceiling)", "BLEU": None,
                 "chrF": None, "ASR-BLEU": report["asr_ceiling"]["asr_bleu"],
                 "LAAL_ms": None, "AL_ms": None, "FLAL_ms": None})
  if "offline" in report:
    rows.append(row("same model offline", report["offline"],
                    report["offline"]["text_latency"]))
  if "constant" in report:
    rows.append({"system": "constant output (floor)", "BLEU": report["constant"]["bleu"],
                 "chrF": report["constant"]["chrf"], "ASR-BLEU": None, "LAAL_ms": None,
                 "AL_ms": None, "FLAL_ms": None})
  for n, v in report.get("controls", {}).items():
    rows.append({"system": f"control: {n.replace('_', ' ')}", "BLEU": v["bleu"],
                 "chrF": v["chrf"], "ASR-BLEU": None, "LAAL_ms": None, "AL_ms": None,
                 "FLAL_ms": None})
  v = report.get("voice", {})
  c = report.get("codec", {})
  run = report.get("run_dir", "runs/tiny")
  run = os.path.relpath(run, ROOT) if os.path.isabs(run) else run
  flags_used = " --controls" if report.get("controls") else ""
  payload = {"command": f"python -m liveinterp.evaluate --run_dir={run}{flags_used} --publish",
             "pair": report["pair"], "split": report["split"], "examples": report["examples"],
             "rtf": s["rtf"], "speaker_margin": v.get("margin"),
             "speaker_top1": v.get("top1_rate"),
             "speaker_control_margin": (v.get("control") or {}).get("margin"),
             "voice_multi_accuracy": (report.get("voice_multi") or {}).get("accuracy"),
             "codec_mel_l1": c.get("mel_l1"),
             "codec_asr_chrf_original": c.get("asr_chrf_original"),
             "codec_asr_chrf_resynthesized": c.get("asr_chrf_resynthesized"),
             "layout": PUBLISH_LAYOUT, "asr_recognizer": s.get("asr_recognizer"),
             "asr_note": s.get("asr_note"), "rows": rows}
  return payload


def _publish(report, out_dir: str, split: str):
  """Writes benchmarks/results/evaluation.json (the README table) and copies the report
  and plots the README links next to it, so they always come from the same run."""
  results = os.path.join(ROOT, "benchmarks", "results")
  with open(os.path.join(results, "evaluation.json"), "w") as f:
    json.dump(publish_payload(report), f, indent=1, default=float)
  for src, dst in ((f"report_{split}.md", "evaluation_report.md"),
                   (f"latency_quality_{split}.png", "evaluation_latency_quality.png"),
                   (f"timeline_{split}_0.png", "evaluation_timeline_0.png")):
    if os.path.exists(os.path.join(out_dir, src)):
      shutil.copyfile(os.path.join(out_dir, src), os.path.join(results, dst))


def _define_flags():
  return dict(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny", "trained run (recipe output)"),
      config=flags.DEFINE_string("config", "configs/tiny.py:sft", "config file[:stage] "
                                 "(config.load spec); override fields with --config.a.b=v"),
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


def main(argv):
  """User errors (a missing run or corpus, a bad config value, an unwritable output) are
  reported before any work, in one line with exit code 2 (liveinterp/common/cli.py)."""
  del argv
  logging.set_verbosity(logging.WARNING)
  F = {k: v.value for k, v in _FLAGS.items()}
  from liveinterp.common import cli, config as config_lib
  from liveinterp.train.recipes import stage_config
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
  base = config_lib.load(F["config"], cli.config_overrides())
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
