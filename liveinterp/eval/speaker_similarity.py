"""Speaker similarity of output speech to its source speaker versus other speakers.

The embedding is training-free and independent of the model's own speaker encoder, so
the model cannot score itself: statistics of MFCCs and of the fundamental frequency over
the active (non-silent) frames, L2-normalised.

`embed(audio, sr)` -> float32[D], D = 2 * (N_MFCC - 1) + 2 = 40:
- audio is resampled to 16 kHz (soxr) so embeddings are rate-independent;
- 40-band log-mel spectrogram (25 ms window, 10 ms hop, 50–7600 Hz), frames within
  `ACTIVE_DB` dB of the loudest frame count as active; at least `MIN_ACTIVE_S` seconds
  of active frames are required;
- MFCC c1..c19 (c0, the loudness, is dropped): per-coefficient mean and 0.5 × std over
  active frames, coefficient k weighted by k/10 (a linear lifter, so the fine spectral
  shape is not drowned by c1);
- F0 by YIN (`librosa.yin`, 50–500 Hz) on at most the first `F0_EXCERPT_S` seconds:
  F0_WEIGHT × (median log F0 − log 150 Hz) and F0_WEIGHT × std of log F0 over active
  frames with F0 inside (55, 480) Hz; both are 0 when no such frame exists.
The weights were set on espeak speakers (all 18 `SPEAKERS`, ~1.3 s sentences, one source
sentence per speaker: top1_rate 0.56–0.89 depending on the sentence, mean ≈ 0.74; margin
0.36–0.49); they are fixed constants, so numbers are comparable across runs and sets.
Several espeak speakers share a voice variant and differ only in pitch/rate, which is
where most confusions happen.

`speaker_similarity(outputs, sources, speaker_ids)` compares output i with source i
(the utterance it translates, spoken by speaker_ids[i]) and with the sources of the
other speakers; see its docstring for the metrics, skipping rules and NaN cases.

`voice_control(outputs, controls, sources, speaker_ids)`: the voice-lost control — the
same speech decoded with another speaker's embedding (`control_partners` picks whose);
the margin own − control is > 0 when the voice follows the speaker embedding.
`speaker_attribution(talk_segments, talk_references)`: in multi-speaker talks, whether
each output segment is closest to the speaker whose words it translates.

librosa compiles some numba code on its first call in a process (a few seconds); the
functions used here (melspectrogram, mfcc, yin) are the cheap ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from liveinterp.common import audio as audio_lib

SAMPLE_RATE = 16000
N_MFCC = 20
N_MELS = 40
HOP = 160
WIN = 400
N_FFT = 512
ACTIVE_DB = 35.0
MIN_ACTIVE_S = 0.25
SILENT_PEAK = 1e-4
F0_MIN, F0_MAX = 50.0, 500.0
F0_VALID = (55.0, 480.0)
F0_REF_HZ = 150.0
F0_WEIGHT = 32.0
F0_EXCERPT_S = 10.0
STD_WEIGHT = 0.5
DIM = 2 * (N_MFCC - 1) + 2


AudioTooShortError = audio_lib.AudioTooShortError  # empty, silent or too short to embed


def _prepare(audio: np.ndarray, sr: int, name: str) -> np.ndarray:
  """Checked float32 mono audio at 16 kHz (`common.audio.check_waveform`, at least
  MIN_ACTIVE_S long, not silent); raises ValueError naming `name`."""
  x = audio_lib.check_waveform(audio, sr, name, min_samples=int(MIN_ACTIVE_S * sr))
  if float(np.max(np.abs(x))) < SILENT_PEAK:
    raise AudioTooShortError(f"{name}: silent audio (peak < {SILENT_PEAK})")
  return audio_lib.resample(x, int(sr), SAMPLE_RATE)


def embed(audio: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
  """L2-normalised float32[DIM] voice embedding of `audio` (see the module doc).

  Raises ValueError (naming `name`) for non-1-D, non-float/int16 or non-finite audio,
  and AudioTooShortError (a ValueError) for empty, silent or too-short audio.
  """
  import librosa
  x = _prepare(audio, sr, name)
  mel = librosa.feature.melspectrogram(
      y=x, sr=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, win_length=WIN, n_mels=N_MELS,
      fmin=50.0, fmax=7600.0)
  log_mel = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
  active = log_mel.max(axis=0) > -ACTIVE_DB
  n_active = int(active.sum())
  if n_active * HOP < MIN_ACTIVE_S * SAMPLE_RATE:
    raise AudioTooShortError(
        f"{name}: {n_active * HOP / SAMPLE_RATE:.3f} s of active speech, need "
        f"{MIN_ACTIVE_S} s")
  mfcc = librosa.feature.mfcc(S=log_mel, n_mfcc=N_MFCC)[1:, active]
  lifter = np.arange(1, N_MFCC, dtype=np.float64) / 10.0
  mean = mfcc.mean(axis=1) * lifter
  std = STD_WEIGHT * mfcc.std(axis=1) * lifter

  excerpt = x[:int(F0_EXCERPT_S * SAMPLE_RATE)]
  f0 = librosa.yin(excerpt, fmin=F0_MIN, fmax=F0_MAX, sr=SAMPLE_RATE, frame_length=1024,
                   hop_length=HOP)
  k = min(len(f0), len(active))
  f0 = f0[:k][active[:k]]
  f0 = f0[(f0 > F0_VALID[0]) & (f0 < F0_VALID[1])]
  if f0.size:
    log_f0 = np.log(f0)
    pitch = F0_WEIGHT * np.array([np.median(log_f0) - np.log(F0_REF_HZ), log_f0.std()])
  else:
    pitch = np.zeros(2)
  v = np.concatenate([mean, std, pitch])
  norm = float(np.linalg.norm(v))
  if not np.isfinite(norm) or norm == 0.0:
    raise AudioTooShortError(f"{name}: degenerate embedding (norm {norm})")
  return (v / norm).astype(np.float32)


def speaker_similarity(outputs: Sequence[np.ndarray], sources: Sequence[np.ndarray],
                       speaker_ids: Sequence[str], sr: int = SAMPLE_RATE,
                       center: bool = False) -> dict:
  """Voice similarity of each output to its own source speaker versus other speakers.

  outputs[i] is the generated speech for sources[i], whose speaker is speaker_ids[i];
  all audio is mono at `sr`. Cosines are between `embed` vectors.

  Returns a dict with
  - same_speaker_cos: mean over outputs of cos(output i, source i);
  - other_speaker_cos: mean over outputs of the mean cosine of output i to the sources
    of every *other* speaker;
  - margin: same_speaker_cos − other_speaker_cos;
  - top1_rate: fraction of outputs whose nearest speaker — the speaker whose sources
    have the highest mean cosine to the output — is their own speaker;
  - n: number of outputs scored; skipped: number of outputs that are empty, silent or
    too short (< MIN_ACTIVE_S s of active speech); skipped_items: their indices;
  - n_speakers: number of distinct source speakers.
  Metrics are NaN when nothing is scored (n == 0); other_speaker_cos, margin and
  top1_rate are NaN with fewer than two speakers.

  center: subtract the mean source embedding (then re-normalise) before the cosines —
  spreads the cosines out, but makes them depend on the evaluation set.

  Raises ValueError on mismatched lengths, on a non-finite / malformed output (naming
  its index: NaN audio is a bug, not a skippable output), and on any unusable source
  (naming its index and speaker: sources are the reference).
  """
  if not (len(outputs) == len(sources) == len(speaker_ids)):
    raise ValueError(f"{len(outputs)} outputs, {len(sources)} sources and "
                     f"{len(speaker_ids)} speaker ids: lengths must match")
  ids = [str(s) for s in speaker_ids]
  src = np.stack([embed(a, sr, name=f"source {i} (speaker {ids[i]})")
                  for i, a in enumerate(sources)]) if len(sources) else \
      np.zeros((0, DIM), np.float32)
  out: dict[int, np.ndarray] = {}
  skipped: list[int] = []
  for i, a in enumerate(outputs):
    try:
      out[i] = embed(a, sr, name=f"output {i} (speaker {ids[i]})")
    except AudioTooShortError:
      skipped.append(i)
  speakers = sorted(set(ids))
  if center and len(src):
    mu = src.mean(axis=0)

    def _c(v):
      w = v - mu
      n = float(np.linalg.norm(w))
      return w / n if n > 0 else w
    src = np.stack([_c(v) for v in src])
    out = {i: _c(v) for i, v in out.items()}

  rows = {s: [j for j, t in enumerate(ids) if t == s] for s in speakers}
  same, other, top1 = [], [], []
  for i, v in out.items():
    cos = src @ v
    same.append(float(cos[i]))
    per_spk = {s: float(cos[js].mean()) for s, js in rows.items()}
    if len(speakers) >= 2:
      other.append(float(np.mean([c for s, c in per_spk.items() if s != ids[i]])))
      top1.append(float(max(per_spk, key=per_spk.get) == ids[i]))
  nan = float("nan")
  same_m = float(np.mean(same)) if same else nan
  other_m = float(np.mean(other)) if other else nan
  return {"same_speaker_cos": same_m, "other_speaker_cos": other_m,
          "margin": same_m - other_m, "top1_rate": float(np.mean(top1)) if top1 else nan,
          "n": len(out), "skipped": len(skipped), "skipped_items": skipped,
          "n_speakers": len(speakers)}


def control_partners(speaker_ids: Sequence[str]) -> list[int | None]:
  """For each item i, the item whose speaker voices i's voice-lost control: the first
  j after i (cyclically: i+1, i+2, …) with a speaker other than speaker_ids[i]; None
  when every item has i's speaker. Deterministic (depends only on the order)."""
  ids = [str(s) for s in speaker_ids]
  n = len(ids)
  out: list[int | None] = []
  for i in range(n):
    out.append(next((j % n for j in range(i + 1, i + n) if ids[j % n] != ids[i]), None))
  return out


