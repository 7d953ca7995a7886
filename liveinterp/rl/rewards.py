"""RL rewards (DESIGN §4), host-side numpy: scored between rollout and update, never in jit.

An episode is one source utterance (or talk) streamed chunk by chunk; turn t = 0..N−1
answers chunk t, which ends at T_t = (t+1)·Δ (DESIGN writes T_t = t·Δ with 1-based t: the
same times). Notation, all in *target words* (whitespace words; for Chinese/Japanese
targets non-space, non-punctuation characters, `target_word_count`):

- R_t: reference words ready by T_t (`tgt_ready_ms <= T_t`), |ref| all of them;
- E_t: words of the hypothesis after turn t, Y≤t = the turns' text deltas concatenated
  (`"".join(text[:t+1])`, exactly as `inference.session` assembles `StreamResult.text`);
- e_j: end time of source word j.

Single-turn rewards, one value per turn (`turn_rewards`, unweighted):

- det  (detection accuracy): with L_t = the end T of the last earlier turn that wrote text
       (0 if none) and "new" = some source word ended in (L_t, T_t]:
       −1 if turn t writes text and nothing is new (writing on silence, noise or a
       half-heard word), +1 if it waits and nothing is new, 0 otherwise.
- init (translation initiative): −max(0, R_t − E_t) / max(1, |ref|).
- qual (prefix-quality gain): Q(Y≤t, ref[:m_t]) − Q(Y≤t−1, ref[:m_{t−1}]),
       m_t = min(max(R_t, E_t), |ref|), m_{−1} = 0; ref[:m] = the first m reference words
       joined for the target language (`stream_format.join_words`; for zh/ja the first m
       characters), Q = sentence chrF/100 (or sentence BLEU/100), 0 when the hypothesis or
       the reference prefix is empty. The gains telescope: their sum is Q(Y, ref[:m_{N−1}]).
- time (time compliance): speech segments play back to back, segment t starts at
       max(end_{t−1}, emit_ms[t]) and lasts speech_ms[t];
       backlog_t = clip(end_t − T_{t+1}, 0, max_backlog_ms), T_{t+1} = (t+2)·Δ;
       r_time = −backlog_t / Δ. A backlog left by earlier turns keeps counting at later
       (wait) turns until it has played out (`time_credit="backlog"`, DESIGN §4).
       `time_credit="increment"` (issue #13) moves the same penalty to the turn whose
       speech causes it, each ms of backlog counted once, at the turn that creates it
       (not again at every later turn it lasts): −(the backlog this turn's own speech
       adds)/Δ,
       r_time = −(b_t − max(b_{t−1} − Δ, 0)) / Δ, b_t = max(end_t − T_{t+1}, 0) the
       backlog not clipped at the maximum (b_{−1} = 0), then clipped per turn at
       max_backlog_ms/Δ. It is 0 for a turn without speech (a wait turn under a backlog
       is not blamed for it) and today's value for the first speaking turn. In general
       it is max(end_t − T_{t+1}, 0) − max(start_t − T_{t+1}, 0) ≥ 0, start_t = end_t −
       speech_ms[t]: the same number whenever emit_ms[t] ≤ T_{t+1}, and with
       computation-aware timing (emit after T_{t+1}) the lateness already there when the
       turn's speech starts is not charged to it. Tried because with "backlog" the time
       reward alone lengthened speech (runs/tiny_v3/rl_time_only: reward/time −0.24 →
       −0.55 in 12 iterations) and part of its penalty (12–17 % in a simulation) lands on
       wait turns' `<eot>`; with "increment" the test backlog grew less (2.2 s vs 3.1 s,
       SFT 1.6 s) but speech still lengthened, so this is not the main cause (README
       rl_table notes).
       `time_credit="speech"` (issue #13) keeps the "increment" value per turn but
       gives it to the speech frames that cause it instead of the turn's last token
       (the `<eot>` that ends the speech, i.e. the "stop" action of
       `rl.speech_action="stop"`): frame k of turn t plays over [start_t + k·f,
       start_t + (k+1)·f] (f = speech_ms[t]/frames), relative to T_{t+1} it is charged
       max(its end, 0) − max(its start, 0) ms, the frame's own part of the increment
       (`speech_frame_backlog_ms`; scaled down alike when the turn's total is clipped),
       and the trainer puts −w_time·charge/Δ on the frame's first token, the "continue
       speaking" decision that played it (`trainer.score_rollout`). Per turn the sum is
       the "increment" value. Tried because with the penalty on the stop `<eot>` (GAE
       γ = 1, λ = 0.95) stop has the most negative advantage per token; measured
       (benchmarks/rl_credit.py, runs/tiny_v3 SFT, one batch) the push of all
       decisions on the stop logit is toward shorter speech under every credit
       (+7.8 backlog, +6.8 increment, +5.8 speech, whitened) and the larger bias is
       the untrained value head's (text tokens +0.70 raw advantage from V alone), so
       this credit is an ablation (`rl_time_only_speech`), not the default.
- fmt  (format consistency): 0 when the turn parsed under the turn grammar and, if speech
       length bounds (lo, hi) in ms per target text token are configured, a wait turn or
       lo·n_text ≤ speech_ms ≤ hi·n_text; −1 otherwise (a text turn without speech is out
       of bounds whenever bounds are given). The bounds come from the training data
       (`data_pipelines.build.speech_ms_per_token_bounds`).

Episode rewards (`episode_rewards`; added to the last turn in stage 2, `multi_turn`):

- lag: −LAAL/|X| (or −AL/|X|), SimulEval-exact (`liveinterp.eval.latency.score`, delays
       capped at |X|, reference length |ref|), one delay per hypothesis word = emit_ms of
       the turn that wrote it. No output: the worst latency (LAAL = AL = |X|), lag = −1.
- seq: sentence chrF/100 (or sentence BLEU/100) of the whole hypothesis against
       `tgt_text`; 0 for an empty hypothesis.

The reward of turn t is Σ_c w_c·r_c[t] over det, init, qual, time, fmt, plus
w_lag·lag + w_seq·seq on the last turn when `multi_turn` (`score_episode`).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import unicodedata
from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import stream_format as sfmt
from liveinterp.eval import latency as latency_lib
from liveinterp.eval import quality as quality_lib

TURN_COMPONENTS = ("det", "init", "qual", "time", "fmt")
EPISODE_COMPONENTS = ("lag", "seq")
LAG_METRICS = ("laal", "al")
QUALITY_METRICS = ("chrf", "bleu")
TIME_CREDITS = ("backlog", "increment", "speech")  # where r_time goes (module docstring)
_WEIGHTS = tuple(f"w_{c}" for c in TURN_COMPONENTS + EPISODE_COMPONENTS)
_CHAR_LANGS = ("zh", "ja")


def _char_lang(lang: str) -> bool:
  return lang.split("-")[0].lower() in _CHAR_LANGS


def target_word_count(text: str, lang: str) -> int:
  """Target words in `text`: whitespace words, or for Chinese/Japanese targets the
  characters that are neither space nor punctuation."""
  if _char_lang(lang):
    return sum(1 for c in text if not c.isspace() and unicodedata.category(c)[0] != "P")
  return len(text.split())


# ---- config ----------------------------------------------------------------------------

def _check_fields(values: Mapping[str, Any], where: str):
  """ValueError naming the first bad field (`where` + name) among RewardConfig's values."""
  def bad(name, why):
    raise ValueError(f"{where}{name}={values[name]!r}: {why}")

  def finite(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)

  for name in _WEIGHTS:
    v = values[name]
    if not finite(v) or v < 0:
      bad(name, "a reward weight must be a finite number >= 0 (0 switches it off)")
  if not isinstance(values["multi_turn"], bool):
    bad("multi_turn", "expected a bool")
  if values["lag_metric"] not in LAG_METRICS:
    bad("lag_metric", f"expected one of {LAG_METRICS}")
  for name in ("seq_metric", "quality_metric"):
    if values[name] not in QUALITY_METRICS:
      bad(name, f"expected one of {QUALITY_METRICS}")
  if values["time_credit"] not in TIME_CREDITS:
    bad("time_credit", f"expected one of {TIME_CREDITS}")
  b = values["max_backlog_ms"]
  if not finite(b) or b <= 0:
    bad("max_backlog_ms", "expected a finite number > 0")
  s = values["speech_ms_per_token"]
  if s is not None:
    ok = isinstance(s, (tuple, list)) and len(s) == 2 and all(finite(x) for x in s)
    if not ok or not 0 <= s[0] <= s[1]:
      bad("speech_ms_per_token", "expected None or (lo, hi) with 0 <= lo <= hi, finite")


