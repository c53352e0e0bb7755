"""How a checkpoint's arrays lie on disk: one zarr array per leaf, written in 8 MB chunks.

  state/<leaf path, dots between keys>/.zarray   the leaf's shape, dtype and chunking
  state/<leaf path>/0.0, 1.0, ...                 its chunks (zarr v2, tensorstore)
  state/_METADATA, _sharding, array_metadatas/    orbax's tree metadata

Not orbax's default OCDBT format, which packs every array into a few shared files: a
synchronous OCDBT save holds its whole write in memory, +0.47 GB peak for from_csv's 0.54 GB
state against +0.10 GB here (issue 9's 1.5 GB bound; notes/perf.md "The checkpoint format").
Restoring reads either format, so checkpoints written before this change still load. Orbax
0.12 still tries to merge OCDBT files after every save and warns that it found none:
console.quiet() drops that line.
"""

from typing import Any

import jax
import orbax.checkpoint as ocp

# Arrays are written in chunks of at most this: orbax then serializes a chunk at a time, not a
# whole 88 MB embedding table. Restoring reads any chunking.
CHUNK_BYTES = 2**23


def item_handlers() -> dict[str, ocp.CheckpointHandler]:
  """The CheckpointManager's items: the state as per-leaf zarr arrays, the extras as JSON."""
  return {'state': ocp.StandardCheckpointHandler(use_ocdbt=False),
          'extras': ocp.JsonCheckpointHandler()}


def save_args(state: Any) -> ocp.args.StandardSave:
  """`state` (a pytree of arrays / scalars) as orbax saves it, every leaf chunked."""
  return ocp.args.StandardSave(state, save_args=jax.tree.map(
      lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), state))


def _restore_target(x: Any, default_sharding) -> Any:
  """What orbax restores into: arrays become abstract with the target's own sharding."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, jax.ShapeDtypeStruct) and x.sharding is None:
    # Without a sharding orbax hands back numpy; replicated matches how the trainer holds params.
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=default_sharding)
  return x  # ShapeDtypeStruct with sharding, numpy arrays, Python scalars: orbax knows these.


def abstract(tree: Any, default_sharding=None) -> Any:
  """`tree` with its arrays as shapes, dtypes and shardings: a restore target holding no memory.
  Abstract leaves without a sharding get `default_sharding` (None: orbax returns numpy)."""
  return jax.tree.map(lambda x: _restore_target(x, default_sharding), tree)
