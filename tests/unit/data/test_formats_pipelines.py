"""grain pipelines: shapes/dtypes per stage, packing invariants, the codec speaker
reference, per-process slices, global arrays on 8 devices, exact iterator restore (grain
state and orbax)."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import pipelines as pl
from data_pipelines import stream_format as sfmt
from data_pipelines import tokenizer as tokmod
from liveinterp.common import mesh as mesh_lib, sharding
from tests.unit.data import test_formats_fixtures as fx

B = 8


@pytest.fixture(scope="module")
def env():
  return fx.micro_source("train"), fx.micro_tokenizer(), fx.micro_config()


def _dataset(stage, env, **kw):
  src, tok, cfg = env
  if stage != "codec":
    kw.setdefault("speech_placeholder", "zeros")
  return pl.make_dataset(stage, cfg, src, tok, shard=pl.shard_options(0, 1), **kw)


def _segments(row):
  """The packed examples of a row: dicts of tokens/masks/positions and their audio."""
  out = []
  for s in range(1, int(row["segment_ids"].max()) + 1):
    m, am = row["segment_ids"] == s, row["audio_segment_ids"] == s
    seg = {k: row[k][m] for k in ("tokens", "audio_slot_mask", "loss_mask", "positions",
                                  "chunk_index")}
    seg["audio"] = row["audio"][am]
    out.append(seg)
  return out


def test_codec_pipeline_shapes_and_reference(env):
  src, _, cfg = env
  it = iter(_dataset("codec", env))
  b = next(it)
  assert b["audio"].shape == (B, 16000) and b["audio"].dtype == np.int16
  assert b["ref_audio"].shape == (B, 32000) and b["ref_audio"].dtype == np.int16
  for k in ("audio_lengths", "ref_audio_lengths", "speaker_id"):
    assert b[k].shape == (B,) and b[k].dtype == np.int32
  assert np.all(b["audio_lengths"] > 0) and np.any(b["audio"])
  # The reference is a crop of a *different* utterance of the *same* speaker.
  speakers = pl.speaker_index(src)
  tf = pl.CodecTransform(src, speakers, 16000, 32000, 320)
  names = sorted(speakers)
  rng = np.random.default_rng(0)
  for spk in names[:3]:
    for rec_idx, field in speakers[spk][:3]:
      out = tf.random_map((spk, rec_idx, field), rng)
      assert out["speaker_id"] == names.index(spk)
      ref = out["ref_audio"][:out["ref_audio_lengths"]].tobytes()
      hits = [u for u in speakers[spk]
              if src[u[0]][u[1]].tobytes().find(ref) % 2 == 0]
      assert hits and (rec_idx, field) not in hits
      crop = out["audio"][:out["audio_lengths"]].tobytes()
      assert src[rec_idx][field].tobytes().find(crop) % 2 == 0


def test_pretrain_pipeline_mixes_the_four_tasks(env):
  _, tok, cfg = env
  it = iter(_dataset("pretrain", env))
  seen = set()
  for _ in range(4):
    b = next(it)
    L = cfg.data.seq_len
    for k in sfmt.TOKEN_FIELDS + ("audio_segment_ids",):
      assert b[k].shape == (B, L) and b[k].dtype == np.int32, k
    assert b["audio"].shape == (B, L, 1280) and b["audio"].dtype == np.int16
    for r in range(B):
      row = {k: v[r] for k, v in b.items()}
      for seg in _segments(row):
        toks, slots = seg["tokens"], seg["audio_slot_mask"]
        assert toks[0] == tokmod.BOS and toks[-1] == tokmod.EOS
        np.testing.assert_array_equal(seg["positions"], np.arange(toks.size))
        assert seg["audio"].shape == (slots.sum(), 1280)  # k-th <audio> <-> audio[k]
        assert not np.any(seg["loss_mask"][slots == 1])
        seen.add(tok.token_of(toks[1]))
  assert seen == {"<asr>", "<st>", "<tts>", "<s2st>"}


def test_sft_pipeline_rows_hold_valid_streams(env):
  _, tok, cfg = env
  it = iter(_dataset("sft", env))
  b = next(it)
  assert b["tokens"].shape == (B, cfg.data.seq_len)
  n_turns = 0
  for r in range(B):
    row = {k: v[r] for k, v in b.items()}
    assert row["segment_ids"].max() >= 1
    for seg in _segments(row):
      assert seg["tokens"][1] == tok.task_id("simul")
      assert seg["audio"].shape == (seg["audio_slot_mask"].sum(), 1280)
      for _, y in sfmt.turns(seg):
        assert sfmt.check_turn(y, tok) is None
        n_turns += 1
  assert n_turns > B


def test_padding_mode_one_example_per_row(env):
  src, tok, cfg = env
  b = next(iter(_dataset("sft", env, packing=False, shuffle=False)))
  assert b["tokens"].shape == (B, cfg.data.seq_len)
  assert b["audio"].shape == (B, cfg.data.seq_len, 1280)
  assert np.all(b["segment_ids"].max(axis=1) == 1)
  assert np.all(b["tokens"][b["segment_ids"] == 0] == tokmod.PAD)
  # Unshuffled, the rows are the records' windows in order (one per record that fits
  # seq_len: simul_example(record)); a row's slot rows are the record's source audio
  # from the window's first chunk on, in order.
  sp = sfmt.StreamSpec.from_config(cfg, speech_placeholder="zeros")
  wins = [(w, i) for i in range(len(src)) for w in sfmt.simul_windows(
      src[i], tok, sp, context_chunks=cfg.data.window_context_chunks)][:B]
  for row, (w, i) in enumerate(wins):
    ex = w.example
    if w.whole:
      np.testing.assert_array_equal(ex["tokens"], sfmt.simul_example(src[i], tok, sp)["tokens"])
    n = ex["tokens"].size
    np.testing.assert_array_equal(b["tokens"][row, :n], ex["tokens"])
    slots = int(b["audio_segment_ids"][row].sum())
    assert slots == b["audio_slot_mask"][row].sum() == ex["audio"].shape[0]
    flat = b["audio"][row, :slots].reshape(-1)
    audio = src[i]["src_audio"][w.first * sp.chunk_samples:]
    m = min(flat.size, audio.size)
    np.testing.assert_array_equal(flat[:m], audio[:m])


def test_epoch_shuffle_is_a_fresh_permutation_each_epoch():
  ds = pl._base_dataset(list(range(23)), 7, pl.shard_options(0, 1), num_epochs=3,
                        shuffle=True)
  epochs = [[ds[e * 23 + i] for i in range(23)] for e in range(3)]
  for ep in epochs:
    assert sorted(ep) == list(range(23)) and ep != list(range(23))
  assert epochs[0] != epochs[1] != epochs[2]
  again = pl._base_dataset(list(range(23)), 7, pl.shard_options(0, 1), num_epochs=3,
                           shuffle=True)
  assert [again[i] for i in range(69)] == sum(epochs, [])


def test_speaker_index_cache(env, tmp_path):
  src, _, _ = env
  path = str(tmp_path / "speakers.json")
  a = pl.speaker_index(src, path)
  assert os.path.exists(path) and pl.speaker_index(src, path) == a
  assert all(len(v) >= 2 for v in a.values()) and a


def test_process_slices_are_disjoint():
  src = list(range(23))
  got = []
  for i in range(2):
    ds = pl._base_dataset(src, 0, pl.shard_options(i, 2), num_epochs=1, shuffle=True)
    got.append(sorted(ds[j] for j in range(len(ds))))
  assert not set(got[0]) & set(got[1]) and len(got[0]) == len(got[1]) == 11
  with pytest.raises(ValueError, match="not divisible by the 3 processes"):
    pl.local_batch_size(8, 3)


def test_global_arrays_on_8_devices(env):
  _, _, cfg = env
  assert jax.device_count() == 8
  mesh = mesh_lib.create_mesh(cfg.mesh)
  local = next(iter(_dataset("sft", env)))
  rules = sharding.rules_from_config(cfg.logical_axis_rules)
  glob = pl.make_global_batch(local, mesh, rules)
  for k, v in glob.items():
    assert v.shape == local[k].shape and v.dtype == local[k].dtype
    assert v.sharding.spec[0] in ("fsdp", ("data", "fsdp"), ("fsdp",))
    assert len(v.addressable_shards) == 8
    assert {s.data.shape[0] for s in v.addressable_shards} == {1}
    np.testing.assert_array_equal(np.asarray(v), local[k])
  gb = pl.make_global_batch(next(iter(_dataset("codec", env))), mesh, rules)
  assert gb["audio"].shape == (B, 16000) and len(gb["speaker_id"].addressable_shards) == 8


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.mark.parametrize("stage", ["codec", "pretrain", "sft"])
def test_iterator_state_restores_exactly(env, stage):
  ds = _dataset(stage, env)
  it = iter(ds)
  pl.take(it, 3)
  state = it.get_state()
  after = pl.take(it, 3)
  it2 = iter(_dataset(stage, env))
  it2.set_state(state)
  _assert_same(pl.take(it2, 3), after)
  # and a different seed gives different data
  other = pl.take(iter(_dataset(stage, env, seed=123)), 1)[0]
  first = pl.take(iter(ds), 1)[0]
  assert any(not np.array_equal(first[k], other[k]) for k in first)


def test_iterator_state_through_orbax(env, tmp_path):
  it = iter(_dataset("sft", env))
  pl.take(it, 2)
  mngr = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
  mngr.save(2, args=ocp.args.Composite(data=pl.orbax_save_args(it)))
  mngr.wait_until_finished()
  after = pl.take(it, 2)
  it2 = iter(_dataset("sft", env))
  mngr2 = ocp.CheckpointManager(str(tmp_path / "ckpt"), item_names=("data",))
  assert mngr2.latest_step() == 2
  mngr2.restore(2, args=ocp.args.Composite(data=pl.orbax_restore_args(it2)))
  _assert_same(pl.take(it2, 2), after)
  mngr.close()
  mngr2.close()
