"""Token sequences in the DESIGN §1 stream format, built from one record (pure numpy).

Pretraining tasks (offline; `[A…]` are the `<audio>` slots of the whole source clip):

```
ASR    <bos> <asr>  <src> [A…] <text> w… <eos>               (w = source text)
ST     <bos> <st>   <src> <tgt> [A…] <text> w… <eos>         (w = target text)
TTS    <bos> <tts>  <tgt> <text> w… <speech> s… <eos>        (loss on <speech> s… <eos>)
S2ST   <bos> <s2st> <src> <tgt> [A…] <text> w… <speech> s… <eos>
```

SFT (simultaneous) interleaved stream, one turn `Y_t` after each chunk `A_t`:

```
SIMUL  <bos> <simul> <src> <tgt> [A_0] Y_0 [A_1] Y_1 … [A_{N-1}] Y_{N-1} <eos>
Y_t =  [<src> x…] <text> w… <speech> s… <eot>     writes the target words ready by T_t
    |  [<src> x…] <eot>                           wait (nothing new is ready)
```

A SIMUL stream longer than `max_len` (a talk) trains as windows (`simul_windows`): each
starts at a turn boundary with the prompt, then up to `context_chunks` preceding chunks
as context (no loss), then its own turns; together the windows train every turn once.

The prompt `<bos> <task> <lang>…` is `prompt_ids` (`simul_prompt_ids` for SIMUL): the
streaming decoder writes the same ids into its cache before the first chunk.

Chunk t covers source time [t·Δ, (t+1)·Δ), Δ = `chunk_ms`; target word k is written in
the first turn t with `ready_ms[k] <= (t+1)·Δ` (words still unready after the last chunk
are written in the last turn). Ready times come from the record (`tgt_ready_ms`,
alignment policy) or from a wait-k policy on source word end times. `<src> x…` (optional,
`src_transcript=True`) are the source words that ended in chunk t, as CLASI does.

Each `<audio>` token is a slot for one adapter frame (`frame_ms · adapter_stack` of audio,
80 ms by default): `chunk_ms / frame_ms / adapter_stack` slots per chunk. Slots carry no
loss. The audio itself travels next to the tokens, one row per slot: `audio`
int16[num_slots, slot_samples] (zero-padded), the j-th `<audio>` token of an example is
`audio[j]`.

Speech tokens `s…` are the codec codes of the target words' stretch of target speech
(`tgt_codes` int[T, K], frame-major ids). Before a codec exists there are no codes; then
`speech_placeholder` decides: "none" drops the speech part (`<text> w… <eot>`, TTS/S2ST
impossible), "zeros" writes code 0 for every codec frame (realistic lengths).

Every builder returns a dict of 1-D arrays of one length L:
`tokens` int32, `loss_mask` int32 (1 = predict this token), `audio_slot_mask` int32,
`chunk_index` int32 (chunk a slot belongs to / a turn answers; -1 for the prompt),
`segment_ids` int32 (1; packing renumbers), `positions` int32 (0…L-1), plus `audio`
int16[num_slots, slot_samples] and `task` (index into TASKS).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from data_pipelines import tokenizer as tokmod

TASKS = ("asr", "st", "tts", "s2st", "simul")
POLICIES = ("alignment", "wait_k")
TOKEN_FIELDS = ("tokens", "loss_mask", "audio_slot_mask", "chunk_index", "segment_ids",
                "positions")


class FormatError(ValueError):
  """A record cannot be turned into this task's sequence (message names the record).

  `reason`: a short stable key of why (the build summary counts dropped records by it).
  """

  def __init__(self, message: str, reason: str = "other"):
    super().__init__(message)
    self.reason = reason

  def __reduce__(self):  # keep the reason across pickling (grain worker processes)
    return type(self), (str(self), self.reason)


# Every `FormatError.reason` raised here (the pipelines count dropped records by them).
FORMAT_REASONS = ("no_source_word_times", "ready_times_count", "no_ready_times",
                  "ready_times_not_monotone", "no_target_word_times", "codes_shape",
                  "no_speech_tokens", "empty_text", "too_long", "words_without_codec_frames",
                  "first_turn_too_long", "turn_too_long", "malformed_record", "other")


@dataclasses.dataclass(frozen=True)
class StreamSpec:
  """Timing constants of the stream format (see `from_config`)."""
  sample_rate: int = 16000
  chunk_ms: int = 640
  frame_ms: int = 40              # encoder frame: audio.hop_ms x encoder.subsample
  adapter_stack: int = 2          # encoder frames per adapter frame (= per <audio> slot)
  codec_hop: int = 320            # samples per codec frame: prod(codec.strides)
  num_codebooks: int = 1
  speech_placeholder: str = "none"  # without codes: "none" | "zeros"
  src_transcript: bool = False    # turns start with `<src> newly heard source words`
  max_len: int | None = None      # longest sequence; SIMUL truncates at a turn boundary

  def __post_init__(self):
    if self.chunk_ms % self.slot_ms:
      raise ValueError(f"chunk_ms={self.chunk_ms} is not a multiple of the {self.slot_ms} "
                       f"ms audio slot (frame_ms x adapter_stack)")
    if self.speech_placeholder not in ("none", "zeros"):
      raise ValueError(f"speech_placeholder={self.speech_placeholder!r}: expected 'none' "
                       f"or 'zeros'")

  @property
  def slot_ms(self) -> int:
    return self.frame_ms * self.adapter_stack

  @property
  def slots_per_chunk(self) -> int:
    return self.chunk_ms // self.slot_ms

  @property
  def slot_samples(self) -> int:
    return self.slot_ms * self.sample_rate // 1000

  @property
  def chunk_samples(self) -> int:
    return self.chunk_ms * self.sample_rate // 1000

  @property
  def codec_rate_hz(self) -> float:
    return self.sample_rate / self.codec_hop

  @classmethod
  def from_config(cls, cfg, **overrides) -> "StreamSpec":
    """Spec from `cfg.audio`, `cfg.encoder`, `cfg.adapter`, `cfg.codec`, `cfg.stream`."""
    kw = dict(sample_rate=cfg.audio.sample_rate, chunk_ms=cfg.stream.chunk_ms,
              frame_ms=cfg.audio.hop_ms * cfg.encoder.subsample,
              adapter_stack=cfg.adapter.stack, codec_hop=int(math.prod(cfg.codec.strides)),
              num_codebooks=cfg.codec.num_codebooks, max_len=cfg.data.seq_len,
              src_transcript=bool(cfg.data.get("src_transcript", False)))
    kw.update(overrides)
    return cls(**kw)


# ---- small helpers --------------------------------------------------------------------
def num_slots(num_samples: int, spec: StreamSpec) -> int:
  """<audio> slots covering `num_samples` of audio (at least one)."""
  return max(1, -(-int(num_samples) // spec.slot_samples))


def num_chunks(num_samples: int, spec: StreamSpec) -> int:
  """Chunks covering `num_samples` of source audio (at least one)."""
  return max(1, -(-int(num_samples) // spec.chunk_samples))


def padded_audio(audio: np.ndarray, n_slots: int, spec: StreamSpec) -> np.ndarray:
  """`audio` cut or zero-padded to exactly `n_slots` slots: int16[n_slots, S]."""
  n = n_slots * spec.slot_samples
  out = np.zeros((n,), np.int16)
  a = np.asarray(audio, np.int16)[:n]
  out[:a.size] = a
  return out.reshape(n_slots, spec.slot_samples)


def join_words(words: Sequence[str], lang: str) -> str:
  """Words -> text: no spaces for Chinese/Japanese, spaces otherwise."""
  return ("" if lang.split("-")[0] in ("zh", "ja") else " ").join(words)


def _rid(rec) -> str:
  return str(rec.get("id", "<no id>"))


# Word-level arrays of a record: (times, the word list it must match, the audio it lies in).
_WORD_TIMES = (("src_word_start_ms", "src_words", "src_audio"),
               ("src_word_end_ms", "src_words", "src_audio"),
               ("tgt_word_start_ms", "tgt_words", "tgt_audio"),
               ("tgt_word_end_ms", "tgt_words", "tgt_audio"),
               ("tgt_ready_ms", "tgt_words", "src_audio"))
_TIME_SLACK_MS = 1.0  # word times are ms rounded from sample counts


def check_record(rec: Mapping[str, Any], spec: StreamSpec):
  """Raises FormatError (reason "malformed_record", naming the record and the field) when
  the word-level arrays of `rec` are inconsistent: an empty word list, a time array of
  another length than its word list, a NaN/inf time, or a known time (-1 = unknown)
  outside its audio (`_WORD_TIMES`; absent fields are not checked). The SIMUL builders
  call it first, so a bad record is a counted drop, not an IndexError deep inside.
  """
  def bad(msg):
    return FormatError(f"record {_rid(rec)}: {msg}", reason="malformed_record")
  for words in ("src_words", "tgt_words"):
    if len(rec[words]) == 0:
      raise bad(f"{words} is empty")
  for times, words, audio in _WORD_TIMES:
    if times not in rec:
      continue
    t = np.asarray(rec[times], np.float64).reshape(-1)
    if t.size != len(rec[words]):
      raise bad(f"{times} has {t.size} values for {len(rec[words])} {words}")
    if not np.all(np.isfinite(t)):
      raise bad(f"{times} has NaN/inf")
    n = len(rec.get(audio, ()))
    dur_ms = 1000.0 * n / spec.sample_rate
    if n and np.any(t > dur_ms + _TIME_SLACK_MS):
      raise bad(f"{times} has a time {float(t.max()):.0f} ms after the end of {audio} "
                f"({dur_ms:.0f} ms)")


def wait_k_ready_ms(src_word_end_ms: np.ndarray, n_tgt: int, k: int) -> np.ndarray:
  """Wait-k: target word j is ready when source word min(j+k-1, n_src-1) has ended."""
  if k < 1:
    raise ValueError(f"wait-k needs k >= 1, got {k}")
  ends = np.asarray(src_word_end_ms, np.float32)
  if ends.size == 0:
    raise ValueError("wait-k needs at least one source word")
  idx = np.minimum(np.arange(n_tgt) + k - 1, ends.size - 1)
  return np.maximum.accumulate(ends[idx]) if n_tgt else np.zeros((0,), np.float32)


def ready_times(rec: Mapping[str, Any], policy: str = "alignment", k: int = 3) -> np.ndarray:
  """Ready time (ms of source audio) of each target word under `policy`."""
  n_tgt = len(rec["tgt_words"])
  if policy == "alignment":
    r = np.asarray(rec["tgt_ready_ms"], np.float32)
  elif policy == "wait_k":
    ends = np.asarray(rec["src_word_end_ms"], np.float32)
    if ends.size and np.any(ends < 0):
      raise FormatError(f"record {_rid(rec)}: wait-k needs source word end times, the "
                        f"record has none (-1)", reason="no_source_word_times")
    r = wait_k_ready_ms(ends, n_tgt, k)
  else:
    raise ValueError(f"policy={policy!r}: expected one of {POLICIES}")
  if r.size != n_tgt:
    raise FormatError(f"record {_rid(rec)}: {r.size} ready times for {n_tgt} target words",
                      reason="ready_times_count")
  if r.size and np.any(r < 0):
    raise FormatError(f"record {_rid(rec)}: target words have no ready times (-1); "
                      f"SIMUL needs a timed corpus", reason="no_ready_times")
  if np.any(np.diff(r) < 0):
    raise FormatError(f"record {_rid(rec)}: ready times are not monotone",
                      reason="ready_times_not_monotone")
  return r


def turn_schedule(ready_ms: np.ndarray, n_chunks: int, chunk_ms: float) -> np.ndarray:
  """Turn (chunk index) that writes each target word: int32[m].

  Word k goes to the first chunk t with ready_ms[k] <= (t+1)·chunk_ms, capped at the last
  chunk. With monotone ready times the words of each turn are a contiguous range.
  """
  r = np.asarray(ready_ms, np.float64)
  t = np.ceil(r / float(chunk_ms)).astype(np.int64) - 1
  return np.clip(t, 0, n_chunks - 1).astype(np.int32)


def codec_frame_bounds(word_start_ms: np.ndarray, n_frames: int, rate_hz: float,
                       rid: str = "") -> np.ndarray:
  """Frame boundaries F[0..m] splitting `n_frames` codec frames among m target words.

  Word k owns frames [F[k], F[k+1]): from its start time to the next word's start (the
  first word also owns the leading silence, the last the trailing one). Boundaries are
  made strictly increasing when there are at least m frames.
  """
  m = len(word_start_ms)
  if m == 0:
    return np.asarray([0, n_frames], np.int64)
  st = np.asarray(word_start_ms, np.float64)
  if np.any(st < 0):
    raise FormatError(f"record {rid}: target word start times unknown (-1); cannot split "
                      f"target speech among words", reason="no_target_word_times")
  f = np.round(st * rate_hz / 1000.0).astype(np.int64)
  f[0] = 0
  f = np.clip(f, 0, n_frames)
  f = np.maximum.accumulate(f)
  if n_frames >= m:
    for i in range(1, m):  # strictly increasing, but leave room for the remaining words
      f[i] = min(max(f[i], f[i - 1] + 1), n_frames - (m - i))
  return np.concatenate([f, [n_frames]])


class _Seq:
  """Accumulates token runs with their per-token annotations (numpy, one array per run)."""

  def __init__(self):
    self._runs: list[tuple[np.ndarray, int, int, np.ndarray]] = []
    self._n = 0

  def add(self, ids, loss: int, chunk, slot: int = 0):
    """Appends `ids`; `chunk` is one chunk index or one per id."""
    ids = np.asarray(ids, np.int32).reshape(-1)
    chunk = np.broadcast_to(np.asarray(chunk, np.int32), ids.shape)
    self._runs.append((ids, loss, slot, chunk))
    self._n += ids.size

  def __len__(self):
    return self._n

  def mark(self) -> int:
    """A point to `truncate` back to."""
    return len(self._runs)

  def truncate(self, mark: int):
    del self._runs[mark:]
    self._n = sum(r[0].size for r in self._runs)

  def finish(self, audio: np.ndarray, task: str) -> dict:
    L = self._n
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros((0,), np.int32)  # noqa: E731
    return dict(
        tokens=cat([r[0] for r in self._runs]),
        loss_mask=cat([np.full(r[0].size, r[1], np.int32) for r in self._runs]),
        audio_slot_mask=cat([np.full(r[0].size, r[2], np.int32) for r in self._runs]),
        chunk_index=cat([r[3] for r in self._runs]), segment_ids=np.ones((L,), np.int32),
        positions=np.arange(L, dtype=np.int32), audio=audio,
        task=np.int32(TASKS.index(task)))


# ---- speech tokens ----------------------------------------------------------------------
def _codes_for(rec, spec: StreamSpec, tgt_codes) -> np.ndarray | None:
  """Codes int32[T, K] of the target speech: given, placeholder zeros, or None (no speech)."""
  if tgt_codes is not None:
    c = np.asarray(tgt_codes)
    if c.ndim == 1:
      c = c[:, None]
    if c.ndim != 2 or c.shape[1] != spec.num_codebooks:
      raise FormatError(f"record {_rid(rec)}: tgt_codes shape {c.shape}, expected "
                        f"[T, {spec.num_codebooks}]", reason="codes_shape")
    return c.astype(np.int32)
  if spec.speech_placeholder == "zeros":
    n = len(rec["tgt_audio"])
    if n == 0:
      return None
    return np.zeros((-(-n // spec.codec_hop), spec.num_codebooks), np.int32)
  return None


def _need_speech(rec, codes, task):
  if codes is None or codes.shape[0] == 0:
    raise FormatError(f"record {_rid(rec)}: task {task} needs target speech tokens (no "
                      f"tgt_codes, no target audio or speech_placeholder='none')",
                      reason="no_speech_tokens")


# ---- pretraining tasks ----------------------------------------------------------------
class _ControlTable:
  """`task_id` / `lang_id` of the fixed control-token table without a sentencepiece model.

  Control ids never change (`tokenizer.CONTROL_TOKENS`; `Tokenizer.load` refuses another
  table), so a decoder with no trained tokenizer at hand still writes the exact prompt.
  The lookups are `Tokenizer`'s own methods, not a copy of them.
  """
  _control = {t: i for i, t in enumerate(tokmod.CONTROL_TOKENS)}
  task_id = tokmod.Tokenizer.task_id
  lang_id = tokmod.Tokenizer.lang_id


def prompt_ids(tok, task: str, langs: Sequence[str]) -> list[int]:
  """The task prompt every stream starts with: `[<bos>, <task>, <lang>...]`.

  The one definition of the prompt, shared by the training streams built here and the
  streaming decoder (`liveinterp.inference.decoder.prompt_for`), so the two cannot
  differ. `tok`: a `data_pipelines.tokenizer.Tokenizer`, or None for the fixed control
  table (the same ids).
  """
  tok = _ControlTable() if tok is None else tok
  return [tokmod.BOS, tok.task_id(task)] + [tok.lang_id(l) for l in langs]


def simul_prompt_ids(tok, src_lang: str, tgt_lang: str) -> list[int]:
  """`<bos> <simul> <src> <tgt>`: the prompt of the SFT stream (and of streaming)."""
  return prompt_ids(tok, "simul", [src_lang, tgt_lang])


def _prompt(seq: _Seq, tok, task: str, langs: Sequence[str]):
  seq.add(prompt_ids(tok, task, langs), 0, -1)


def _audio_slots(seq: _Seq, n_slots: int, spec: StreamSpec, chunk0: int = 0):
  chunks = chunk0 + np.arange(n_slots) // spec.slots_per_chunk
  seq.add(np.full((n_slots,), tokmod.AUDIO, np.int32), 0, chunks, slot=1)


def pretrain_example(rec: Mapping[str, Any], tok, spec: StreamSpec, task: str, *,
                     tgt_codes=None) -> dict:
  """One offline pretraining sequence: task in 'asr', 'st', 'tts', 's2st'."""
  if task not in ("asr", "st", "tts", "s2st"):
    raise ValueError(f"task={task!r}: expected asr, st, tts or s2st")
  src, tgt = rec["src_lang"], rec["tgt_lang"]
  text = rec["src_text"] if task == "asr" else rec["tgt_text"]
  text_ids = tok.encode_text(text)
  if not text_ids:
    raise FormatError(f"record {_rid(rec)}: empty {'source' if task == 'asr' else 'target'}"
                      f" text", reason="empty_text")
  has_audio, has_speech = task in ("asr", "st", "s2st"), task in ("tts", "s2st")
  codes = None
  if has_speech:
    codes = _codes_for(rec, spec, tgt_codes)
    _need_speech(rec, codes, task)
  n_slots = num_slots(len(rec["src_audio"]), spec) if has_audio else 0
  # Length first, so that a task that cannot fit costs no more than this check.
  length = (3 + (task != "asr") - (task == "tts") + n_slots + 1 + len(text_ids)
            + (1 + codes.size if has_speech else 0) + 1)
  if spec.max_len is not None and length > spec.max_len:
    raise FormatError(f"record {_rid(rec)}: {task} sequence has {length} tokens > "
                      f"max_len={spec.max_len}", reason="too_long")
  seq = _Seq()
  audio = np.zeros((0, spec.slot_samples), np.int16)
  if has_audio:
    _prompt(seq, tok, task, [src] if task == "asr" else [src, tgt])
    _audio_slots(seq, n_slots, spec)
    audio = padded_audio(rec["src_audio"], n_slots, spec)
    last_chunk = (n_slots - 1) // spec.slots_per_chunk
  else:
    _prompt(seq, tok, task, [tgt])
    last_chunk = -1
  seq.add([tokmod.TEXT] + text_ids, 0 if task == "tts" else 1, last_chunk)
  if has_speech:
    seq.add([tokmod.SPEECH], 1, last_chunk)
    seq.add(tok.speech_ids(codes), 1, last_chunk)
  seq.add([tokmod.EOS], 1, last_chunk)
  assert len(seq) == length, (len(seq), length)
  return seq.finish(audio, task)


# ---- simultaneous (SFT) stream ----------------------------------------------------------
# One run of tokens: (ids, loss, chunk, slot), the arguments of `_Seq.add`.
_Run = tuple


def _simul_turns(rec: Mapping[str, Any], tok, spec: StreamSpec, *, tgt_codes=None,
                 policy: str = "alignment", k: int = 3) -> tuple[list[int], list[list]]:
  """(prompt ids, blocks): block t is chunk t's runs `[A_t] Y_t` (slots, then the turn)."""
  check_record(rec, spec)
  rid = _rid(rec)
  src_lang, tgt_lang = rec["src_lang"], rec["tgt_lang"]
  n_src = len(rec["src_audio"])
  n_chunks = num_chunks(n_src, spec)
  ready = ready_times(rec, policy, k)
  turn_of_word = turn_schedule(ready, n_chunks, spec.chunk_ms)
  words = list(rec["tgt_words"])
  codes = _codes_for(rec, spec, tgt_codes)
  bounds = None
  if codes is not None and codes.shape[0] > 0 and words:
    bounds = codec_frame_bounds(rec["tgt_word_start_ms"], codes.shape[0],
                                spec.codec_rate_hz, rid)
  src_turn = None
  if spec.src_transcript:
    ends = np.asarray(rec["src_word_end_ms"], np.float32)
    if ends.size and np.any(ends < 0):
      raise FormatError(f"record {rid}: src_transcript needs source word end times",
                        reason="no_source_word_times")
    src_turn = turn_schedule(ends, n_chunks, spec.chunk_ms)

  blocks = []
  for t in range(n_chunks):
    runs = [(np.full((spec.slots_per_chunk,), tokmod.AUDIO, np.int32), 0, t, 1)]
    if src_turn is not None:
      sw = [w for w, tt in zip(rec["src_words"], src_turn) if tt == t]
      if sw:
        runs.append(([tokmod.SRC] + tok.encode_text(join_words(sw, src_lang)), 1, t, 0))
    idx = np.nonzero(turn_of_word == t)[0]
    if idx.size:
      a, b = int(idx[0]), int(idx[-1]) + 1
      runs.append(([tokmod.TEXT] + tok.encode_text(join_words(words[a:b], tgt_lang)), 1, t,
                   0))
      if bounds is not None:
        fa, fb = int(bounds[a]), int(bounds[b])
        if fb <= fa:
          raise FormatError(f"record {rid}: target words {a}..{b - 1} have no codec "
                            f"frames", reason="words_without_codec_frames")
        runs.append(([tokmod.SPEECH], 1, t, 0))
        runs.append((tok.speech_ids(codes[fa:fb]), 1, t, 0))
    runs.append(([tokmod.EOT], 1, t, 0))
    blocks.append(runs)
  return simul_prompt_ids(tok, src_lang, tgt_lang), blocks


