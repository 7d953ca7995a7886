"""The compiled step's memory against the machine's (issue #12, liveinterp/common/memory.py):
XLA's estimate is read, a step that will not fit is one clear user error naming the stage
and the sizes, and a backend without the analysis never crashes the check."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from configs import micro
from liveinterp.common import cli, config as config_lib, memory

N, K, M = 64, 128, 32


def _compiled(donate=False):
  f = jax.jit(lambda a, b: (jnp.tanh(a @ b), a * 2.0),  # a's buffer is reusable if donated
              donate_argnums=(0,) if donate else ())
  return f.lower(jax.ShapeDtypeStruct((N, K), jnp.float32),
                 jax.ShapeDtypeStruct((K, M), jnp.float32)).compile()


def test_compiled_bytes_of_a_matmul_covers_its_arguments_and_outputs():
  b = memory.compiled_bytes(_compiled())
  arg_bytes = (N * K + K * M) * 4
  assert b["known"] and b["argument"] >= arg_bytes
  assert b["output"] >= N * M * 4
  assert b["total"] >= arg_bytes + N * M * 4
  assert b["total"] == b["argument"] + b["output"] - b["alias"] + b["temp"] + \
      b["generated_code"]
  assert b["donated"] == 0


def test_donated_state_is_counted_per_device():
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
  s = NamedSharding(mesh, P("d"))
  f = jax.jit(lambda st, x: (st * 2 + x.sum(), x.mean()), in_shardings=(s, None),
              out_shardings=(s, None), donate_argnums=(0,))
  c = f.lower(jax.ShapeDtypeStruct((8 * 256, 64), jnp.float32),
              jax.ShapeDtypeStruct((16, 16), jnp.float32)).compile()
  b = memory.compiled_bytes(c)
  assert b["donated"] == 256 * 64 * 4  # one device's shard of the state, not all 8
  assert b["argument"] == b["donated"] + 16 * 16 * 4


def test_an_argument_without_a_sharding_keeps_the_donated_count():
  # The train step's rng key has in_shardings None: its input sharding is None, which a
  # plain tree flatten drops (47 shardings for 48 arguments: no state size at all).
  real = _compiled(donate=True)
  info = jax.tree.leaves(real.args_info, is_leaf=lambda x: hasattr(x, "donated"))
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
  key_info = types.SimpleNamespace(_aval=jax.typeof(jax.random.key(0)), donated=False)
  fake = types.SimpleNamespace(
      memory_analysis=real.memory_analysis,
      args_info=((info[0], info[1], key_info), {}),
      input_shardings=((NamedSharding(mesh, P("d")), NamedSharding(mesh, P()), None), {}))
  b = memory.compiled_bytes(fake)
  assert b["donated"] == N * K * 4 // 8  # the donated (N, K) argument, split over 8
  with pytest.raises(memory.MemoryEstimateError, match=r"\(state 4.0 KiB, batch and other "
                                                       r"inputs "):
    memory.check_fits(fake, what="x", devices_per_host=1, override_bytes=1)


def test_check_fits_passes_with_room_and_names_stage_and_sizes_without():
  c = _compiled()
  ok = memory.check_fits(c, what="sft", devices_per_host=8, limit_fraction=0.9,
                         override_bytes=2**40)
  assert ok["fits"] and ok["need"] == 8 * ok["total"] and ok["devices"] == 8
  with pytest.raises(memory.MemoryEstimateError) as e:
    memory.check_fits(c, what="sft", devices_per_host=8, limit_fraction=0.9,
                      override_bytes=1000)
  msg = str(e.value)
  assert msg.startswith("[sft] not enough memory: the compiled train step needs ~")
  assert memory.fmt_bytes(ok["total"]) in msg and "x 8 devices" in msg
  assert "(inputs 48.0 KiB, temporaries " in msg  # nothing donated: no state part
  assert "1000 B available (train.memory_limit_gb)" in msg  # override used as is
  assert "train.batch_size" in msg and "data.seq_len" in msg
  assert cli.is_user_error(e.value)  # the CLIs print it in one line, exit code 2
  assert cli.one_line(e.value) == msg


def test_the_machine_memory_is_scaled_by_the_limit_fraction():
  c = _compiled()
  total = memory.compiled_bytes(c)["total"]
  dev = types.SimpleNamespace(platform="gpu", memory_stats=lambda: {"bytes_limit": 2 * total})
  assert memory.check_fits(c, what="x", devices_per_host=8, limit_fraction=0.9,
                           device=dev)["fits"]  # own memory per device: not x 8
  with pytest.raises(memory.MemoryEstimateError, match=r"each device has .* available "
                                                       r"\(gpu memory_stats bytes_limit x 0.4\)"):
    memory.check_fits(c, what="x", devices_per_host=8, limit_fraction=0.4, device=dev)


def test_available_bytes_falls_back_to_the_host():
  cpu = jax.devices()[0]
  n, source = memory.available_bytes(cpu)
  assert n > 0 and source in ("/proc/meminfo MemAvailable", "os.sysconf available pages")
  dev = types.SimpleNamespace(platform="gpu", memory_stats=lambda: {"bytes_limit": 1234})
  assert memory.available_bytes(dev) == (1234, "gpu memory_stats bytes_limit")
  broken = types.SimpleNamespace(platform="tpu", memory_stats=lambda: 1 / 0)
  assert memory.available_bytes(broken)[1] == source  # the host's, not a crash


@pytest.mark.parametrize("analysis", [None, types.SimpleNamespace(argument_size_in_bytes=8)])
def test_a_backend_without_the_analysis_reports_unknown_and_passes(analysis):
  fake = types.SimpleNamespace(memory_analysis=lambda: analysis)
  b = memory.compiled_bytes(fake)
  assert not b["known"] and b["total"] is None and b["donated"] is None
  r = memory.check_fits(fake, what="rl1", devices_per_host=2, limit_fraction=0.9,
                        override_bytes=1)
  assert r["fits"] is None and "unknown" in memory.summary(r, "rl1")

  def raising():
    raise NotImplementedError
  assert memory.compiled_bytes(types.SimpleNamespace(memory_analysis=raising))["total"] is None


def _train(check=True, limit=0.0):
  return ml_collections.ConfigDict(dict(memory_check=check, memory_limit_gb=limit))


def test_check_step_follows_the_config():
  c = _compiled()
  r = memory.check_step(c, _train(), what="demo")
  assert r["fits"] and r["devices"] == jax.local_device_count()
  line = memory.summary(r, "demo")
  assert line.startswith(f"[demo] step memory ~{memory.fmt_bytes(r['total'])}/device x 8 "
                         f"devices of ")
  assert line.endswith(" available (/proc/meminfo MemAvailable x 0.9)") or \
      line.endswith(" available (os.sysconf available pages x 0.9)"), line
  with pytest.raises(memory.MemoryEstimateError, match=r"^\[demo\] not enough memory"):
    memory.check_step(c, _train(limit=1e-6), what="demo")
  off = memory.check_step(c, _train(check=False, limit=1e-6), what="demo")  # only logged
  assert off["fits"] is False and "memory_check=False" in memory.summary(off, "demo",
                                                                          checked=False)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_memory_limit_gb_must_be_finite_and_not_negative(value):
  c = micro.get_config()
  config_lib.validate(c)
  c.train.memory_limit_gb = value
  with pytest.raises(config_lib.ConfigError, match="train.memory_limit_gb="):
    config_lib.validate(c)


def test_checking_before_the_first_call_compiles_once():
  # The RL trainer checks `update_jit.lower(*args).compile()` and then calls `update_jit(*args)`
  # (liveinterp/rl/trainer.py::check_update_memory): the call must reuse that compile.
  from jax._src import monitoring  # pylint: disable=g-import-not-at-top
  compiles = []

  def listen(event, _, **kw):
    if event.endswith("backend_compile_duration"):
      compiles.append(event)
  monitoring.register_event_duration_secs_listener(listen)
  try:
    _compile_then_call(compiles)
  finally:
    monitoring.unregister_event_duration_listener(listen)


def _compile_then_call(compiles):
  mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
  s = NamedSharding(mesh, P("d"))
  update = jax.jit(lambda st, x, k: (st - 0.1 * x.mean() + jax.random.normal(k), x.sum()),
                   out_shardings=(s, None), donate_argnums=(0,))
  state = jax.device_put(jnp.arange(64 * 8, dtype=jnp.float32), s)
  x, key = jnp.ones((16, 16)), jax.random.key(3)
  jax.block_until_ready((state, x, key))
  n0 = len(compiles)
  args = (state, x, key)
  memory.check_step(update.lower(*args).compile(), _train(), what="rl1")
  assert len(compiles) == n0 + 1
  new_state, _ = update(*args)
  assert len(compiles) == n0 + 1  # no second compile
  update(new_state, x, key)
  assert len(compiles) == n0 + 1


def test_every_process_stops_when_one_does_not_fit(monkeypatch):
  # Process 0 fits, process 1 (another host, less memory) does not: both must stop, or
  # process 0 would wait for process 1 in the first collective of the step.
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  sent = []

  def allgather(x):
    sent.append(int(x))
    return np.array([int(x), 1])
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
  with pytest.raises(memory.MemoryEstimateError,
                     match=r"^\[sft\] not enough memory on process\(es\) \[1\] .*: lower "
                           r"train.batch_size"):
    memory.check_step(_compiled(), _train(), what="sft")
  assert sent == [0]  # this process fits and said so
