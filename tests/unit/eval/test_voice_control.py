"""Voice-lost control (issue #10): the same speech in another speaker's voice."""

import numpy as np
import pytest

from data_pipelines.speakers import get_speaker
from data_pipelines.synthesis import synthesize
from liveinterp.eval import speaker_similarity as V

SPEAKERS = ["spk12", "spk15", "spk03", "spk09"]  # m1 low, f1 high, m4, f3
SENTENCES = ["The cat sat on the mat.", "I want to go home now."]


@pytest.fixture(scope="module")
def audio():
  return {(s, j): synthesize(t, "en", get_speaker(s)).audio.astype(np.float32) / 32768.0
          for s in SPEAKERS for j, t in enumerate(SENTENCES)}


def test_control_partners_deterministic_other_speaker():
  ids = ["a", "a", "b", "a", "c"]
  assert V.control_partners(ids) == [2, 2, 3, 4, 0]
  assert V.control_partners(["a", "a"]) == [None, None]
  assert V.control_partners([]) == []


def test_margin_positive_with_voice_and_zero_without(audio):
  ids = SPEAKERS
  partners = V.control_partners(ids)
  sources = [audio[(s, 0)] for s in ids]
  outputs = [audio[(s, 1)] for s in ids]             # sentence 1 in the own voice
  controls = [audio[(ids[p], 1)] for p in partners]  # same content, partner's voice
  r = V.voice_control(outputs, controls, sources, ids)
  assert r["n"] == 4 and r["skipped"] == 0 and r["items"] == [0, 1, 2, 3]
  assert r["margin"] > 0.1 and r["positive_rate"] == 1.0
  assert r["margin"] == pytest.approx(r["own_speaker_cos"] - r["control_cos"])
  assert r["margin_quantiles"]["min"] > 0
  assert len(r["margins"]) == 4
  # an output that ignores the embedding: the "output" is the control itself
  lost = V.voice_control(controls, controls, sources, ids)
  assert lost["margin"] == pytest.approx(0.0, abs=1e-6)
  assert lost["positive_rate"] == 0.0


def test_skipping_and_nan_rules(audio):
  ids = SPEAKERS[:2]
  sources = [audio[(s, 0)] for s in ids]
  outputs = [np.zeros(800, np.float32), audio[(ids[1], 1)]]   # too short / silent
  controls = [audio[(ids[1], 1)], None]                        # no control for item 1
  r = V.voice_control(outputs, controls, sources, ids)
  assert r["n"] == 0 and r["skipped"] == 2 and r["skipped_items"] == [0, 1]
  assert np.isnan(r["margin"]) and np.isnan(r["own_speaker_cos"])
  assert np.isnan(r["positive_rate"]) and np.isnan(r["margin_quantiles"]["median"])
  # a silent control is skipped, not scored
  r = V.voice_control([audio[(ids[0], 1)]], [np.zeros(16000, np.float32)], sources[:1],
                      ids[:1])
  assert r["skipped_items"] == [0]
  bad = audio[(ids[0], 1)].copy()
  bad[10] = np.nan
  with pytest.raises(ValueError, match="output 0"):
    V.voice_control([bad], [audio[(ids[1], 1)]], sources[:1], ids[:1])
  with pytest.raises(ValueError, match="control 0"):
    V.voice_control([audio[(ids[0], 1)]], [bad], sources[:1], ids[:1])
  with pytest.raises(ValueError, match="source 0"):
    V.voice_control([audio[(ids[0], 1)]], [audio[(ids[1], 1)]], [np.zeros(10, np.float32)],
                    ids[:1])
  with pytest.raises(ValueError, match="lengths must match"):
    V.voice_control([audio[(ids[0], 1)]], [], sources[:1], ids[:1])


# ---- evaluate.voice_lost_controls on a (random, shallow micro) codec -----------------
def test_voice_lost_controls_decode_with_partner_embedding(audio):
  import jax.numpy as jnp
  from types import SimpleNamespace
  from flax import nnx
  from liveinterp import evaluate
  from tests.unit.models.test_voice import _encoder
  from tests.unit.models.test_codec import shallow_codec
  _, codec = shallow_codec()
  _, enc = _encoder()
  hop = int(codec.hop)
  speech = audio[("spk12", 1)][:7 * hop + 17]           # not a whole number of hops
  results = [SimpleNamespace(speech=speech), SimpleNamespace(speech=np.zeros(0, np.float32)),
             SimpleNamespace(speech=speech)]
  records = [{"speaker": "spk12", "src_audio": (audio[("spk12", 0)] * 32767).astype(np.int16)},
             {"speaker": "spk12", "src_audio": (audio[("spk12", 0)] * 32767).astype(np.int16)},
             {"speaker": "spk15", "src_audio": (audio[("spk15", 0)] * 32767).astype(np.int16)}]
  win = 16000
  ctl, res = evaluate.voice_lost_controls(codec, enc, results, records, 16000, win,
                                          bucket_s=0.5)
  assert ctl[1] is None and res[1] is None                  # no speech
  assert ctl[0].shape == res[0].shape == (7 * hop,)
  # golden: an unpadded decode of the same codes with the partner's (item 2: spk15) and
  # with the own embedding; padding to the bucket does not change the kept samples
  ref = lambda i: evaluate._speaker_ref(records[i]["src_audio"].astype(np.float32)  # noqa: E731
                                        / 32768.0, win)
  (r2, m2), (r0, m0) = ref(2), ref(0)

  @nnx.jit
  def golden(c, e, x, r, m):  # both embeddings at once, no padding
    codes = c.encode(x)
    return codes, c.decode(jnp.repeat(codes, 2, axis=0), e.embed_audio(r, m))
  codes, want = golden(codec, enc, jnp.asarray(speech[None, :7 * hop]),
                       jnp.asarray(np.concatenate([r2, r0])),
                       jnp.asarray(np.concatenate([m2, m0])))
  want = np.asarray(want)
  for got, w in ((ctl[0], want[0]), (res[0], want[1])):
    np.testing.assert_allclose(got, w, atol=1e-4 * np.abs(want).max())
  assert np.abs(ctl[0] - res[0]).max() > 1e-3 * np.abs(res[0]).max()
  assert ctl[2] is not None  # item 2's partner wraps around to item 0 (spk12)
  # decoder codes, when a result carries them, are decoded directly (same audio)
  with_codes = [SimpleNamespace(speech=speech, speech_codes=np.asarray(codes[0])),
                results[1], results[2]]
  ctl2, _ = evaluate.voice_lost_controls(codec, enc, with_codes, records, 16000, win,
                                         bucket_s=0.5)
  np.testing.assert_allclose(ctl2[0], ctl[0], atol=1e-5 * np.abs(ctl[0]).max())
