"""Streaming metrics: what `liveinterp.evaluate` computes from streamed results.

Pure functions of the decoder's output segments (anything with the `StreamResult` /
`Segment` fields: `text`, `emit_ms`, `ready_ms`, `chunk`, `audio_ms`, `speech`,
`compute_ms`, ...) and of the corpus records: per-word delays of the text and of the
played speech, the reference policies' delays, SimulEval latency rows, BLEU/chrF of a
streamed run, the constant-output floor, and whose voice each segment of a two-speaker
talk has. No model runs here (liveinterp.eval imports neither liveinterp.inference nor
liveinterp.models: tests/architecture_rules.txt).
"""

from __future__ import annotations

import numpy as np

from data_pipelines import stream_format as sfmt, talks as talks_lib
from liveinterp.eval import latency as L, quality, speaker_similarity


def words(text: str, lang: str) -> list[str]:
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
    out += [t] * len(words(s.text, lang))
  return out


def speech_word_delays(result, lang: str, source_ms: float,
                       computation_aware: bool = False):
  """Per output word, when it starts playing: segments queue one after another from their
  (capped) emission time, or from when they were computed (`computation_aware`); word
  onsets inside a segment come from where its audio is voiced
  (`latency.audible_word_offsets`). Returns (delays, end of the last played sample)."""
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
    offs.append(L.audible_word_offsets(seg, sr, len(words(s.text, lang))))
  delays, spans = L.speech_delays(write, durs, offs)
  return delays, (spans[-1][1] if spans else None)


def chunk_end_delays(rec, ready_ms, chunk_ms: int, sample_rate: int = 16000) -> list[float]:
  """Delays of words ready at `ready_ms` (ms of `rec`'s source) when each is written at
  the end of the first chunk that has it (capped at the record's last chunk)."""
  spec = sfmt.StreamSpec(chunk_ms=int(chunk_ms), sample_rate=int(sample_rate))
  n_chunks = sfmt.num_chunks(len(rec["src_audio"]), spec)
  turns = sfmt.turn_schedule(np.asarray(ready_ms, np.float64), n_chunks, chunk_ms)
  return [float((t + 1) * chunk_ms) for t in turns]


def oracle_delays(rec, policy: str, chunk_ms: int, k: int = 3,
                  sample_rate: int = 16000) -> list[float]:
  """Delays of the reference words under a data policy, emitted at chunk ends."""
  return chunk_end_delays(rec, sfmt.ready_times(rec, policy, k), chunk_ms, sample_rate)


def utterance_latencies(delays_per_utt, source_ms, ref_lens, starts, ends=None,
                        **score_kw) -> list:
  """SimulEval-exact latency (`latency.score`) of each utterance; `ends` (speech) are
  the end times of the last played sample, for EndOffset."""
  scores = []
  for i, (d, src, n, st) in enumerate(zip(delays_per_utt, source_ms, ref_lens, starts)):
    d = list(np.maximum.accumulate(np.asarray(d, np.float64))) if len(d) else []
    end = {"output_end_ms": ends[i]} if ends and ends[i] is not None else {}
    scores.append(L.score(d, src, n, [st], [n], **score_kw, **end))
  return scores


REFERENCE_POLICIES = (("alignment", "alignment", 3), ("wait-3", "wait_k", 3))


def record_timing(records, sample_rate: int):
  """What SimulEval scores each record's latency against: (source durations ms,
  reference lengths in target words, first source word start ms)."""
  tgt_lang = records[0]["tgt_lang"] if records else "en"
  source_ms = [1000.0 * len(r["src_audio"]) / sample_rate for r in records]
  ref_lens = [len(words(r["tgt_text"], tgt_lang)) for r in records]
  starts = [float(r["src_word_start_ms"][0]) if len(r["src_word_start_ms"]) else 0.0
            for r in records]
  return source_ms, ref_lens, starts


