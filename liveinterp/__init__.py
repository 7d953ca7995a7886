"""liveinterp: simultaneous speech-to-speech translation in the speaker's own voice, in JAX."""

__version__ = "0.1.0"
