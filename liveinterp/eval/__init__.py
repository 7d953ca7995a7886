"""Evaluation: latency (SimulEval definitions), quality, voice similarity, reports."""
