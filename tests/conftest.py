"""Test set-up: 8 fake CPU devices *before* JAX is imported, repo root on sys.path."""

import atexit
import os
import shutil
import sys
import tempfile

# The suite compiles far more than it runs (issue #11: about half of its worker time was XLA
# compiling), so it compiles for compile speed, the same results:
# - JAX's own "disable most optimizations" switch (XLA backend optimization level 0, no
#   expensive LLVM passes): full suite 928 -> 669 s on 2 idle cores;
# - XLA:CPU's elemental emitter instead of its fusion emitters
#   (--xla_cpu_use_fusion_emitters=false; micro S2ST sharded fwd+bwd test 16.7 -> 10.1 s,
#   and kept by the processes tests start, tests/subprocess_env.py): 669 -> 510 s.
# Both are set before JAX is imported, in the environment that test subprocesses inherit.
# A file or test whose cost is running compiled steps, not compiling them, or that reads the
# compiled program, opts back in to XLA's optimizations with the `xla_optimized` marker
# (the fixtures below); benchmarks/ measure with the defaults.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_cpu_use_fusion_emitters=false"
                           + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# One persistent compilation cache per suite run, shared by the xdist workers and by the
# subprocesses tests start (train CLI, recipes, multi-process runs inherit the environment):
# an identical program compiled in several tests or processes compiles once (an XLA compile
# of a micro train step costs 40-270 s on 2 shared cores). The first pytest process of a run
# (the xdist controller, or a plain `pytest`) makes a fresh directory, exports it through
# JAX_COMPILATION_CACHE_DIR before any worker starts, and deletes it at exit; nothing carries
# over between runs. xdist workers inherit the variable and so reuse the controller's.
# Every compile of 0.2 s or more is written (JAX's default, 1 s, skips the many small
# programs a CLI subprocess compiles again at every start).
_CACHE_OWNER = "LIVEINTERP_TEST_XLA_CACHE"
if not os.environ.get(_CACHE_OWNER):  # this process starts the run: it owns the cache
  os.environ[_CACHE_OWNER] = tempfile.mkdtemp(prefix="liveinterp-test-xla-cache-")
  atexit.register(shutil.rmtree, os.environ[_CACHE_OWNER], ignore_errors=True)
