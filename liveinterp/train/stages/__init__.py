"""Stage builders: `config.stage` -> `loop.Stage`. Each stage module has `build(config)`."""

from __future__ import annotations

import importlib

# stage name -> module under liveinterp.train.stages
_MODULES = {"demo": "demo", "codec": "codec", "asr_judge": "asr_judge", "pretrain": "stream_lm",
            "sft": "stream_lm"}


def available() -> tuple[str, ...]:
  return tuple(_MODULES)


def build(config):
  if config.stage not in _MODULES:
    raise NotImplementedError(
        f"stage={config.stage!r} has no trainer yet; available: {sorted(_MODULES)}")
  return importlib.import_module(f"liveinterp.train.stages.{_MODULES[config.stage]}").build(config)