@dataclasses.dataclass(frozen=True)
class RewardConfig:
  """Reward weights and choices (config `rl.<field>`, same names)."""
  w_det: float = 1.0
  w_init: float = 1.0
  w_qual: float = 1.0
  w_time: float = 1.0
  w_fmt: float = 1.0
  w_lag: float = 1.0
  w_seq: float = 1.0
  multi_turn: bool = False          # stage 2: add r_lag and r_seq at the episode's last turn
  lag_metric: str = "laal"          # "laal" | "al"
  seq_metric: str = "chrf"          # "chrf" | "bleu"
  quality_metric: str = "chrf"      # Q of the per-turn prefix-quality gain: "chrf" | "bleu"
  max_backlog_ms: float = 2000.0    # backlog clip for r_time
  time_credit: str = "backlog"      # r_time: "backlog" | "increment" | "speech" (docstring)
  # (lo, hi) bounds of target speech ms per target text token; None: no length check.
  speech_ms_per_token: tuple[float, float] | None = None

  def __post_init__(self):
    if isinstance(self.speech_ms_per_token, list):
      object.__setattr__(self, "speech_ms_per_token", tuple(self.speech_ms_per_token))
    _check_fields(dataclasses.asdict(self), "RewardConfig.")

  @classmethod
  def from_config(cls, cfg) -> "RewardConfig":
    """From `cfg.rl.<field>` (ml_collections ConfigDict or mapping); a missing `rl` or
    field takes the default. ValueError naming `rl.<field>` for a bad value."""
    rl = _get(cfg, "rl", None)
    values = {}
    for f in dataclasses.fields(cls):
      v = f.default if rl is None else _get(rl, f.name, f.default)
      if f.name == "speech_ms_per_token" and isinstance(v, list):
        v = tuple(v)
      values[f.name] = v
    _check_fields(values, "rl.")
    return cls(**values)