_COMPILE_CACHE = os.environ[_CACHE_OWNER]
os.environ["JAX_COMPILATION_CACHE_DIR"] = _COMPILE_CACHE
os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.2"
jax.config.update("jax_compilation_cache_dir", _COMPILE_CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: long-running test (excluded by -m 'not slow')")
  config.addinivalue_line(
      "markers", "xla_optimized: compile with XLA's optimizations (a file or test that "
      "spends its time running compiled steps rather than compiling them)")


def _optimized(node):
  """Compiles inside `node` (a module or a test) with XLA's optimizations when it carries
  the `xla_optimized` marker; yields, then restores the suite's setting. In this process
  only: subprocesses follow the environment (JAX_DISABLE_MOST_OPTIMIZATIONS)."""
  before = jax.config.read("jax_disable_most_optimizations")
  if node.get_closest_marker("xla_optimized") is not None:
    jax.config.update("jax_disable_most_optimizations", False)
  try:
    yield
  finally:
    jax.config.update("jax_disable_most_optimizations", before)


@pytest.fixture(scope="module", autouse=True)
def _xla_optimized_module(request):
  """Module level first (autouse fixtures run before the module's own fixtures, so a
  module-scoped model or run built for the file compiles under the file's setting)."""
  yield from _optimized(request.node)


@pytest.fixture(autouse=True)
def _xla_optimized(request):
  yield from _optimized(request.node)


@pytest.fixture
def num_devices():
  return jax.device_count()


def skip_if_not_enough_devices(n: int):
  return pytest.mark.skipif(jax.device_count() < n, reason=f"needs {n} devices")


# Scheduling (issue #11). launch/test.sh runs `-n 3 --dist=loadfile --no-loadscope-reorder`:
# a file stays on one worker (module-scoped fixtures such as test_stages.py's stage chain
# run once), and files are handed out in collection order. Without the flag xdist orders
# files by their number of tests, so a file of many quick parametrized cases goes first and
# the stage chain could start last and leave the other workers idle at the end. Here the
# files that cost most (seconds of the last full run) are collected first,
# longest first; every other file keeps its place after them.
LONGEST_FIRST = (  # seconds: full suite at 3 workers, 2 cores, 2026-12-01
    "tests/integration/test_stages.py",              # 231: codec→pretrain→sft→eval chain
    "tests/integration/test_rl_stage.py",            # 155
    "tests/integration/test_benchmarks.py",          # 137
    "tests/integration/test_replay.py",              # 122
    "tests/integration/test_audio_reliance.py",      # 106
    "tests/unit/rl/test_update.py",                  # 74
    "tests/integration/test_train_multiprocess.py",  # 66
    "tests/unit/inference/test_streaming.py",        # 58
    "tests/integration/test_train_cli.py",           # 51
    "tests/unit/serving/test_export.py",             # 46
    "tests/unit/models/test_llm.py",                 # 37
    "tests/unit/serving/test_server.py",             # 35
    "tests/unit/models/test_s2st.py",                # 32
    "tests/unit/serving/test_server_sampling.py",    # 29
    "tests/unit/inference/test_turn_rows.py",        # 26
    "tests/unit/inference/test_translate_cli.py",    # 26
    "tests/unit/models/test_codec.py",               # 26
    "tests/unit/models/test_conformer.py",           # 23
    "tests/unit/inference/test_codec_tail.py",       # 22
    "tests/unit/test_serving_memory.py",             # 21
)


def pytest_collection_modifyitems(session, config, items):
  del session, config
  rank = {f: i for i, f in enumerate(LONGEST_FIRST)}
  key = lambda it: rank.get(it.nodeid.split("::", 1)[0], len(rank))  # noqa: E731
  items[:] = sorted(items, key=key)  # stable: tests keep their order within a file


# Where the suite's time goes (issue #11): with LIVEINTERP_TEST_COMPILE_LOG=<file>, every
# test phase (setup/call/teardown) appends one JSON line: wall seconds, and the seconds this
# process spent tracing, lowering and compiling with XLA (JAX's monitoring events), with the
# number of XLA compiles and persistent-cache hits, and the names of the compiles of 1 s or
# more ("big"). Compiles inside subprocesses a test starts
# count as wall time only. `python -m tests.compile_report <file>` sums it per file.
_COMPILE_LOG = os.environ.get("LIVEINTERP_TEST_COMPILE_LOG")
_COMPILE_EVENTS = {"/jax/core/compile/backend_compile_duration": "xla_s",
                   "/jax/core/compile/jaxpr_trace_duration": "trace_s",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s"}
_phase_totals: dict = {}


def _on_duration(event: str, secs: float, fun_name: str = "?", **_):
  key = _COMPILE_EVENTS.get(event)
  if key is not None:
    _phase_totals[key] = _phase_totals.get(key, 0.0) + secs
    if key == "xla_s":
      _phase_totals["compiles"] = _phase_totals.get("compiles", 0) + 1
      _xla_events.append((fun_name, secs))
      if secs >= 1.0:  # the programs worth a look, by name
        _phase_totals.setdefault("big", []).append([fun_name, round(secs, 2)])


_xla_events: list = []  # (program, seconds) of every XLA compile of this process


def _decoder_key(dec, kind: str, state, n: int = 0) -> str:
  """What makes a streaming decoder program differ: DecodeSpec without the networks, the
  batch, donation, and the state's key layout (one key, or one per row as servers use)."""
  import dataclasses
  spec = {f.name: getattr(dec.spec, f.name) for f in dataclasses.fields(dec.spec)
          if f.name not in ("graphdef", "layout")}
  g = spec.pop("grammar")
  spec["grammar"] = None if g is None else (g.allow_src, g.speech)
  batch, keys = int(state.chunks.shape[0]), tuple(state.rng.shape)
  return (f"{kind}(B={batch}{f', N={n}' if n else ''}, donate={dec.donate}, "
          f"rng={keys}, {spec})")


def _watch_decoder_compiles():
  """Logs which decoder settings compile the streaming step / scan ("decoder" entries:
  [settings, seconds]), so test files can be pointed at one shared setting."""
  from liveinterp.inference import decoder as decoder_lib
  cls = decoder_lib.StreamingDecoder

  def watch(kind, method):
    def wrapped(self, state, audio, *a, **kw):
      start = len(_xla_events)
      out = method(self, state, audio, *a, **kw)
      secs = sum(s for name, s in _xla_events[start:] if "_pure" in name)
      if secs:
        n = int(getattr(audio, "shape", (0,))[0]) if kind == "scan" else 0
        _phase_totals.setdefault("decoder", []).append(
            [_decoder_key(self, kind, state, n), round(secs, 2)])
      return out
    return wrapped
  cls.step = watch("step", cls.step)
  cls.scan = watch("scan", cls.scan)


def _on_event(event: str, **_):
  if event == "/jax/compilation_cache/cache_hits":
    _phase_totals["cache_hits"] = _phase_totals.get("cache_hits", 0) + 1


if _COMPILE_LOG:
  import jax.monitoring as _monitoring
  _monitoring.register_event_duration_secs_listener(_on_duration)
  _monitoring.register_event_listener(_on_event)
  _watch_decoder_compiles()

  def _timed_phase(item, phase):
    import json
    import time
    _phase_totals.clear()
    t0 = time.perf_counter()
    yield
    row = {"nodeid": item.nodeid, "phase": phase,
           "wall_s": round(time.perf_counter() - t0, 3),
           **{k: round(v, 3) if isinstance(v, float) else v for k, v in _phase_totals.items()}}
    with open(_COMPILE_LOG, "a") as f:
      f.write(json.dumps(row) + "\n")

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_setup(item):
    yield from _timed_phase(item, "setup")

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_call(item):
    yield from _timed_phase(item, "call")

  @pytest.hookimpl(hookwrapper=True)
  def pytest_runtest_teardown(item, nextitem):
    del nextitem
    yield from _timed_phase(item, "teardown")
