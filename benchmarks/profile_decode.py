r"""Where the streaming decoder's per-chunk step spends its time while speaking (issue #14):
a `jax.profiler` trace of the jitted `decode_step._step_donate` on the `talk` turn of
`benchmarks.streaming_batch` (`<text>` + 8 words + `<speech>` + one chunk of speech frames +
`<eot>`, forced), parsed into the top XLA ops by self time with `profile_step`'s helpers.

    python -m benchmarks.profile_decode [--size=tiny] [--cores=1] [--batches=1,16]
        [--steps=3] [--top=15] [--profile_out=benchmarks/results/profile_decode_<size>_b<B>.json]

Each op is also put in a *part* of the step from the Python stack that built it (the HLO
module's stack frames: the innermost `liveinterp` frame, and the phase from the outer
ones): `turn/...` is the token loop (`decode_step._decode_turn`), `prefill/...` the chunk's
audio prefill, `codec`, `speaker`, `encoder`; within the LLM: `attention` (cache reads,
scores, softmax: `layers/kv_cache.py`), `cache_write`, `matmul` (`Dense`), `unembed`,
`norm`, `rotary`, `sampling` (sampling + grammar masks over the vocabulary, the turn's
buffers); `control` is the while/conditional bookkeeping no Python line owns. The stack
frames are read from the compiled module's proto with the `hlo_pb2` that tensorflow
ships; without it every op's part is `?`.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import cpu_pinning  # noqa: E402

_SIZE = flags.DEFINE_string("size", "tiny", "config recipe (configs/<size>.py)")
_CORES = flags.DEFINE_integer("cores", 1, "CPU cores to pin to (0 = no pinning)")
_BATCHES = flags.DEFINE_list("batches", ["1", "16"], "batch sizes B")
_STEPS = flags.DEFINE_integer("steps", 3, "traced steps (after one warm-up)")
_TOP = flags.DEFINE_integer("top", 15, "ops in the table")
_OUT = flags.DEFINE_string("profile_out", None, "JSON output (default benchmarks/results/"
                           "profile_decode_<size>_b<B>.json; {b} is replaced by B)")

# (file suffix, function or None) -> part, first match from the innermost frame outwards.
_PARTS = (
    ("layers/kv_cache.py", "write", "cache_write"),
    ("layers/kv_cache.py", None, "attention"),
    ("layers/attention.py", None, "attention"),
    ("layers/embeddings.py", "apply_rotary", "rotary"),
    ("layers/embeddings.py", "attend", "unembed"),
    ("layers/embeddings.py", None, "embed"),
    ("layers/linears.py", None, "matmul"),
    ("layers/normalizations.py", None, "norm"),
    ("inference/sampling.py", None, "sampling"),
    ("inference/grammar.py", None, "sampling"),
    ("inference/decode_step.py", "_choose", "sampling"),
    ("inference/decode_step.py", "record", "sampling"),
    ("models/llm.py", None, "llm_other"),
)
# Functions -> phase of the step, the outermost match wins (`_step_models` calls them).
_PHASES = {"_decode_turn": "turn", "decode_speech": "codec", "embed_audio": "speaker",
           "extend_step": "encoder", "extend": "prefill"}


def frame_chains(module) -> dict[str, list[tuple[str, str]]]:
  """HLO instruction name -> its Python stack [(file, function), innermost first] from the
  compiled module's stack frame index ({} without tensorflow's `hlo_pb2`)."""
  try:
    from tensorflow.compiler.xla.service import hlo_pb2
  except ImportError:
    return {}
  proto = hlo_pb2.HloModuleProto.FromString(module.as_serialized_hlo_module_proto())
  idx = proto.stack_frame_index
  chains = {}
  for comp in proto.computations:
    for ins in comp.instructions:
      chain, fid = [], ins.metadata.stack_frame_id
      while 0 < fid <= len(idx.stack_frames):
        frame = idx.stack_frames[fid - 1]
        loc = idx.file_locations[frame.file_location_id - 1]
        chain.append((idx.file_names[loc.file_name_id - 1],
                      idx.function_names[loc.function_name_id - 1]))
        fid = frame.parent_frame_id
      chains[ins.name] = chain
  return chains


def part_of(chain: list[tuple[str, str]], kind: str) -> str:
  """`phase/part` of one op from its stack (see the module docstring)."""
  if not chain:  # XLA drops the metadata of some ops (the layers' dots on CPU)
    if kind.split("[")[0] in ("dot", "fusion") and "dot" in kind:
      return "matmul (no stack)"
    return "control" if kind.split("[")[0] in ("while", "conditional", "copy", "tuple",
                                               "get-tuple-element", "call") else "?"
  part = None
  for path, fn in chain:
    for suffix, want, name in _PARTS:
      if path.endswith(suffix) and (want is None or fn == want):
        part = name
        break
    if part:
      break
  # the speaker embedding runs inside the codec's row groups (`speech_decode`): its own part
  phase = ("speaker" if any("embed_audio" in fn.split(".") for _, fn in chain) else
           next((_PHASES[f] for _, fn in reversed(chain) for f in fn.split(".")
                 if f in _PHASES), "other"))
  if phase in ("codec", "speaker", "encoder"):
    return phase
  if part is None:
    inner = next((f"{os.path.basename(p)}:{fn}" for p, fn in chain if "liveinterp" in p),
                 chain[0][1])
    part = inner
  return f"{phase}/{part}"


def main(argv):
  del argv
  cores = cpu_pinning.pin_cores(_CORES.value)
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import jax
  import numpy as np

  from benchmarks import common, profile_step
  from liveinterp.common import config as config_lib
  from liveinterp.common import token_layout
  from liveinterp.inference import decode_step, decoder as decoder_lib, loading
  from liveinterp.inference.decoder import step_inputs
  from liveinterp.models import llm

  cfg = config_lib.load(_SIZE.value)
  models = loading.build_models(cfg)
  layout = token_layout.TokenLayout.from_config(cfg)
  dec = decoder_lib.StreamingDecoder(*models, layout, cfg,
                                     prompt_ids=decoder_lib.prompt_for(cfg))
  m = dec.max_turn_tokens
  rng = np.random.default_rng(0)
  ids = common.forced_turn(layout, rng, 8, common.talk_frames(dec, layout))
  steps, top = _STEPS.value, _TOP.value
  # LLM FLOPs of the turn's tokens per stream (the encoder and codec not counted).
  gflop = llm.flops_per_token(cfg)["inference"] * len(ids) / 1e9
  for b in [int(x) for x in _BATCHES.value]:
    forced = np.zeros((b, m), np.int32)
    forced[:, :len(ids)] = ids
    audio = (0.1 * rng.standard_normal((b, dec.chunk_samples))).astype(np.float32)
    args = step_inputs(dec, b, audio, None, forced, np.full((b,), len(ids), np.int32))
    state = [dec.init_stream(b, 0)]
    fn = decode_step._step_donate
    compiled = fn.lower(dec.spec, dec.params, state[0], *args).compile()

    def run():
      state[0], out = fn(dec.spec, dec.params, state[0], *args)
      return jax.block_until_ready(out)
    kinds = profile_step.parse_hlo_kinds(compiled.as_text())
    chains = frame_chains(compiled.runtime_executable().hlo_modules()[0])
    with tempfile.TemporaryDirectory() as log_dir:
      times = profile_step.profile(run, steps, log_dir)
    step_s = common.time_fn(run, repeats=steps)
    rows, kind_rows = profile_step.summarise(times, kinds, steps, top)
    parts = {op: part_of(chains.get(op, []), kinds.get(op, "?")) for op in times}
    shapes = dict(re.findall(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s",
                             compiled.as_text(), re.M))
    for r in rows:
      r["part"], r["shape"] = parts[r["op"]], shapes.get(r["op"], "?").split("{")[0]
    _, part_rows = profile_step.summarise(times, parts, steps, 10 ** 6)
    part_rows = [{"part": r["kind"], "ms_per_step": r["ms_per_step"], "share": r["share"]}
                 for r in part_rows]
    op_ms = sum(v["self_us"] for v in times.values()) / steps / 1e3
    print(f"decode step B={b} ({_SIZE.value}, talk turn of {len(ids)} tokens): step "
          f"{step_s * 1e3:.1f} ms, op self time {op_ms:.1f} ms/step")
    common.print_table(rows, ["op", "kind", "part", "shape", "ms_per_step", "share",
                              "calls_per_step"])
    print()
    common.print_table(part_rows, ["part", "ms_per_step", "share"])
    print()
    common.print_table(kind_rows, ["kind", "ms_per_step", "share"])
    env = common.environment()
    env.update(load_avg_1m=round(os.getloadavg()[0], 2), cores=cores)
    out = (_OUT.value.replace("{b}", str(b)) if _OUT.value else os.path.join(
        common.RESULTS_DIR, f"profile_decode_{_SIZE.value}_b{b}.json"))
    common.write_json(out, {
        "benchmark": "profile_decode",
        "command": (f"python -m benchmarks.profile_decode --size={_SIZE.value} "
                    f"--batches={b} --steps={steps}"),
        "model": f"decode_step (talk turn, B={b})", "size": _SIZE.value, "batch": b,
        "turn_tokens": len(ids), "env": env, "steps": steps, "step_s": step_s,
        "op_ms_per_step": op_ms, "model_GFLOP": gflop * b, "rows": rows, "kinds": kind_rows,
        "parts": part_rows})


if __name__ == "__main__":
  app.run(main)