def _get(obj, name: str, default):
  if obj is None:
    return default
  if isinstance(obj, Mapping):
    return obj.get(name, default)
  try:
    return getattr(obj, name)
  except (AttributeError, KeyError):
    return default


# ---- episode and reference -------------------------------------------------------------

@dataclasses.dataclass
class Episode:
  """What one rollout episode wrote, one entry per turn t = 0..N−1 (turn t answers chunk t)."""
  chunk_ms: float            # Δ
  source_ms: float           # |X|, source duration
  text: list[str]            # text delta of turn t ("" for a wait turn), detokenized
  speech_ms: np.ndarray      # [N] duration of the speech turn t wrote
  n_text_tokens: np.ndarray  # [N] target text tokens turn t wrote
  well_formed: np.ndarray    # [N] bool: the turn parsed under the turn grammar
  emit_ms: np.ndarray        # [N] when turn t's output became available: (t+1)·Δ
  tgt_lang: str

  def __post_init__(self):
    self.text = [str(s) for s in self.text]
    self.speech_ms = np.asarray(self.speech_ms, np.float64).reshape(-1)
    self.n_text_tokens = np.asarray(self.n_text_tokens, np.int64).reshape(-1)
    self.well_formed = np.asarray(self.well_formed, bool).reshape(-1)
    self.emit_ms = np.asarray(self.emit_ms, np.float64).reshape(-1)
    n = len(self.text)
    if n == 0:
      raise ValueError("Episode: no turns")
    for name in ("speech_ms", "n_text_tokens", "well_formed", "emit_ms"):
      if getattr(self, name).size != n:
        raise ValueError(f"Episode.{name} has {getattr(self, name).size} entries for {n} "
                         f"turns")
    if not self.chunk_ms > 0 or not self.source_ms > 0:
      raise ValueError(f"Episode: chunk_ms={self.chunk_ms}, source_ms={self.source_ms}: "
                       f"must be positive")
    if np.any(self.speech_ms < 0) or np.any(self.n_text_tokens < 0):
      raise ValueError("Episode: speech_ms and n_text_tokens must be >= 0")
    if np.any(~np.isfinite(self.emit_ms)) or np.any(self.emit_ms < 0) or \
        np.any(np.diff(self.emit_ms) < 0):
      raise ValueError("Episode.emit_ms must be finite, >= 0 and non-decreasing")

  @property
  def num_turns(self) -> int:
    return len(self.text)


