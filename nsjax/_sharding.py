"""Data parallelism over the batch axis: shard the inputs, replicate the null space.

Projection is row-wise: row ``b`` of ``x - (x R) R^T`` depends on row ``b`` of ``x`` and on
the ``(n, r)`` row basis ``R`` only.  So splitting the leading (batch) axis of ``x`` over the
devices and giving every device the whole of ``R`` is an exact parallel projection with no
communication at all, and XLA's sharding propagation keeps the output split the same way::

    x = nsjax.shard_batch(x)          # (B, ...) split over all local devices along B
    p = ns.project(x)                 # runs on every device; p has x's sharding

No change in the projection code is needed: :meth:`NullSpace.project` is a jitted function
of ``(row_basis, x)``, and jit follows the sharding of its arguments.  The same holds for
:func:`nsjax.check_invariance` given ``x=shard_batch(x)`` (probes are independent).

The null space is tiny (``n r`` numbers) and is copied to every device implicitly; call
:func:`replicate` to place it explicitly (needed when it was committed to one device, e.g.
with ``jax.device_put(ns, device)``).

On a CPU-only machine, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before
``jax`` is imported) gives 8 CPU devices to try this; they share the host's cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = [
    "BATCH_AXIS",
    "local_mesh",
    "batch_sharding",
    "replicated_sharding",
    "shard_batch",
    "replicate",
]

BATCH_AXIS = "batch"


def local_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over ``devices`` (default: ``jax.local_devices()``) named ``axis_name``."""
    devices = jax.local_devices() if devices is None else list(devices)
    if not devices:
        raise ValueError("local_mesh() needs at least one device")
    return Mesh(np.asarray(devices, dtype=object), (axis_name,))


def _mesh(mesh: Mesh | None) -> Mesh:
    if mesh is None:
        return local_mesh()
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (e.g. nsjax.local_mesh()), "
                        f"got {type(mesh).__name__}")
    return mesh


def batch_sharding(mesh: Mesh | None = None) -> NamedSharding:
    """Sharding that splits the leading axis over all devices of ``mesh``.

    ``PartitionSpec(axis)`` with ``axis`` the mesh's axis names (all of them, so a 2-D mesh
    splits the batch over every device); the trailing axes are not split.  Default mesh:
    :func:`local_mesh`.
    """
    mesh = _mesh(mesh)
    names = tuple(mesh.axis_names)
    return NamedSharding(mesh, PartitionSpec(names if len(names) > 1 else names[0]))


def replicated_sharding(mesh: Mesh | None = None) -> NamedSharding:
    """Sharding that puts a full copy on every device of ``mesh`` (``PartitionSpec()``)."""
    return NamedSharding(_mesh(mesh), PartitionSpec())


def shard_batch(x, mesh: Mesh | None = None):
    """Place ``x`` (an array or a pytree of arrays) split along its leading axis.

    Args:
      x: ``(B, ...)`` array, or a pytree of them; ``B`` must be a multiple of the number of
        devices in ``mesh``.
      mesh: default :func:`local_mesh` (all local devices).

    Returns:
      The same values as ``jax.Array``s with :func:`batch_sharding`; results of jitted
      functions of them (``ns.project``) come back sharded the same way.

    Raises:
      ValueError: a leaf is a scalar, or its batch size does not divide evenly.

    Example:
      >>> import jax, jax.numpy as jnp, nsjax
      >>> x = nsjax.shard_batch(jnp.ones((4 * jax.local_device_count(), 3)))
      >>> x.sharding.spec
      PartitionSpec('batch',)
    """
    sharding = batch_sharding(mesh)
    ndev = sharding.mesh.size

    def put(leaf):
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("shard_batch() needs arrays with a leading batch axis, got a scalar")
        if shape[0] % ndev:
            raise ValueError(
                f"batch size {shape[0]} is not a multiple of the {ndev} devices; pad the batch "
                f"to a multiple of {ndev} (e.g. jnp.pad(x, [(0, {-shape[0] % ndev})] + "
                f"[(0, 0)] * {len(shape) - 1})) and drop the padded rows of the result"
            )
        return jax.device_put(leaf, sharding)

    return jax.tree.map(put, x)


def replicate(tree, mesh: Mesh | None = None):
    """Put a full copy of every leaf of ``tree`` (e.g. a :class:`NullSpace`) on each device."""
    return jax.device_put(tree, replicated_sharding(mesh))
