"""Streaming inference: the per-chunk decoder, sampling, audio files (DESIGN §1, §6).

- `decoder`: `StreamingDecoder` (one jitted fixed-shape step per source chunk); its pure
  jitted functions and state types live in `decode_step`.
- `session`: the host side, `translate_stream` / `iter_translate` / `translate_waveforms`.
- `loading`: `random_model`, `build_models` (random or restored from a run's stages).
- `sampling`: greedy / temperature / top-p sampling and the turn-grammar id mask.
- `audio_io`: any audio file -> 16 kHz mono float32, and back to wav.
- `generate`: offline greedy generation from whole prompts (dev evaluation).

The CLI is `python -m liveinterp.translate`.
"""