@dataclasses.dataclass
class Reference:
  """The reference side of an episode (alignment policy ready times)."""
  src_word_end_ms: np.ndarray   # [J] end time of each source word (ms)
  tgt_words: list[str]          # reference target words
  tgt_ready_ms: np.ndarray      # [K] ready time of each reference target word, monotone
  tgt_text: str

  def __post_init__(self):
    self.src_word_end_ms = np.asarray(self.src_word_end_ms, np.float64).reshape(-1)
    self.tgt_words = [str(w) for w in self.tgt_words]
    self.tgt_ready_ms = np.asarray(self.tgt_ready_ms, np.float64).reshape(-1)
    if self.tgt_ready_ms.size != len(self.tgt_words):
      raise ValueError(f"Reference: {self.tgt_ready_ms.size} ready times for "
                       f"{len(self.tgt_words)} target words")
    if np.any(self.tgt_ready_ms < 0) or np.any(self.src_word_end_ms < 0):
      raise ValueError("Reference: untimed words (negative times); rewards need a timed "
                       "corpus")
    if np.any(np.diff(self.tgt_ready_ms) < 0):
      raise ValueError("Reference.tgt_ready_ms must be monotone")

  @classmethod
  def from_record(cls, rec: Mapping[str, Any]) -> "Reference":
    """From a corpus record (`data_pipelines.stream_format` schema)."""
    tgt_text = rec["tgt_text"]
    if isinstance(tgt_text, bytes):
      tgt_text = tgt_text.decode("utf-8")
    words = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in rec["tgt_words"]]
    return cls(src_word_end_ms=rec["src_word_end_ms"], tgt_words=words,
               tgt_ready_ms=rec["tgt_ready_ms"], tgt_text=str(tgt_text))


# ---- helpers ---------------------------------------------------------------------------

def _quality(metric: str, hyp: str, ref: str, lang: str) -> float:
  """Q in [0, 1]: sentence chrF/100 or sentence BLEU/100; 0 if either side is empty."""
  hyp, ref = hyp.strip(), ref.strip()
  if not hyp or not ref:
    return 0.0
  if metric == "chrf":
    return quality_lib.sentence_chrf(hyp, ref) / 100.0
  return quality_lib.sentence_bleu(hyp, ref, lang) / 100.0


def _hypotheses(ep: Episode) -> list[str]:
  """Y≤t for every t: the deltas concatenated as `StreamResult.text` is."""
  out, acc = [], ""
  for delta in ep.text:
    acc += delta
    out.append(acc)
  return out


def _ref_units(ref: Reference, lang: str) -> np.ndarray:
  """Target words (`target_word_count` units) in each reference word: 1 per word, or
  its characters for zh/ja."""
  if not _char_lang(lang):
    return np.ones(len(ref.tgt_words), np.int64)
  return np.asarray([target_word_count(w, lang) for w in ref.tgt_words], np.int64)


