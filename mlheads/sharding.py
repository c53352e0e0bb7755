"""Data parallelism over every device: one 1-D mesh, the batch split over 'data', parameters
replicated. jit with shardings, never pmap: the same program runs on one CPU, several GPUs or
a TPU slice, and across processes (jax.distributed) each feeds its slice of the batch."""

import dataclasses

import jax


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """The mesh and the two shardings a run uses."""
  mesh: jax.sharding.Mesh
  batch: jax.sharding.NamedSharding  # leading axis split over 'data'
  replicated: jax.sharding.NamedSharding

  @classmethod
  def over_all_devices(cls) -> 'DataParallel':
    # Auto axes: XLA's partitioner places the gathers and reductions, as with pjit.
    mesh = jax.make_mesh((jax.device_count(),), ('data',),
                         axis_types=(jax.sharding.AxisType.Auto,))
    return cls(mesh=mesh, batch=jax.NamedSharding(mesh, jax.P('data')),
               replicated=jax.NamedSharding(mesh, jax.P()))

  def shard(self, batch):
    """Global host batch (a pytree of `[B, ...]` arrays) -> arrays split over 'data'.

    Every process computes the same global batch (the order is a pure function
    of (seed, step)) and contributes its own contiguous slice of the rows.
    """
    n, i = jax.process_count(), jax.process_index()

    def put(x):
      rows = x.shape[0] // n
      return jax.make_array_from_process_local_data(self.batch, x[i * rows:(i + 1) * rows],
                                                    x.shape)

    return jax.tree.map(put, batch)
