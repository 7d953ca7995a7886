"""Data pipelines: parallel-text sources, cleaning, splits, speech synthesis, word
alignment, long-form talks and the corpus entry point (`corpus.iter_examples`).

Data flows one way: `sources` → `text_cleaning` → `splits` → (`alignment`,
`synthesis` with `speakers`) → `talks` → `corpus`. The TFDS builders and grain
pipelines sit on top of `corpus`.
"""
