"""Bench cases beyond the headline step: K per-class networks in one step against K
separate networks trained one after another, the training input pipeline alone, and the
training loop streamed from the prepared files against the same split in memory.

Each case returns one JSON-able dict (bench.py prints it). The per-class cases train the
real model through the real jitted train step, on synthetic inputs of the experiment's
shapes (timing does not depend on the values).
"""

import statistics
import time

import jax
import numpy as np

from mlheads import configs, optimizers, sharding, train
from mlheads.data import base
from mlheads.model import model as model_lib
from mlheads.model import networks
from mlheads.model import trunks
from mlheads.state import train_state


def _timed_ms(run_once, seconds: float) -> float:
  """Median ms of `run_once()` (which blocks on its own result) over ~`seconds`."""
  run_once()  # compile / warm up
  times, t_end = [], time.perf_counter() + seconds
  while time.perf_counter() < t_end or len(times) < 3:
    t = time.perf_counter()
    run_once()
    times.append(time.perf_counter() - t)
  return 1000 * statistics.median(times)


def _trainer(trunk: dict, inputs: dict, k: int, head: dict, batch: int, seed: int = 0):
  """(state, step, batch) for one model over synthetic data: inputs `{key: Field}`, K labels."""
  config = configs.base_config()
  config.trunk = trunk
  config.heads = {'y': head}
  config.batch_size = batch
  ds = base.Dataset(name='bench', splits={}, meta={}, inputs=inputs,
                    targets={'y': base.Field((k,), 'float32', 'binary')})
  model, heads = model_lib.build_model(config, ds)
  parallel = sharding.DataParallel.over_all_devices()
  example = {key: np.zeros((1,) + f.shape, f.dtype) for key, f in inputs.items()}
  state = train_state.create(model, optimizers.make(config), seed, example, parallel.replicated)
  rng = np.random.default_rng(seed)
  arrays = {key: rng.random((batch,) + f.shape, dtype=np.float32) for key, f in inputs.items()}
  data = parallel.shard({'inputs': arrays,
                         'targets': {'y': (rng.random((batch, k)) < 0.3).astype(np.float32)},
                         'masks': {'y': np.ones((batch, k), np.float32)},
                         'valid': np.ones((batch,), np.float32)})
  return state, train.make_train_step(heads, parallel), data


def per_class_vs_loop(name: str, trunk: dict, inputs: dict, k: int, batch: int,
                      seconds: float) -> dict:
  """ms of one per_class step (each layout) vs K single networks' steps run one by one.

  A network alone is the same trunk with a one-unit sigmoid head: the function and the
  parameters of one of the K. The loop's networks share one jitted step (one compile);
  each has its own state and its own label column.
  """
  row = {'bench': name, 'k': k, 'batch_size': batch, 'trunk': trunk['kind'],
         'device': jax.devices()[0].platform}
  ms = {}
  for how in networks.LAYOUTS:
    head = configs.head('per_class', target='y') | {'layout': how}
    state, step, data = _trainer(trunk, inputs, k, head, batch)
    box = [state]

    def once(box=box, step=step, data=data):
      box[0], scalars = step(box[0], data)
      jax.block_until_ready(scalars)

    ms[how] = _timed_ms(once, seconds)
    row['params'] = int(sum(x.size for x in jax.tree.leaves(box[0].params)))
  runs = []
  for seed in range(k):
    state, step, data = _trainer(trunk, inputs, 1, configs.head('sigmoid', target='y'), batch,
                                 seed)
    runs.append([state, step, data])

  def loop():
    for r in runs:
      r[0], scalars = r[1](r[0], r[2])
    jax.block_until_ready(scalars)

  loop_ms = _timed_ms(loop, seconds)
  # Trained by the full model: the layout `networks.layout` picks for this trunk.
  chosen = networks.layout(trunks.get(trunk['kind']))
  row |= {'layout': chosen, 'ms_per_step': round(ms[chosen], 2),
          **{f'{how}_ms_per_step': round(v, 2) for how, v in ms.items()},
          'loop_ms_per_step': round(loop_ms, 2),
          'speedup_vs_loop': round(loop_ms / ms[chosen], 2)}
  if name == 'per_class_conv':  # per example against one K-unit sigmoid network
    state, step, data = _trainer(trunk, inputs, k, configs.head('sigmoid', target='y'), batch)
    box = [state]

    def sig(box=box, step=step, data=data):
      box[0], scalars = step(box[0], data)
      jax.block_until_ready(scalars)

    row['sigmoid_ms_per_step'] = round(_timed_ms(sig, seconds), 2)
    row['vs_sigmoid'] = round(ms[chosen] / row['sigmoid_ms_per_step'], 1)
  return row


