"""Axis names, meshes, sharding helpers, distributed set-up and process-0 reporting."""
