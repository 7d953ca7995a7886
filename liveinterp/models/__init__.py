"""Models (Flax NNX, logical axis names on every parameter): conformer encoder, adapter,
decoder LLM, speech codec, voice (speaker encoder), and the s2st composite."""