def bench_per_class(seconds: float) -> dict:
  """20 per-class MLP networks (64 hidden units, 100 features), batch 256."""
  return per_class_vs_loop(
      'per_class', {'kind': 'mlp', 'inputs_keys': ('x',), 'hidden': (64,)},
      {'x': base.Field((100,), 'float32', 'features')}, k=20, batch=256, seconds=seconds)


def bench_per_class_conv(seconds: float) -> dict:
  """The digit_mosaics experiment's conv trunk and shapes: 10 labels, batch 64, 16x16x1."""
  from experiments import digit_mosaics  # pylint: disable=g-import-not-at-top
  config = digit_mosaics.get_config()
  return per_class_vs_loop(
      'per_class_conv', dict(config.trunk), {'image': base.Field((16, 16, 1), 'float32', 'image')},
      k=10, batch=config.batch_size, seconds=seconds)


def bench_input(seconds: float) -> dict:
  """The headline experiment's training batches (tweets, batch 32; the fields its model reads,
  as training reads them) from the prepared files, placed on the device, nothing else:
  examples/s of `pipeline.train_batches` + `shard`."""
  from experiments import headline  # pylint: disable=g-import-not-at-top
  from mlheads.data import load_checked, pipeline  # pylint: disable=g-import-not-at-top
  config = headline.get_config()
  ds = load_checked(config)
  model, _ = model_lib.build_model(config, ds)
  parallel = sharding.DataParallel.over_all_devices()
  batches = pipeline.train_batches(ds.only(*model.reads()), ds.split('train'),
                                   config.batch_size, config.seed, 1000)
  jax.block_until_ready(parallel.shard(next(batches)))
  n, t = 0, time.perf_counter()
  while time.perf_counter() - t < seconds:
    jax.block_until_ready(parallel.shard(next(batches)))
    n += 1
  dt = time.perf_counter() - t
  return {'bench': 'input', 'data': config.data.name, 'batch_size': config.batch_size,
          'batches': n, 'examples_per_s': round(n * config.batch_size / dt, 1)}


def bench_stream(rounds: int) -> dict:
  """Movie genres' training loop (`pipeline.train_batches` -> the jitted train step, one
  epoch a round) fed from the prepared files, as training is, vs the split read into memory
  first; `rounds` alternating rounds (medians)."""
  from experiments import movie_genres  # pylint: disable=g-import-not-at-top
  import mlheads.data as data_lib  # pylint: disable=g-import-not-at-top
  from mlheads.data import pipeline  # pylint: disable=g-import-not-at-top

  config = movie_genres.get_config()
  ds = data_lib.load_checked(config)
  model, heads = model_lib.build_model(config, ds)
  parallel = sharding.DataParallel.over_all_devices()
  state = train_state.create(model, optimizers.make(config), 0, pipeline.example_inputs(ds),
                             parallel.replicated)
  step_fn = train.make_train_step(heads, parallel)
  sources = {'stream': ds.split('train'),
             'memory': pipeline.ArraySource(pipeline.read_split(ds.split('train')))}
  ds = ds.only(*model.reads())  # as training reads it
  batch = next(pipeline.train_batches(ds, sources['memory'], config.batch_size, 0, 1))
  state, scalars = step_fn(state, parallel.shard(batch))  # compiles
  jax.block_until_ready(scalars)
  steps = pipeline.steps_per_epoch(len(sources['stream']), config.batch_size)
  seconds = {name: [] for name in sources}
  for r in range(rounds):
    for name, source in sources.items():
      t = time.perf_counter()
      for b in pipeline.train_batches(ds, source, config.batch_size, r, 1):
        state, scalars = step_fn(state, parallel.shard(b))
      jax.block_until_ready(scalars)
      seconds[name].append(time.perf_counter() - t)
  med = {name: statistics.median(s) for name, s in seconds.items()}
  return {'bench': 'stream', 'data': 'movie_genres', 'batch_size': config.batch_size,
          'steps_per_round': steps,
          **{f'{n}_steps_per_s': round(steps / m, 1) for n, m in med.items()},
          **{f'{n}_rounds_s': [round(x, 2) for x in s] for n, s in seconds.items()},
          'stream_vs_memory': round(med['memory'] / med['stream'], 3)}