def _block_len(runs) -> int:
  return sum(int(np.size(r[0])) for r in runs)


def simul_example(rec: Mapping[str, Any], tok, spec: StreamSpec, *, tgt_codes=None,
                  policy: str = "alignment", k: int = 3) -> dict:
  """The interleaved stream `[A_0] Y_0 … [A_{N-1}] Y_{N-1} <eos>` of one record.

  With `spec.max_len`, a stream that does not fit is cut after the last whole turn that
  fits (no `<eos>`: the stream continues); the audio is cut to the kept chunks.
  (`simul_windows` trains every turn of such a stream instead.)
  """
  prompt, blocks = _simul_turns(rec, tok, spec, tgt_codes=tgt_codes, policy=policy, k=k)
  n_chunks = len(blocks)
  seq = _Seq()
  seq.add(prompt, 0, -1)
  kept_chunks, truncated = 0, False
  for t, runs in enumerate(blocks):
    start = seq.mark()
    for ids, loss, chunk, slot in runs:
      seq.add(ids, loss, chunk, slot)
    if spec.max_len is not None and len(seq) > spec.max_len:
      seq.truncate(start)
      truncated = True
      break
    kept_chunks = t + 1
  if kept_chunks == 0:
    raise FormatError(f"record {_rid(rec)}: the prompt and first turn do not fit max_len="
                      f"{spec.max_len}", reason="first_turn_too_long")
  if not truncated:
    if spec.max_len is not None and len(seq) + 1 > spec.max_len:
      truncated = True
    else:
      seq.add([tokmod.EOS], 1, n_chunks - 1)
  audio = padded_audio(rec["src_audio"], kept_chunks * spec.slots_per_chunk, spec)
  return seq.finish(audio, "simul")


