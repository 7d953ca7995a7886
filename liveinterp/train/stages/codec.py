"""`codec` stage: speech codec + speaker encoder (the voice-cloning adapter), DESIGN §3.1.

Each example is a crop of one utterance (source or target speech, both in the record
speaker's voice) and a crop of a *different* utterance of the same speaker, from which
the speaker encoder makes the embedding that conditions the decoder: the tokens must
carry the content, the embedding the timbre. Loss: multi-resolution STFT + mel (+
quantizer losses); codebooks update by EMA with dead-code restarts (non-param state).

Dev evaluation: reconstruction mel distance (L1 of log-mels) and STFT loss on dev
utterances, plus codebook perplexity.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import pipelines
from liveinterp.common import reporting
from liveinterp.models import codec_losses, voice
from liveinterp.train import loop

FIELDS = ("audio", "audio_lengths", "ref_audio", "ref_audio_lengths")


def _float(x):
  return x.astype(jnp.float32) / 32768.0


def _ref_mask(batch):
  n = batch["ref_audio"].shape[1]
  return jnp.arange(n)[None, :] < batch["ref_audio_lengths"][:, None]


def make_loss_fn(loss_cfg):
  def loss_fn(model: voice.VoiceCodec, batch, rng):
    audio = _float(batch["audio"])
    out = model(audio, _float(batch["ref_audio"]), _ref_mask(batch), update=True, key=rng)
    loss, metrics = codec_losses.codec_loss(audio, out, loss_cfg)
    return loss, {k.split("/", 1)[1]: v for k, v in metrics.items() if k != "codec/loss"}
  return loss_fn


def _dev_batches(dev, config, batch: int = 8):
  """Fixed dev batches: the first `crop` of each record's source speech, with its target
  speech (same speaker, other language: a different utterance) as the voice reference."""
  sr = config.audio.sample_rate
  hop = int(np.prod(config.codec.strides))
  crop = config.data.codec_crop_ms * sr // 1000 // hop * hop
  ref = config.data.codec_ref_ms * sr // 1000
  rows = []
  for i in range(min(len(dev), config.train.eval_batches * batch)):
    rec = dev[i]
    a, r = np.asarray(rec["src_audio"], np.int16), np.asarray(rec["tgt_audio"], np.int16)
    if a.size == 0 or r.size == 0:
      continue
    audio, ref_audio = np.zeros(crop, np.int16), np.zeros(ref, np.int16)
    audio[:min(crop, a.size)] = a[:crop]
    ref_audio[:min(ref, r.size)] = r[:ref]
    rows.append(dict(audio=audio, audio_lengths=np.int32(min(crop, a.size)),
                     ref_audio=ref_audio, ref_audio_lengths=np.int32(min(ref, r.size))))
  return [{k: np.stack([r[k] for r in rows[j:j + batch]]) for k in FIELDS}
          for j in range(0, len(rows) - batch + 1, batch)] or (
              [{k: np.stack([r[k] for r in rows]) for k in FIELDS}] if rows else [])


def build(config) -> loop.Stage:
  source = pipelines.open_corpus(config, "train")
  dev = pipelines.open_corpus(config, "dev")
  cache = os.path.join(config.data.data_dir, "speaker_index_train.json") \
      if config.data.data_dir else None
  kw = dict(crop_ms=config.data.codec_crop_ms, ref_ms=config.data.codec_ref_ms)
  drops = pipelines.DropCounts()  # utterances left out (into the result as data_drops)
  ds = pipelines.make_dataset("codec", config, source, speaker_cache=cache, drops=drops,
                              **kw)
  data_iter = iter(ds)
  loss_cfg = codec_losses.CodecLossConfig.from_config(config)

  def make_data(start):
    del start
    return pipelines.report_drops_at_end(
        ({k: v for k, v in b.items() if k in FIELDS} for b in data_iter), drops,
        lambda line: reporting.console(f"[codec] {line}"))

  dev_batches = _dev_batches(dev, config)

  @jax.jit
  def dev_metrics(model, batch):
    audio = _float(batch["audio"])
    out = model(audio, _float(batch["ref_audio"]), _ref_mask(batch), update=False)
    _, m = codec_losses.codec_loss(audio, out, loss_cfg)
    return m

  def eval_fn(model, step):
    del step
    if not dev_batches:
      return {}
    vals = [jax.device_get(dev_metrics(model, jax.tree.map(jnp.asarray, b)))
            for b in dev_batches]
    return {f"eval/{k.split('/', 1)[1]}": float(np.mean([v[k] for v in vals]))
            for k in ("codec/mel", "codec/stft", "codec/perplexity", "codec/recon_loss")}

  return loop.Stage("codec", lambda rngs: voice.VoiceCodec(config, rngs=rngs),
                    make_loss_fn(loss_cfg), make_data, data_iter=data_iter, eval_fn=eval_fn,
                    info={"data_drops": drops})