def _quantiles(x: Sequence[float]) -> dict:
  if not len(x):
    return {k: float("nan") for k in ("min", "p25", "median", "p75", "max")}
  q = np.quantile(np.asarray(x, np.float64), [0.0, 0.25, 0.5, 0.75, 1.0])
  return dict(zip(("min", "p25", "median", "p75", "max"), (float(v) for v in q)))


def voice_control(outputs: Sequence[np.ndarray], controls: Sequence[np.ndarray | None],
                  sources: Sequence[np.ndarray], speaker_ids: Sequence[str],
                  sr: int = SAMPLE_RATE) -> dict:
  """The voice-lost control: does the output carry its speaker's voice beyond what the
  speech content alone gives?

  outputs[i]: generated speech for sources[i] (speaker speaker_ids[i]); controls[i]: the
  same speech codes decoded with another speaker's embedding (`control_partners`), or
  None when there is no other speaker. Per scored item:
    own_i = cos(output i, source i), control_i = cos(control i, source i),
    margin_i = own_i − control_i
  (> 0: the voice follows the speaker embedding towards the source speaker; ≈ 0: the
  output ignores the embedding).

  Returns own_speaker_cos, control_cos, margin (means over scored items),
  margin_quantiles (min/p25/median/p75/max), positive_rate (share of margin_i > 0),
  margins (per item, in item order), items (their indices), n, skipped (outputs or
  controls that are empty, silent or too short, or have no control) with
  skipped_items. Means are NaN when n == 0. Raises ValueError on mismatched lengths,
  on non-finite / malformed audio (naming the item) and on unusable sources, as
  `speaker_similarity`.
  """
  if not (len(outputs) == len(controls) == len(sources) == len(speaker_ids)):
    raise ValueError(f"{len(outputs)} outputs, {len(controls)} controls, {len(sources)} "
                     f"sources and {len(speaker_ids)} speaker ids: lengths must match")
  ids = [str(s) for s in speaker_ids]
  own, ctl, items, skipped = [], [], [], []
  for i, (o, c, s) in enumerate(zip(outputs, controls, sources)):
    src = embed(s, sr, name=f"source {i} (speaker {ids[i]})")
    if c is None:
      skipped.append(i)
      continue
    try:
      eo = embed(o, sr, name=f"output {i} (speaker {ids[i]})")
      ec = embed(c, sr, name=f"control {i} (speaker {ids[i]})")
    except AudioTooShortError:
      skipped.append(i)
      continue
    own.append(float(eo @ src))
    ctl.append(float(ec @ src))
    items.append(i)
  margins = [a - b for a, b in zip(own, ctl)]
  nan = float("nan")
  return {"own_speaker_cos": float(np.mean(own)) if own else nan,
          "control_cos": float(np.mean(ctl)) if ctl else nan,
          "margin": float(np.mean(margins)) if margins else nan,
          "margin_quantiles": _quantiles(margins),
          "positive_rate": float(np.mean([m > 0 for m in margins])) if margins else nan,
          "margins": margins, "items": items, "n": len(items), "skipped": len(skipped),
          "skipped_items": skipped}


