"""Sums a LIVEINTERP_TEST_COMPILE_LOG (tests/conftest.py) per test file: wall seconds and
the seconds spent in XLA compiles, tracing and lowering, slowest file first.

  LIVEINTERP_TEST_COMPILE_LOG=/tmp/c.jsonl bash launch/test.sh
  python -m tests.compile_report /tmp/c.jsonl [--top 30]
"""

import argparse
import collections
import json


def per_file(rows):
  out = collections.defaultdict(lambda: collections.Counter())
  for r in rows:
    f = out[r["nodeid"].split("::", 1)[0]]
    for k in ("wall_s", "xla_s", "trace_s", "lower_s", "compiles", "cache_hits"):
      f[k] += r.get(k, 0)
  return out


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("log")
  p.add_argument("--top", type=int, default=30)
  a = p.parse_args(argv)
  rows = [json.loads(line) for line in open(a.log) if line.strip()]
  files = sorted(per_file(rows).items(), key=lambda kv: -kv[1]["wall_s"])
  tot = collections.Counter()
  print(f"{'file':58s} {'wall s':>8s} {'xla s':>7s} {'trace+lower s':>13s} "
        f"{'compiles':>8s} {'hits':>5s}")
  for i, (name, c) in enumerate(files):
    tot.update(c)
    if i < a.top:
      print(f"{name:58s} {c['wall_s']:8.1f} {c['xla_s']:7.1f} "
            f"{c['trace_s'] + c['lower_s']:13.1f} {c['compiles']:8d} {c['cache_hits']:5d}")
  print(f"{'total (' + str(len(files)) + ' files)':58s} {tot['wall_s']:8.1f} {tot['xla_s']:7.1f} "
        f"{tot['trace_s'] + tot['lower_s']:13.1f} {tot['compiles']:8d} {tot['cache_hits']:5d}")
  big = collections.defaultdict(lambda: [0, 0.0])  # (file, program) -> [compiles, seconds]
  for r in rows:
    for name, secs in r.get("big", ()):
      b = big[(r["nodeid"].split("::", 1)[0], name)]
      b[0] += 1
      b[1] += secs
  if big:
    print(f"\nprograms compiled in >= 1 s, most seconds first:\n{'file':50s} {'program':28s} "
          f"{'compiles':>8s} {'xla s':>7s}")
    for (f, name), (n, secs) in sorted(big.items(), key=lambda kv: -kv[1][1])[:a.top]:
      print(f"{f[-50:]:50s} {name[:28]:28s} {n:8d} {secs:7.1f}")
  dec = collections.defaultdict(lambda: [set(), 0, 0.0])  # settings -> [files, n, secs]
  for r in rows:
    for key, secs in r.get("decoder", ()):
      d = dec[key]
      d[0].add(r["nodeid"].split("::", 1)[0].rsplit("/", 1)[-1])
      d[1] += 1
      d[2] += secs
  if dec:
    print("\nstreaming decoder programs compiled, by decoder settings, most seconds first:")
    for key, (files, n, secs) in sorted(dec.items(), key=lambda kv: -kv[1][2])[:a.top]:
      print(f"{secs:7.1f} s {n:3d}x  {', '.join(sorted(files))}\n          {key}")


if __name__ == "__main__":
  main()
