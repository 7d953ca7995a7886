"""Serving the trained model: exported artifacts, their loader, the websocket server and
the SimulEval agent."""
