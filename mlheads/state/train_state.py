"""The training state: parameters, optimizer state, step, and the run's random key."""

import functools

from flax.training import train_state
import jax


class TrainState(train_state.TrainState):
  # Raw uint32 key data (checkpointable); step s uses fold_in(rng, s): a pure function of
  # (seed, step), so a resumed run draws the same numbers.
  rng: jax.Array


def create(model, tx, seed: int, example_inputs, sharding, params=None) -> TrainState:
  """A fresh state: `model` initialized on `example_inputs` (`{key: [1, ...]}`) from `seed`
  (or starting from the given `params`, e.g. another framework's initial weights), placed
  with `sharding` (replicated)."""
  params_key, rng = jax.random.split(jax.random.PRNGKey(seed))

  @functools.partial(jax.jit, out_shardings=sharding)
  def init(params_key, rng, params):
    if params is None:
      params = model.init(params_key, example_inputs)['params']
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, rng=rng)

  return init(params_key, rng, params)