def _ref_prefix(ref: Reference, units: np.ndarray, m: int, lang: str) -> str:
  """The first m target words of the reference, joined for the target language. For
  zh/ja targets m counts characters: the whole reference words that fit (with their
  punctuation), then the next word cut after its m-th counted character."""
  if m <= 0:
    return ""
  cum = np.cumsum(units)
  whole = int(np.searchsorted(cum, m, side="right"))   # words entirely inside m
  words = ref.tgt_words[:whole]
  left = m - (int(cum[whole - 1]) if whole else 0)
  if left > 0 and whole < len(ref.tgt_words):
    part, n = "", 0
    for c in ref.tgt_words[whole]:
      if n == left:
        break
      part += c
      n += target_word_count(c, lang)
    words = words + [part]
  return sfmt.join_words(words, lang)


def _chunk_ends(ep: Episode) -> np.ndarray:
  return (np.arange(ep.num_turns, dtype=np.float64) + 1.0) * float(ep.chunk_ms)


def _writes(ep: Episode) -> np.ndarray:
  return np.asarray([bool(s.strip()) for s in ep.text], bool)


# ---- rewards ---------------------------------------------------------------------------

def detection_reward(ep: Episode, ref: Reference) -> np.ndarray:
  """r_det [N] (module docstring)."""
  ends_t = _chunk_ends(ep)
  writes = _writes(ep)
  # L_t: the chunk end of the last turn before t that wrote text (0 if none).
  last = np.maximum.accumulate(np.where(writes, ends_t, 0.0))
  since = np.concatenate([[0.0], last[:-1]])
  src_end = np.sort(ref.src_word_end_ms)
  new = (np.searchsorted(src_end, ends_t, side="right")
         > np.searchsorted(src_end, since, side="right"))
  return np.where(new, 0.0, np.where(writes, -1.0, 1.0))


def _counts(ep: Episode, ref: Reference):
  """(R_t [N], E_t [N], |ref|, per-reference-word units), in target words."""
  units = _ref_units(ref, ep.tgt_lang)
  ready_cum = np.concatenate([[0], np.cumsum(units)])
  r = ready_cum[np.searchsorted(ref.tgt_ready_ms, _chunk_ends(ep), side="right")]
  e = np.asarray([target_word_count(h, ep.tgt_lang) for h in _hypotheses(ep)], np.int64)
  return r.astype(np.int64), e, int(ready_cum[-1]), units


def initiative_reward(ep: Episode, ref: Reference) -> np.ndarray:
  """r_init [N] = −max(0, R_t − E_t) / max(1, |ref|)."""
  r, e, n_ref, _ = _counts(ep, ref)
  return -np.maximum(0, r - e).astype(np.float64) / max(1, n_ref)


def quality_reward(ep: Episode, ref: Reference, metric: str = "chrf") -> np.ndarray:
  """r_qual [N]: the prefix-quality gain of each turn (module docstring)."""
  r, e, n_ref, units = _counts(ep, ref)
  m = np.minimum(np.maximum(r, e), n_ref)
  hyps = _hypotheses(ep)
  q = np.empty(ep.num_turns, np.float64)
  prev_key, prev_q = ("", 0), 0.0
  for t in range(ep.num_turns):
    key = (hyps[t].strip(), int(m[t]))
    if key != prev_key:  # an unchanged hypothesis and prefix keep their score
      prev_q = _quality(metric, key[0], _ref_prefix(ref, units, key[1], ep.tgt_lang),
                        ep.tgt_lang)
      prev_key = key
    q[t] = prev_q
  return np.diff(q, prepend=0.0)


def _speech_overrun_ms(ep: Episode) -> tuple[np.ndarray, np.ndarray]:
  """(start_t, end_t) − T_{t+1} [N], T_{t+1} = (t+2)·Δ: how far turn t's speech segment
  starts and ends after the next chunk end (negative: before it).

  end_t = max(end_{t−1}, emit_t) + s_t unrolls to S_t + max_{k≤t}(emit_k − S_{k−1}),
  S the cumulative speech durations (end_{−1} = 0, emit ≥ 0); start_t = end_t − s_t."""
  s_cum = np.cumsum(ep.speech_ms)
  s_prev = s_cum - ep.speech_ms
  end = s_cum + np.maximum.accumulate(ep.emit_ms - s_prev)
  next_end = _chunk_ends(ep) + float(ep.chunk_ms)
  return end - ep.speech_ms - next_end, end - next_end


