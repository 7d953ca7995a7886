"""Evaluation plots (matplotlib, Agg): the latency-quality scatter of the report's
systems and the first utterances' emission timelines over the source waveform."""

from __future__ import annotations

import os

import numpy as np


def write_plots(report, records, results, sample_rate: int, out_dir: str):
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