@dataclasses.dataclass(frozen=True)
class Window:
  """One training example cut from a SIMUL stream: chunks [first, own) are context (in
  the sequence and the audio, no loss), chunks [own, end) are its own turns (loss)."""
  example: dict
  first: int
  own: int
  end: int
  num_chunks: int

  @property
  def whole(self) -> bool:
    """The window carries the whole source audio (a CTC transcript target is valid)."""
    return self.first == 0 and self.end == self.num_chunks


def window_bounds(prompt_len: int, block_lens: Sequence[int], max_len: int,
                  context_chunks: int) -> list[tuple[int, int, int]]:
  """Cuts a stream into windows `(first, own, end)` of at most `max_len` tokens.

  Rule: windows follow each other (window i+1 owns the chunks from where window i's own
  chunks end), so every turn is a loss target in exactly one window. A window holds the
  prompt, then as context the `context_chunks` chunks (slots and turns) just before its
  first own chunk (fewer at the start of the stream, or when they would leave no room for
  the first own turn), then as many whole own turns as fit; the last window also holds
  `<eos>`. Raises ValueError naming the chunk when a turn does not fit even alone.
  """
  n = len(block_lens)
  cum = np.concatenate([[0], np.cumsum(block_lens)]).astype(np.int64)
  out, own = [], 0
  while own < n:
    eos = lambda t: 1 if t == n - 1 else 0  # noqa: E731
    c = min(int(context_chunks), own)
    need = lambda c: prompt_len + int(cum[own] - cum[own - c]) + int(block_lens[own]) + eos(own)  # noqa: E731,E501
    while c > 0 and need(c) > max_len:
      c -= 1
    if need(0) > max_len:
      raise ValueError(f"turn {own} ({block_lens[own]} tokens + the {prompt_len}-token "
                       f"prompt) does not fit max_len={max_len}")
    length, end = prompt_len + int(cum[own] - cum[own - c]), own
    while end < n and length + block_lens[end] + eos(end) <= max_len:
      length += int(block_lens[end])
      end += 1
    out.append((own - c, own, end))
    own = end
  return out


