#!/usr/bin/env bash
# The test command: set-up (idempotent) then the default suite (not the `slow` marker).
# Extra arguments go to pytest, e.g. `bash launch/test.sh tests/unit -x`.
# Three workers on the 2-core machine (XLA compiles on one thread, and tests wait on
# subprocesses, sockets and a browser: a third worker fills the gaps; full suite 653 s with
# 3 vs 694 s with 2, same machine and commit), one file per worker at a time (module
# fixtures run once), files in collection order (tests/conftest.py puts the longest first);
# one fresh XLA compilation cache for the run, shared by the workers and the subprocesses
# tests start (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/setup.sh
bash launch/setup_browser.sh   # chromium + chromedriver for tests/integration/test_browser.py
export TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$#" -eq 0 ]; then set -- tests; fi
exec .venv/bin/python -m pytest -q -m "not slow" -n 3 --dist=loadfile --no-loadscope-reorder -p no:cacheprovider "$@"
