"""Streaming inference: the per-chunk decoder, sampling, audio files (DESIGN §1, §6).

- `streaming`: `StreamingDecoder` (one jitted fixed-shape step per source chunk),
  `translate_stream` / `iter_translate` host drivers, `load_params` / `build_models`.
- `sampling`: greedy / temperature / top-p sampling and the turn-grammar id mask.
- `audio_io`: any audio file -> 16 kHz mono float32, and back to wav.
- `generate`: offline greedy generation from whole prompts (dev evaluation).

The CLI is `python -m liveinterp.translate`.
"""
