"""Tests of liveinterp.rl."""
