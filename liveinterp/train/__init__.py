"""Training: optimizer, train state, the pure train step and the stage loop."""