def speech_backlog_ms(ep: Episode, max_backlog_ms: float) -> np.ndarray:
  """backlog_t [N]: how far the played speech runs past T_{t+1} = (t+2)·Δ, clipped."""
  return np.clip(_speech_overrun_ms(ep)[1], 0.0, float(max_backlog_ms))


def backlog_increment_ms(ep: Episode, max_backlog_ms: float) -> np.ndarray:
  """[N] the backlog turn t's own speech adds, b_t − max(b_{t−1} − Δ, 0) when emit_t ≤
  T_{t+1} (module docstring, `time_credit="increment"`), ≥ 0, clipped per turn."""
  start, end = _speech_overrun_ms(ep)
  added = np.maximum(end, 0.0) - np.maximum(start, 0.0)
  return np.clip(added, 0.0, float(max_backlog_ms))  # ≥ 0 also under rounding


def speech_frame_backlog_ms(ep: Episode, n_frames: Sequence[int], max_backlog_ms: float
                            ) -> list[np.ndarray]:
  """Per turn t, [n_frames[t]] the ms of backlog each of its speech frames adds
  (`time_credit="speech"`, module docstring): frame k's part of the turn's segment that
  plays after T_{t+1}. Each turn's sum is `backlog_increment_ms(ep, ...)[t]` (the frames
  scaled alike when that is clipped); a turn without speech has no frames."""
  n_frames = np.asarray(n_frames, np.int64).reshape(-1)
  if n_frames.size != ep.num_turns:
    raise ValueError(f"speech_frame_backlog_ms: {n_frames.size} frame counts for "
                     f"{ep.num_turns} turns")
  bad = np.nonzero((n_frames < 0) | ((n_frames == 0) & (ep.speech_ms > 0)))[0]
  if bad.size:
    t = int(bad[0])
    raise ValueError(f"speech_frame_backlog_ms: turn {t} has {n_frames[t]} frames for "
                     f"{ep.speech_ms[t]} ms of speech")
  start, _ = _speech_overrun_ms(ep)
  total = backlog_increment_ms(ep, max_backlog_ms)
  out = []
  for t, n in enumerate(n_frames):
    if n == 0:
      out.append(np.zeros((0,), np.float64))
      continue
    edges = start[t] + ep.speech_ms[t] * np.arange(n + 1, dtype=np.float64) / n
    added = np.diff(np.maximum(edges, 0.0))            # >= 0: edges are increasing
    s = added.sum()
    out.append(added * (total[t] / s) if s > 0 else added)  # the clip, spread alike
  return out


def time_reward(ep: Episode, max_backlog_ms: float, credit: str = "backlog") -> np.ndarray:
  """r_time [N] = −backlog_t / Δ, or with `credit="increment"` (and "speech", whose
  per-turn total it is) −(the backlog turn t's speech adds) / Δ (module docstring)."""
  if credit not in TIME_CREDITS:
    raise ValueError(f"time_reward: credit={credit!r}, expected one of {TIME_CREDITS}")
  ms = (speech_backlog_ms if credit == "backlog" else backlog_increment_ms)(
      ep, max_backlog_ms)
  return -ms / float(ep.chunk_ms)


def speech_time_rewards(ep: Episode, n_frames: Sequence[int], rc: RewardConfig
                        ) -> list[np.ndarray]:
  """`time_credit="speech"`: per turn, [n_frames[t]] w_time·r_time of each speech frame
  (−w_time·`speech_frame_backlog_ms`/Δ); each turn's sum is the w_time·r_time[t] that
  `score_episode` counts in that turn's reward."""
  return [-rc.w_time * ms / float(ep.chunk_ms)
          for ms in speech_frame_backlog_ms(ep, n_frames, rc.max_backlog_ms)]


