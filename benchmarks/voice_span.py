"""Voice span (issue #10): whose voice do the turns of a two-speaker talk speak in, with the
speaker window ending at the answered chunk (d = 0) or d chunks before it?

    nice -n 5 python -m benchmarks.voice_span --run_dir=runs/tiny_v3 [--lags=0,1,2]

1. The lag the data asks for: on the test split, per aligned (target word, source word)
   pair, the chunks between the chunk holding the source word's end and the chunk whose
   turn writes the target word (`stream_format.ready_times` + `turn_schedule`, the SFT
   targets' schedule): median, mean, histogram. `stream.voice_lag_chunks` is its median.
2. For each d: N two-speaker talks (`eval.inputs.two_speaker_talks`, as
   `liveinterp.evaluate --multi_speaker_talks`) streamed through the trained model and
   scored by `streaming_metrics.voice_multi` (attribution accuracy and margin), and N
   single-speaker test utterances scored by the voice-lost control
   (`speaker_similarity.voice_control`: own-vs-control margin).

Prints a table and writes benchmarks/results/voice_span.json (after every d, so a
partial run keeps what it measured). Reads the run directory, never writes into it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks import common  # noqa: E402

_F = {}


def _define_flags():
  _F.update(
      run_dir=flags.DEFINE_string("run_dir", "runs/tiny_v3", "trained run (read-only)"),
      data_dir=flags.DEFINE_string("data_dir", "", "corpus build (default <run_dir>/../data)"),
      config=flags.DEFINE_string("config", "configs/tiny.py:sft", "config spec"),
      lags=flags.DEFINE_string("lags", "0,1,2", "voice_lag_chunks values to compare"),
      n=flags.DEFINE_integer("n", 8, "two-speaker talks and single-speaker utterances"),
      out=flags.DEFINE_string("out", os.path.join(ROOT, "benchmarks", "results",
                                                  "voice_span.json"), "JSON output"),
  )


def data_lag(records, chunk_ms: int, sample_rate: int) -> dict:
  """Chunks from each aligned source word's end to the turn writing its target word."""
  from data_pipelines import stream_format as sfmt
  lags = []
  for r in records:
    n_chunks = int(np.ceil(len(r["src_audio"]) / (sample_rate * chunk_ms / 1000)))
    turn = sfmt.turn_schedule(sfmt.ready_times(r, "alignment"), n_chunks, chunk_ms)
    ends = np.asarray(r["src_word_end_ms"], np.float64)
    for t, s in np.asarray(r["alignment"], np.int64).reshape(-1, 2):
      src_chunk = max(0, int(np.ceil(ends[s] / chunk_ms)) - 1)
      lags.append(int(turn[t]) - src_chunk)
  lags = np.asarray(lags, np.int64)
  hist = np.bincount(np.maximum(lags, 0), minlength=6)
  return {"pairs": int(lags.size), "median": float(np.median(lags)),
          "mean": float(lags.mean()),
          "share_by_lag": {str(k): float(hist[k] / lags.size) for k in range(6)}}


def main(argv):
  del argv
  from data_pipelines import build, pipelines, tokenizer as tokmod
  from liveinterp import evaluate
  from liveinterp.common import config as config_lib
  from liveinterp.eval import inputs, speaker_similarity as sim, streaming_metrics as sm
  from liveinterp.inference import decoder as decoder_lib, loading, session as session_lib
  from liveinterp.train.stage_configs import stage_config

  run_dir = os.path.abspath(_F["run_dir"].value)
  data_dir = os.path.abspath(_F["data_dir"].value or os.path.join(os.path.dirname(run_dir),
                                                                  "data"))
  lags = [int(x) for x in _F["lags"].value.split(",") if x.strip()]
  n = int(_F["n"].value)
  base = config_lib.load(_F["config"].value)
  cfg = stage_config("tiny", "sft", run_dir, data_dir, build.tokenizer_prefix_for(data_dir, base))
  sr, chunk_ms = int(cfg.audio.sample_rate), int(cfg.stream.chunk_ms)
  source = pipelines.open_corpus(cfg, "test")
  all_recs = [source[i] for i in range(len(source))]
  payload = {"run_dir": os.path.relpath(run_dir, ROOT), "n": n, "chunk_ms": chunk_ms,
             "config_voice_lag_chunks": int(decoder_lib.voice_lag_for(cfg)),
             "data_lag_chunks": data_lag(all_recs, chunk_ms, sr), "rows": [],
             "environment": common.environment()}
  print(f"data lag (test split, {payload['data_lag_chunks']['pairs']} aligned pairs): "
        f"median {payload['data_lag_chunks']['median']} chunks, mean "
        f"{payload['data_lag_chunks']['mean']:.2f}", flush=True)
  records = all_recs[:64]                       # as `liveinterp.evaluate` (max_examples)
  talks = inputs.two_speaker_talks(records, n)
  singles = records[:n]
  tok = tokmod.Tokenizer.load(cfg.tokenizer.model_path)
  model, codec, speaker = loading.build_models(cfg, workdir=run_dir, llm_stage="sft")
  for d in lags:
    t0 = time.time()
    dec = decoder_lib.StreamingDecoder(model, codec, speaker, tok, cfg,
                                       prompt_ids=decoder_lib.prompt_for(cfg, tok),
                                       speech_turns=decoder_lib.speech_turns_for(cfg),
                                       voice_lag_chunks=d)
    with evaluate.without_mesh():
      session_lib.warmup(dec, n)
    res_t = evaluate.translate_records(dec, talks, tok, batch=n)
    multi = sm.voice_multi(res_t, talks, sr)
    res_s = evaluate.translate_records(dec, singles, tok, batch=n)
    outs = [r.speech if r.speech is not None else np.zeros(0, np.float32) for r in res_s]
    srcs = [np.asarray(r["src_audio"], np.float32) / 32768.0 for r in singles]
    ids = [str(r["speaker"]) for r in singles]
    ctl, _ = evaluate.voice_lost_controls(codec, speaker, res_s, singles, sr,
                                          dec.spec.speaker_samples)
    single = sim.voice_control(outs, ctl, srcs, ids, sr=sr)
    row = {"voice_lag_chunks": d, "talks": len(talks),
           "attribution_accuracy": multi["accuracy"], "attribution_margin": multi["margin"],
           "attributed_segments": multi["n"], "ambiguous_segments": multi["ambiguous"],
           "skipped_segments": multi["skipped"],
           "single_own_cos": single["own_speaker_cos"],
           "single_control_cos": single["control_cos"],
           "single_margin": single["margin"], "single_n": single["n"],
           "seconds": round(time.time() - t0, 1)}
    payload["rows"].append(row)
    common.write_json(_F["out"].value, payload)
    print(f"d={d} done in {row['seconds']}s", flush=True)
  common.print_table(payload["rows"], ["voice_lag_chunks", "talks", "attribution_accuracy",
                                       "attribution_margin", "attributed_segments",
                                       "ambiguous_segments", "single_own_cos",
                                       "single_control_cos", "single_margin", "seconds"])
  print(f"wrote {_F['out'].value}")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