def reference_policies(records, chunk_ms: int, sample_rate: int) -> dict:
  """The reference translations written under the corpus's data policies
  (`REFERENCE_POLICIES`: the alignment policy the SFT data interleaves with, and wait-3),
  emitted at chunk ends: {name: {"bleu": 100, "text_latency": SimulEval latency}} — the
  latency a model writing the references themselves would have."""
  source_ms, ref_lens, starts = record_timing(records, sample_rate)
  return {name: {"bleu": 100.0, "text_latency": latency_scores(
      [oracle_delays(r, policy, chunk_ms, k, sample_rate) for r in records], source_ms,
      ref_lens, starts)}
          for name, policy, k in REFERENCE_POLICIES}


def latency_scores(delays_per_utt, source_ms, ref_lens, starts, ends=None, **score_kw):
  """`utterance_latencies`, averaged (`latency.corpus_scores`)."""
  return L.corpus_scores(utterance_latencies(delays_per_utt, source_ms, ref_lens, starts,
                                             ends, **score_kw))


def simul_scores(results, records, sample_rate: int) -> dict:
  """BLEU / chrF of the streamed text against the records' targets, the length ratio
  (hypothesis words / reference words over the corpus: below 1, content was left out),
  text latency (SimulEval, non- and computation-aware), empty outputs and real-time
  factor."""
  tgt_lang = records[0]["tgt_lang"]
  hyps = [r.text.strip() for r in results]
  refs = [r["tgt_text"] for r in records]
  source_ms, ref_lens, starts = record_timing(records, sample_rate)
  per_utt = utterance_latencies([text_delays(r.segments, tgt_lang) for r in results],
                                source_ms, ref_lens, starts)
  return {
      "bleu": quality.corpus_bleu(hyps, refs, tgt_lang),
      "chrf": quality.corpus_chrf(hyps, refs),
      "empty_outputs": int(sum(not h for h in hyps)),
      "length_ratio": (sum(len(words(h, tgt_lang)) for h in hyps) / max(1, sum(ref_lens))),
      "rtf": float(np.mean([r.rtf for r in results])),
      "text_latency": L.corpus_scores(per_utt),
      # per utterance, for paired comparisons of two systems on the same utterances
      # (`quality.paired_bootstrap`, benchmarks/rl_table.py)
      "utterances": {"ids": [str(r.get("id", i)) for i, r in enumerate(records)],
                     "hyps": hyps, "refs": refs,
                     "laal": [float(s.LAAL) for s in per_utt]},
      "text_latency_ca": latency_scores(
          [text_delays(r.segments, tgt_lang, True, compute_ms=r.compute_ms, source_ms=x)
           for r, x in zip(results, source_ms)], source_ms, ref_lens, starts,
          cap_to_source=False),
  }


def constant_baseline(candidates, refs, lang: str) -> dict:
  """The floor of DESIGN §6: the single candidate sentence (training targets) that,
  output for every input, scores the best corpus chrF against `refs`; its BLEU/chrF."""
  cands = sorted({c.strip() for c in candidates if c and c.strip()})
  if not cands:
    raise ValueError("constant baseline: no candidate sentences")
  best = max(cands, key=lambda c: quality.corpus_chrf([c] * len(refs), refs))
  return {"sentence": best, "candidates": len(cands),
          "bleu": quality.corpus_bleu([best] * len(refs), refs, lang),
          "chrf": quality.corpus_chrf([best] * len(refs), refs)}


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
  """Multi-speaker voice following (`speaker_similarity.speaker_attribution`) of
  streamed talks.

  Each output segment is attributed to the speaker whose source span it was emitted in
  (`talks.speaker_at` of its emit time: words are translated after they are heard, so a
  segment emitted in the pause after a speaker's span belongs to that speaker).
  Segments emitted within `guard_ms` after a speaker change are ambiguous (they may
  still translate the previous speaker; the speaker window still holds their audio):
  counted, not scored. merge: consecutive segments of the same speaker are scored as
  one (a single turn's speech is often shorter than
  `speaker_similarity.MIN_ACTIVE_S`). The references: each speaker's source audio in the
  talk.
  """
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
  out = speaker_similarity.speaker_attribution(segs_all, refs_all, sample_rate)
  out.update(raw_segments=raw, ambiguous=ambiguous, guard_ms=guard_ms, merged=merge)
  return out
