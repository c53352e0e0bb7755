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

  def process_rows(self, batch_size: int) -> slice:
    """The rows of a global batch of `batch_size` that this process' devices hold: one
    contiguous range (the mesh is 1-D), what this process reads and feeds `shard`."""
    spans = [idx[0].indices(batch_size)[:2]
             for idx in self.batch.addressable_devices_indices_map((batch_size,)).values()]
    start, stop = min(a for a, _ in spans), max(b for _, b in spans)
    assert sum(b - a for a, b in spans) == stop - start, spans  # contiguous, no overlap
    return slice(start, stop)

  def shard(self, local_batch):
    """This process' rows of a global batch (a pytree of `[B / processes, ...]` arrays, the
    rows `process_rows(B)`, as pipeline.train_batches reads them) -> global `[B, ...]`
    arrays split over 'data'."""
    n = jax.process_count()
    if n == 1:  # the whole batch is local: one transfer of the tree (~0.2 ms less an array)
      return jax.device_put(local_batch, self.batch)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(
        self.batch, x, (x.shape[0] * n,) + x.shape[1:]), local_batch)

  def shard_global(self, batch):
    """A global batch every process holds whole (evaluation, tests) -> arrays split over
    'data', each process contributing its own rows."""
    return self.shard(jax.tree.map(lambda x: x[self.process_rows(x.shape[0])], batch))
