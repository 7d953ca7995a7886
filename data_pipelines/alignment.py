"""Word alignment (target word k → source words) and ready times for simultaneous SFT.

`align_corpus` trains eflomal (PyPI `eflomal`, HMM + fertility, Gibbs sampling) on the
whole corpus in both directions and symmetrises the two link sets
(grow-diag-final-and by default; intersection/union/grow-diag also available). Words
are those of `text_cleaning.tokenize_words` (jieba for Chinese) in their
`align_token` form. If eflomal cannot run (missing binary, crash) every sentence falls
back to a monotone diagonal alignment; sentences that end up with no link at all get
the diagonal too. Both are counted in the returned stats.

`ready_times`: target word k is ready when every source word it aligns to has ended,
r_k = max end time of its aligned source words; an unaligned target word takes the
ready time of its nearest aligned neighbour (the later one on a tie; the utterance end
when nothing is aligned); finally r is made non-decreasing (running max), since the
translation is written in order.

Note: eflomal's sampler has no seed option, so two runs may differ slightly; the corpus
caches its alignments so one build is used consistently.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from typing import Sequence

import numpy as np

from data_pipelines.text_cleaning import align_token

logger = logging.getLogger(__name__)
METHODS = ("intersection", "union", "grow-diag", "grow-diag-final", "grow-diag-final-and")
_NEIGHBOURS = ((-1, 0), (0, -1), (1, 0), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1))

Link = tuple[int, int]  # (src_idx, tgt_idx), Moses "i-j" order


def symmetrize(fwd: set[Link], rev: set[Link], method: str = "grow-diag-final-and"
               ) -> set[Link]:
  """Combines forward and reverse (src_idx, tgt_idx) link sets.

  grow-diag: start from the intersection and repeatedly add union links adjacent
  (incl. diagonally) to a current link whose source or target word is still unaligned.
  final: then add remaining union links whose source or target word is unaligned;
  final-and: only those whose source *and* target words are both unaligned.
  """
  if method not in METHODS:
    raise ValueError(f"unknown symmetrisation {method!r}; choose one of {METHODS}")
  inter, union = fwd & rev, fwd | rev
  if method == "intersection":
    return set(inter)
  if method == "union":
    return set(union)
  links = set(inter)
  src_done = {i for i, _ in links}
  tgt_done = {j for _, j in links}
  changed = True
  while changed:
    changed = False
    for i, j in sorted(links):
      for di, dj in _NEIGHBOURS:
        cand = (i + di, j + dj)
        if cand in union and cand not in links and (
            cand[0] not in src_done or cand[1] not in tgt_done):
          links.add(cand)
          src_done.add(cand[0])
          tgt_done.add(cand[1])
          changed = True
  if method.startswith("grow-diag-final"):
    need_both = method.endswith("-and")
    for i, j in sorted(union - links):
      free_i, free_j = i not in src_done, j not in tgt_done
      if (free_i and free_j) if need_both else (free_i or free_j):
        links.add((i, j))
        src_done.add(i)
        tgt_done.add(j)
  return links


def diagonal_alignment(n_src: int, n_tgt: int) -> np.ndarray:
  """Monotone diagonal alignment int32[n_tgt, 2] of (tgt_idx, src_idx): target word k
  aligns to source word ceil((k+1)·n_src/n_tgt) − 1, so the last words align."""
  if n_src == 0 or n_tgt == 0:
    return np.zeros((0, 2), np.int32)
  k = np.arange(n_tgt)
  j = np.ceil((k + 1) * n_src / n_tgt).astype(np.int64) - 1
  return np.stack([k, np.clip(j, 0, n_src - 1)], axis=1).astype(np.int32)


def _parse_links(text: str, n_sent: int) -> list[set[Link]]:
  lines = text.splitlines()
  if len(lines) < n_sent:
    raise RuntimeError(f"eflomal wrote {len(lines)} link lines for {n_sent} sentences")
  out = []
  for line in lines[:n_sent]:
    links = set()
    for tok in line.split():
      i, j = tok.split("-")
      links.add((int(i), int(j)))
    out.append(links)
  return out


def run_eflomal(src_tokens: Sequence[Sequence[str]], tgt_tokens: Sequence[Sequence[str]],
                n_samplers: int = 3) -> tuple[list[set[Link]], list[set[Link]]]:
  """Forward and reverse (src_idx, tgt_idx) links of every sentence pair from eflomal.

  Every sentence must have at least one token (eflomal cannot align empty lines).
  """
  import eflomal
  if len(src_tokens) != len(tgt_tokens):
    raise ValueError(f"{len(src_tokens)} source vs {len(tgt_tokens)} target sentences")
  for i, (s, t) in enumerate(zip(src_tokens, tgt_tokens)):
    if not s or not t:
      raise ValueError(f"sentence {i} has an empty side; eflomal needs tokens")
  src_text = "".join(" ".join(s) + "\n" for s in src_tokens)
  tgt_text = "".join(" ".join(t) + "\n" for t in tgt_tokens)
  with tempfile.TemporaryDirectory(prefix="eflomal") as d:
    fwd_path, rev_path = os.path.join(d, "fwd"), os.path.join(d, "rev")
    eflomal.Aligner(n_samplers=n_samplers).align(
      io.StringIO(src_text), io.StringIO(tgt_text),
      links_filename_fwd=fwd_path, links_filename_rev=rev_path, quiet=True)
    with open(fwd_path, encoding="utf-8") as f:
      fwd = _parse_links(f.read(), len(src_tokens))
    with open(rev_path, encoding="utf-8") as f:
      rev = _parse_links(f.read(), len(src_tokens))
  return fwd, rev


def _tokens(words: Sequence[str]) -> list[str]:
  return ["".join(align_token(w).split()) or "_" for w in words]


def align_corpus(src_words: Sequence[Sequence[str]], tgt_words: Sequence[Sequence[str]],
                 method: str = "grow-diag-final-and", use_eflomal: bool = True
                 ) -> tuple[list[np.ndarray], dict]:
  """Aligns every sentence pair of a corpus (all splits together).

  src_words, tgt_words: the words of each sentence (`tokenize_words(...).text`).
  Returns (alignments, stats): alignments[i] is int32[k, 2] of (tgt_idx, src_idx),
  sorted; stats has "method" ("eflomal+<sym>" or "diagonal"), "sentences",
  "fallback_reason" (why eflomal did not run, or None), "diagonal_sentences" (how many
  sentences got the diagonal fallback) and "links".
  """
  n = len(src_words)
  if len(tgt_words) != n:
    raise ValueError(f"{n} source vs {len(tgt_words)} target sentences")
  stats = {"method": f"eflomal+{method}", "sentences": n, "fallback_reason": None,
           "diagonal_sentences": 0, "links": 0}
  fwd = rev = None
  usable = [i for i in range(n) if src_words[i] and tgt_words[i]]
  if not use_eflomal:
    stats["fallback_reason"] = "eflomal disabled"
  elif usable:
    try:
      fwd, rev = run_eflomal([_tokens(src_words[i]) for i in usable],
                             [_tokens(tgt_words[i]) for i in usable])
    except Exception as e:  # noqa: BLE001 — any failure falls back, and is reported
      logger.warning("eflomal failed (%s); using diagonal alignments", e)
      stats["fallback_reason"] = f"{type(e).__name__}: {e}"
  if fwd is None:
    stats["method"] = "diagonal"
  by_sentence = {}
  if fwd is not None:
    for k, i in enumerate(usable):
      links = symmetrize(fwd[k], rev[k], method)
      ns, nt = len(src_words[i]), len(tgt_words[i])
      links = {(a, b) for a, b in links if 0 <= a < ns and 0 <= b < nt}
      if links:
        by_sentence[i] = np.asarray(sorted((b, a) for a, b in links), np.int32)
  out = []
  for i in range(n):
    a = by_sentence.get(i)
    if a is None:
      a = diagonal_alignment(len(src_words[i]), len(tgt_words[i]))
      stats["diagonal_sentences"] += 1
    stats["links"] += len(a)
    out.append(a)
  return out, stats


def ready_times(alignment: np.ndarray, n_tgt: int, src_word_end_ms: np.ndarray,
                utterance_end_ms: float, monotone: bool = True) -> np.ndarray:
  """Ready time float32[n_tgt] (ms in the source audio) of each target word.

  alignment: int32[k, 2] of (tgt_idx, src_idx); src_word_end_ms: float32[n_src].
  A word is ready when the source words aligned to it have ended (an unaligned word:
  when its nearest aligned neighbours are) and, with `monotone`, every earlier target
  word is ready too (the target order is kept); `monotone=False` gives each word's own
  time (benchmarks/latency_bound.py: a translation that follows the source order).
  """
  src_end = np.asarray(src_word_end_ms, np.float64)
  r = np.full(n_tgt, np.nan)
  for t, s in np.asarray(alignment).reshape(-1, 2):
    if not (0 <= t < n_tgt and 0 <= s < len(src_end)):
      raise ValueError(f"alignment link ({t}, {s}) out of range for {n_tgt} target and "
                       f"{len(src_end)} source words")
    r[t] = src_end[s] if np.isnan(r[t]) else max(r[t], src_end[s])
  aligned = np.nonzero(~np.isnan(r))[0]
  if len(aligned) == 0:
    return np.full(n_tgt, utterance_end_ms, np.float32)
  for k in np.nonzero(np.isnan(r))[0]:
    d = np.abs(aligned - k)
    nearest = aligned[d == d.min()]
    r[k] = max(r[j] for j in nearest)
  return (np.maximum.accumulate(r) if monotone else r).astype(np.float32)
