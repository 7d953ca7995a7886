"""Logical-axis sharding: rules from config, specs for activations and parameters.

Parameters carry logical names in their `out_sharding` metadata (see `layers/`);
activations are constrained through `shard_logical`. The mapping from logical names to
mesh axes is `config.logical_axis_rules`, installed with `use_mesh(mesh, rules)`.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterable, Sequence

import jax
from flax import nnx
from flax.core import spmd as core_spmd
from jax.sharding import NamedSharding, PartitionSpec

LogicalRules = tuple[tuple[str, Any], ...]


def rules_from_config(rules: Iterable[Sequence[Any]]) -> LogicalRules:
  """Turns config rules `[(logical, mesh_axis | [mesh_axes] | None), ...]` into a tuple."""
  out = []
  for item in rules:
    logical, target = item[0], item[1]
    if isinstance(target, (list, tuple)):
      target = tuple(target) if len(target) > 1 else (target[0] if target else None)
    out.append((str(logical), target))
  return tuple(out)


@contextlib.contextmanager
def use_mesh(mesh: jax.sharding.Mesh, rules: LogicalRules):
  """Makes `mesh` the current mesh and `rules` the current logical-axis rules."""
  with jax.set_mesh(mesh), core_spmd.logical_axis_rules(rules):
    yield


def current_rules() -> LogicalRules:
  return tuple(core_spmd.get_logical_axis_rules())


def _current_mesh():
  mesh = jax.sharding.get_abstract_mesh()
  if mesh is None or mesh.empty:
    return None
  return mesh


def logical_to_spec(axes: Sequence[str | None], rules: LogicalRules | None = None,
                    mesh_axis_sizes: dict[str, int] | None = None) -> PartitionSpec:
  """Maps logical axis names to a PartitionSpec.

  A mesh axis is used at most once per spec (first logical axis wins) and mesh axes of
  size 1 are dropped, so specs stay valid on every mesh shape.
  """
  rules = current_rules() if rules is None else rules
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in axes:
    target = table.get(name) if name is not None else None
    if target is None:
      out.append(None)
      continue
    targets = (target,) if isinstance(target, str) else tuple(target)
    keep = []
    for t in targets:
      if t in used:
        continue
      if mesh_axis_sizes is not None and mesh_axis_sizes.get(t, 1) == 1:
        continue
      keep.append(t)
      used.add(t)
    out.append(None if not keep else (keep[0] if len(keep) == 1 else tuple(keep)))
  return PartitionSpec(*out)


def shard_logical(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  """Constrains activation `x` to the sharding its logical `axes` map to.

  A no-op outside a mesh (plain single-device code) and on a single-device mesh.
  """
  if len(axes) != x.ndim:
    raise ValueError(f"shard_logical: {len(axes)} axis names {tuple(axes)} for an array "
                     f"of rank {x.ndim} (shape {x.shape})")
  mesh = _current_mesh()
  if mesh is None or mesh.size == 1:
    return x
  spec = logical_to_spec(axes, mesh_axis_sizes=dict(mesh.shape))
  return jax.lax.with_sharding_constraint(x, spec)


def param_specs(tree: Any) -> Any:
  """PartitionSpecs of a state tree whose Variables carry logical `out_sharding`."""
  mesh = _current_mesh()
  sizes = dict(mesh.shape) if mesh is not None else None
  rules = current_rules()

  def spec_of(v):
    if isinstance(v, nnx.Variable):
      names = v.get_metadata().get("out_sharding")
      if names:
        return v.replace(logical_to_spec(names, rules, sizes))
      return v.replace(PartitionSpec())
    return PartitionSpec() if hasattr(v, "shape") else None

  return jax.tree.map(spec_of, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def named_shardings(tree: Any, mesh: jax.sharding.Mesh) -> Any:
  """NamedShardings for a state tree (Variables with logical names, or plain arrays)."""
  specs = param_specs(tree)
  return jax.tree.map(lambda p: NamedSharding(mesh, p), specs,
                      is_leaf=lambda x: isinstance(x, PartitionSpec))


def data_sharding(mesh: jax.sharding.Mesh, ndim: int, rules: LogicalRules | None = None,
                  batch_axes: Sequence[str] = ("activation_batch",)) -> NamedSharding:
  """Sharding of a batch-major input array: leading axis over the batch mesh axes.

  `rules` default to the current rules (`use_mesh`); outside any rules context pass them,
  or the batch would silently be replicated.
  """
  rules = current_rules() if rules is None else rules
  if not rules:
    raise ValueError("data_sharding: no logical axis rules (pass rules= or call it inside "
                     "sharding.use_mesh)")
  spec = logical_to_spec(tuple(batch_axes) + (None,) * (ndim - len(batch_axes)), rules,
                         mesh_axis_sizes=dict(mesh.shape))
  return NamedSharding(mesh, spec)