def simul_windows(rec: Mapping[str, Any], tok, spec: StreamSpec, *, tgt_codes=None,
                  policy: str = "alignment", k: int = 3,
                  context_chunks: int = 4) -> list[Window]:
  """Every turn of a record's SIMUL stream as a loss target, in windows of `max_len`.

  A stream that fits `spec.max_len` (with its `<eos>`) is one window: exactly
  `simul_example`'s sequence. A longer one (a talk) is cut at turn boundaries by
  `window_bounds`: each window starts with the prompt, carries up to `context_chunks`
  preceding chunks (their audio slots and turns, loss 0) and then its own turns (the
  loss); its `audio` rows are the chunks it covers (context + own), cut from the source
  at the first context chunk, so the encoder sees the source from that point on.
  `chunk_index` stays the chunk of the whole stream; `positions` restart at 0.
  """
  prompt, blocks = _simul_turns(rec, tok, spec, tgt_codes=tgt_codes, policy=policy, k=k)
  n = len(blocks)
  lens = [_block_len(b) for b in blocks]
  if spec.max_len is None or len(prompt) + sum(lens) + 1 <= spec.max_len:
    return [Window(simul_example(rec, tok, spec, tgt_codes=tgt_codes, policy=policy, k=k),
                   0, 0, n, n)]
  try:
    bounds = window_bounds(len(prompt), lens, spec.max_len, context_chunks)
  except ValueError as e:  # the first turn: the reason simul_example gives (build counts)
    first = str(e).startswith("turn 0 ")
    raise FormatError(f"record {_rid(rec)}: {e}",
                      reason="first_turn_too_long" if first else "turn_too_long") from e
  src = np.asarray(rec["src_audio"], np.int16)
  out = []
  for first, own, end in bounds:
    seq = _Seq()
    seq.add(prompt, 0, -1)
    for t in range(first, end):
      for ids, loss, chunk, slot in blocks[t]:
        seq.add(ids, loss if t >= own else 0, chunk, slot)
    if end == n:
      seq.add([tokmod.EOS], 1, n - 1)
    audio = padded_audio(src[first * spec.chunk_samples:],
                         (end - first) * spec.slots_per_chunk, spec)
    out.append(Window(seq.finish(audio, "simul"), first, own, end, n))
  return out


