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

Past one host (``jax.distributed``, one process per host; on CPU the processes talk over
gloo, JAX's default CPU collectives): every process loads only its own rows and calls the
same code::

    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    x = nsjax.sharding.shard_process_local(local_rows)   # (P b, ...) global, b rows here
    p = ns.project(x)                                     # each device projects its rows
    mine = nsjax.sharding.process_local_rows(p)           # (b, ...) numpy: this process's
    everything = nsjax.sharding.gather_batch(p)           # (P b, ...) numpy on every process

The projection itself still needs no communication (the output keeps ``x``'s sharding);
only :func:`gather_batch` moves rows between processes.  The null space must be the same
in every process (build it from the same weights, or :func:`replicate` over
:func:`global_mesh`).
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
    "global_mesh",
    "shard_process_local",
    "process_local_rows",
    "gather_batch",
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


# --------------------------------------------------------------------------- multi-process


def global_mesh(axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over the devices of every process (``jax.devices()``), named ``axis_name``.

    Devices are ordered by process, then by local position, so process ``k`` owns one
    contiguous block of the mesh and hence of a batch sharded over it
    (:func:`shard_process_local`).  With one process it is :func:`local_mesh`.
    """
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return local_mesh(devices, axis_name)


def _local_block(mesh: Mesh) -> int:
    """Number of devices of ``mesh`` in this process; checks they are one contiguous block."""
    flat = list(np.asarray(mesh.devices).flat)
    mine = [i for i, d in enumerate(flat) if d.process_index == jax.process_index()]
    if not mine:
        raise ValueError(f"the mesh has no device of process {jax.process_index()}")
    if mine != list(range(mine[0], mine[0] + len(mine))):
        raise ValueError("this process's devices are not contiguous in the mesh, so its rows "
                         "would not be one block of the batch; use nsjax.sharding.global_mesh()")
    return len(mine)


def shard_process_local(local_batch, mesh: Mesh | None = None):
    """One global batch from the rows each process holds (``jax.distributed``).

    Every process calls it with its own rows; the result is one ``jax.Array`` of all of
    them, split along the leading axis over ``mesh`` (nothing is copied between processes:
    ``jax.make_array_from_process_local_data``).  Process ``k``'s rows come ``k``-th, in
    the order they were given.

    Args:
      local_batch: ``(b, ...)`` array (NumPy or JAX), or a pytree of them: this process's
        rows.  ``b`` must be the same in every process and a multiple of its number of
        devices in ``mesh``.
      mesh: default :func:`global_mesh` (all devices of all processes).

    Returns:
      ``(P b, ...)`` global arrays with :func:`batch_sharding` (``P`` processes);
      ``ns.project`` of them comes back sharded the same way.  With one process this is
      :func:`shard_batch`.

    Raises:
      ValueError: a leaf is a scalar, ``b`` does not divide evenly, or this process's
        devices are not one contiguous block of ``mesh``.
    """
    mesh = global_mesh() if mesh is None else _mesh(mesh)
    sharding = batch_sharding(mesh)
    nlocal = _local_block(mesh)

    def put(leaf):
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError("shard_process_local() needs arrays with a leading batch axis, "
                             "got a scalar")
        if shape[0] % nlocal:
            raise ValueError(f"local batch size {shape[0]} is not a multiple of this "
                             f"process's {nlocal} devices; pad every process's rows to a "
                             f"multiple of {nlocal}")
        global_shape = (shape[0] * (mesh.size // nlocal),) + tuple(shape[1:])
        return jax.make_array_from_process_local_data(sharding, np.asarray(leaf), global_shape)

    return jax.tree.map(put, local_batch)


def process_local_rows(x) -> np.ndarray:
    """This process's rows of a batch-sharded ``(B, ...)`` array, as one NumPy array.

    For ``x`` from :func:`shard_process_local` (or ``ns.project`` of it) these are
    the ``(b, ...)`` rows the process passed in (projected), in the same order.  No
    communication.  Rows held by several local devices (replication) appear once.
    """
    if np.ndim(x) == 0:
        raise ValueError("process_local_rows() needs an array with a leading batch axis")
    blocks: dict[int, jax.Array] = {}
    for shard in x.addressable_shards:
        start = (shard.index[0].start or 0) if shard.index else 0
        blocks.setdefault(start, shard.data)  # replicas of one block: keep one
    if not blocks:
        raise ValueError("x has no rows on this process")
    starts = sorted(blocks)
    ends = [s + blocks[s].shape[0] for s in starts]
    if starts[1:] != ends[:-1]:
        raise ValueError("this process's rows of x are not one contiguous block")
    return np.concatenate([np.asarray(blocks[s]) for s in starts], axis=0)


def gather_batch(x):
    """All rows of a batch-sharded ``x`` (array or pytree), as NumPy, on every process.

    ``jax.experimental.multihost_utils.process_allgather(x, tiled=True)``: a collective,
    so every process must call it.  ``(B, ...)`` in, ``(B, ...)`` NumPy out; it moves the
    whole batch to every host, so use it for checks and small results.
    """
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(x, tiled=True)