def speaker_attribution(talk_segments: Sequence[Sequence[tuple[np.ndarray, str]]],
                        talk_references: Sequence[dict], sr: int = SAMPLE_RATE) -> dict:
  """Multi-speaker talks: does each output segment speak in the voice of the speaker
  whose words it translates?

  talk_segments[k]: talk k's output segments as (audio, speaker it is attributed to);
  talk_references[k]: {speaker: that speaker's source audio in talk k} (at least two
  speakers). Per scored segment: cos to each speaker's reference; correct when the
  attributed speaker's cosine is the highest; margin = its cosine − the mean of the
  other speakers'.

  Returns accuracy (share correct), margin (mean), n (segments scored), skipped
  (segments too short or silent for `embed`, counted, not scored), n_segments, talks.
  accuracy/margin are NaN when n == 0. Raises ValueError when a talk has fewer than two
  reference speakers, when a segment names a speaker without a reference, on
  non-finite audio (naming talk and segment) and on unusable references.
  """
  if len(talk_segments) != len(talk_references):
    raise ValueError(f"{len(talk_segments)} talks of segments but {len(talk_references)} "
                     "of references")
  correct, margins, skipped, total = [], [], 0, 0
  for k, (segs, refs) in enumerate(zip(talk_segments, talk_references)):
    if len(refs) < 2:
      raise ValueError(f"talk {k}: {len(refs)} reference speaker(s) {sorted(refs)}; "
                       "attribution needs at least two")
    names = sorted(refs)
    ref = np.stack([embed(refs[s], sr, name=f"talk {k} reference of {s}") for s in names])
    for j, (audio, spk) in enumerate(segs):
      total += 1
      if str(spk) not in refs:
        raise ValueError(f"talk {k} segment {j}: speaker {spk!r} has no reference "
                         f"(talk speakers {names})")
      try:
        v = embed(audio, sr, name=f"talk {k} segment {j}")
      except AudioTooShortError:
        skipped += 1
        continue
      cos = ref @ v
      own = names.index(str(spk))
      others = np.delete(cos, own)
      correct.append(float(cos[own] > others.max()))
      margins.append(float(cos[own] - others.mean()))
  nan = float("nan")
  return {"accuracy": float(np.mean(correct)) if correct else nan,
          "margin": float(np.mean(margins)) if margins else nan,
          "n": len(correct), "skipped": skipped, "n_segments": total,
          "talks": len(talk_segments)}
