"""One micro corpus build per test process (zh-en, model="micro": the corpus and its
tokenizer), shared by the integration tests that only read it (the stage chain, replay,
audio reliance, sizes from data). A build costs ~9 s of CPU (about a minute of wall time
on 2 loaded cores); before, each of those four files made its own identical one."""

import atexit
import functools
import shutil
import tempfile


@functools.lru_cache(maxsize=None)
def micro_corpus() -> tuple[str, str]:
  """(data_dir, tokenizer prefix) of the process's micro build, made on first use."""
  from data_pipelines import build
  d = tempfile.mkdtemp(prefix="liveinterp_micro_corpus_")
  atexit.register(shutil.rmtree, d, True)
  build.run("zh-en", "micro", d, model="micro")
  return d, build.tokenizer_prefix(d, "zh-en", "micro", 256, "bpe")