def format_reward(ep: Episode,
                  speech_ms_per_token: Sequence[float] | None = None) -> np.ndarray:
  """r_fmt [N]: 0 for a well-formed turn with a plausible speech length, else −1."""
  ok = ep.well_formed.copy()
  if speech_ms_per_token is not None:
    lo, hi = float(speech_ms_per_token[0]), float(speech_ms_per_token[1])
    n = ep.n_text_tokens.astype(np.float64)
    wait = ep.n_text_tokens == 0
    in_bounds = (ep.speech_ms >= lo * n) & (ep.speech_ms <= hi * n) & (ep.speech_ms > 0)
    ok &= wait | in_bounds
  return np.where(ok, 0.0, -1.0)


def turn_rewards(ep: Episode, ref: Reference, rc: RewardConfig) -> dict[str, np.ndarray]:
  """The single-turn rewards, unweighted: {det, init, qual, time, fmt}, each float64[N]."""
  return {"det": detection_reward(ep, ref),
          "init": initiative_reward(ep, ref),
          "qual": quality_reward(ep, ref, rc.quality_metric),
          "time": time_reward(ep, rc.max_backlog_ms, rc.time_credit),
          "fmt": format_reward(ep, rc.speech_ms_per_token)}


def hypothesis_delays(ep: Episode) -> np.ndarray:
  """One delay per hypothesis word: emit_ms of the turn that wrote it (E_t − E_{t−1}
  words for turn t, so the count is the final hypothesis's word count)."""
  e = np.asarray([target_word_count(h, ep.tgt_lang) for h in _hypotheses(ep)], np.int64)
  return np.repeat(ep.emit_ms, np.diff(e, prepend=0))


def episode_rewards(ep: Episode, ref: Reference, rc: RewardConfig) -> dict[str, float]:
  """The multi-turn rewards: lag = −LAAL/|X| (or −AL/|X|), seq = Q(Y, tgt_text); with the
  lags in ms for logging ("laal_ms", "al_ms")."""
  n_ref = int(_ref_units(ref, ep.tgt_lang).sum())
  lat = latency_lib.score(hypothesis_delays(ep), float(ep.source_ms), reference_len=n_ref)
  lag_ms = lat.LAAL if rc.lag_metric == "laal" else lat.AL
  hyp = "".join(ep.text)
  return {"lag": -float(lag_ms) / float(ep.source_ms),
          "seq": _quality(rc.seq_metric, hyp, ref.tgt_text, ep.tgt_lang),
          "laal_ms": float(lat.LAAL), "al_ms": float(lat.AL)}


def score_episode(ep: Episode, ref: Reference, rc: RewardConfig
                  ) -> tuple[np.ndarray, dict[str, float]]:
  """(reward per turn float64[N], logging metrics).

  reward[t] = Σ_c w_c·r_c[t] over the turn components; with `rc.multi_turn` the last
  turn also gets w_lag·lag + w_seq·seq (with `time_credit="speech"` the trainer moves
  each turn's w_time·r_time from its last token onto its speech frames,
  `speech_time_rewards`). Metrics: "reward/<component>" the mean over turns
  of each turn component, "reward/lag", "reward/seq" (always computed, also in stage 1),
  "reward/laal_ms", "reward/al_ms", and "reward/total" = the sum of the turn rewards.
  """
  parts = turn_rewards(ep, ref, rc)
  reward = np.zeros(ep.num_turns, np.float64)
  for c in TURN_COMPONENTS:
    reward += getattr(rc, f"w_{c}") * parts[c]
  epi = episode_rewards(ep, ref, rc)
  if rc.multi_turn:
    reward[-1] += rc.w_lag * epi["lag"] + rc.w_seq * epi["seq"]
  metrics = {f"reward/{c}": float(np.mean(parts[c])) for c in TURN_COMPONENTS}
  metrics.update({f"reward/{k}": float(v) for k, v in epi.items()})
  metrics["reward/total"] = float(reward.sum())
  return reward, metrics
