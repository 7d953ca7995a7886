"""ml_collections config files: `base.py` plus one recipe per model size."""
