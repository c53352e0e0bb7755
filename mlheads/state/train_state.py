"""The training state: parameters, optimizer state, step, and the run's random key.

Embedding tables that the model reads only through token ids (`Model.row_tables()`) are
updated row by row when the optimizer has an exact lazy rule (`optimizers.ROW_RULES`):
`opt_state` then covers the other parameters and `rows` holds each table's RowState, and
`apply_gradients` takes the gradients of just the rows a batch touched.
"""

import functools
from collections.abc import Mapping
from typing import Any

from flax import struct
from flax.training import train_state
import jax
import numpy as np
import optax

from mlheads.model import layers
from mlheads.model import model as model_lib
from mlheads.state import host_memory


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _replace(tree, path, value):
  """`tree` with the leaf at `path` replaced (or removed, for `value` None); copies only the
  dicts along the path."""
  head, *rest = path
  out = dict(tree)
  if rest:
    out[head] = _replace(tree[head], rest, value)
  elif value is None:
    del out[head]
  else:
    out[head] = value
  return out


class TrainState(train_state.TrainState):
  # Raw uint32 key data (checkpointable); step s uses fold_in(rng, s): a pure function of
  # (seed, step), so a resumed run draws the same numbers.
  rng: jax.Array
  rows: Any = None  # {input key: optimizers.RowState} of the row-updated tables
  # ((input key, parameter path), ...): the tables updated row by row; () for none.
  row_tables: tuple = struct.field(pytree_node=False, default=())

  def split_params(self) -> tuple[Any, dict[str, jax.Array]]:
    """(the parameters but the row-updated tables, {input key: table `[V, E]`})."""
    dense, tables = self.params, {}
    for key, path in self.row_tables:
      tables[key] = _get(self.params, path)
      dense = _replace(dense, path, None)
    return dense, tables

  def merge_params(self, dense, tables: Mapping[str, jax.Array]):
    """The inverse of `split_params`."""
    for key, path in self.row_tables:
      dense = _replace(dense, path, tables[key])
    return dense

  def host_rows(self, inputs: Mapping[str, Any]
                ) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Each row-updated table's `layers.host_rows` for a batch's host `inputs`, as
    `train_step`'s `given` (a table read whole is left out); None (the most rows there can
    be, found in the step) where the batch is split over processes, since a process sees
    only its own rows' tokens."""
    if not self.row_tables or jax.process_count() > 1:
      return None
    found = {key: layers.host_rows(np.asarray(inputs[key]), _get(self.params, path).shape[0])
             for key, path in self.row_tables}
    return {key: rows for key, rows in found.items() if rows is not None}

  def apply_gradients(self, *, grads, row_grads=None, lookups=None, **kwargs):
    """One optimizer step. `grads` matches `split_params()[0]`; for each row-updated table,
    `row_grads[key]` `[S, E]` are the gradients of the rows `lookups[key]` (a
    `layers.Lookup`) holds."""
    if not self.row_tables:
      return super().apply_gradients(grads=grads, **kwargs)
    dense, tables = self.split_params()
    updates, opt_state = self.tx.update(grads, self.opt_state, dense)
    dense = optax.apply_updates(dense, updates)
    rows = {}
    for key, _ in self.row_tables:
      lookup = lookups[key]
      tables[key], rows[key] = self.tx.rows.update(tables[key], self.rows[key], lookup.unique,
                                                   row_grads[key], self.step, lookup.rows)
    return self.replace(step=self.step + 1, params=self.merge_params(dense, tables),
                        opt_state=opt_state, rows=rows, **kwargs)


def create(model, tx, seed: int, example_inputs, sharding, dtype: str = 'float32',
           params=None) -> TrainState:
  """A fresh state: `model` initialized on `example_inputs` (`{key: [1, ...]}`) from `seed`
  (or starting from the given `params`, e.g. another framework's initial weights), placed
  with `sharding` (replicated). Parameters are float32; `apply_fn` computes in `dtype`
  (model.ComputeIn). The model's token tables are updated row by row when `tx` (an
  `optimizers.Optimizer`) has a row rule."""
  params_key, rng = jax.random.split(jax.random.PRNGKey(seed))
  rule = getattr(tx, 'rows', None)
  row_tables = tuple(sorted(model.row_tables().items())) if rule is not None else ()

  @functools.partial(jax.jit, out_shardings=sharding)
  def init(params_key, rng, params):
    if params is None:
      params = model.init(params_key, example_inputs)['params']
    state = TrainState(step=0, apply_fn=model_lib.ComputeIn(model.apply, dtype), params=params,
                       tx=tx, opt_state=None, rng=rng, row_tables=row_tables)
    dense, tables = state.split_params()
    return state.replace(opt_state=tx.init(dense),
                         rows={k: rule.init(t) for k, t in tables.items()} if rule else None)

  state = init(params_key, rng, params)
  jax.block_until_ready(state)
  host_memory.release()  # the init program's temporaries (the tables' random bits)
  return state