# ---- reading streams back ---------------------------------------------------------------
def turns(example: Mapping[str, np.ndarray]) -> list[tuple[int, np.ndarray]]:
  """The turns (chunk t, token ids of Y_t) of a SIMUL example, in order."""
  tok_ids = np.asarray(example["tokens"])
  slot = np.asarray(example["audio_slot_mask"]).astype(bool)
  chunk = np.asarray(example["chunk_index"])
  out: list[tuple[int, np.ndarray]] = []
  i, n = 0, tok_ids.size
  while i < n:
    if slot[i] or chunk[i] < 0:
      i += 1
      continue
    j = i
    while j < n and not slot[j] and tok_ids[j] != tokmod.EOT and tok_ids[j] != tokmod.EOS:
      j += 1
    if j < n and tok_ids[j] == tokmod.EOT:
      out.append((int(chunk[i]), tok_ids[i:j + 1]))
      i = j + 1
    else:
      i = j + 1
  return out


def check_turn(turn_ids: Sequence[int], tok, *, speech: bool = True) -> str | None:
  """None when `turn_ids` follows the turn grammar, else what is wrong.

  Grammar: `[<src> x+] <eot>` | `[<src> x+] <text> w+ <speech> s+ <eot>` (with speech)
  or `[<src> x+] <text> w+ <eot>` (`speech=False`); x, w are text ids, s speech ids in
  whole codec frames.
  """
  ids = [int(i) for i in turn_ids]
  if not ids or ids[-1] != tokmod.EOT:
    return "turn does not end with <eot>"
  body, i = ids[:-1], 0
  if body and body[0] == tokmod.SRC:
    i = 1
    while i < len(body) and tok.is_text(body[i]):
      i += 1
    if i == 1:
      return "<src> without source words"
  if i == len(body):
    return None
  if body[i] != tokmod.TEXT:
    return f"expected <text> or <eot>, got {tok.token_of(body[i])}"
  j = i + 1
  while j < len(body) and tok.is_text(body[j]):
    j += 1
  if j == i + 1:
    return "<text> without words"
  if not speech:
    return None if j == len(body) else f"unexpected {tok.token_of(body[j])} after text"
  if j == len(body) or body[j] != tokmod.SPEECH:
    return "text not followed by <speech>"
  s = body[j + 1:]
  if not s:
    return "<speech> without speech tokens"
  if not all(bool(tok.is_speech(x)) for x in s):
    return "non-speech token inside the speech part"
  if len(s) % tok.num_codebooks:
    return f"{len(s)} speech ids are not whole frames of {tok.num_codebooks} codebooks"
  return None


def describe(example: Mapping[str, np.ndarray], tok, max_tokens: int = 400) -> str:
  """Readable rendering: runs of <audio> collapsed to `[A×n]`, turns one per line."""
  ids = np.asarray(example["tokens"])[:max_tokens]
  slot = np.asarray(example["audio_slot_mask"])[:max_tokens].astype(bool)
  parts, i = [], 0
  while i < ids.size:
    if slot[i]:
      j = i
      while j < ids.size and slot[j]:
        j += 1
      parts.append(f"\n[A×{j - i}]")
      i = j
    else:
      parts.append(tok.token_of(ids[i]))
      i += 1
  return " ".join(parts).strip()
