"""The headline run step by step on N (forced) devices, for notes/perf.md "4 devices vs 1,
over an epoch": every step's losses, step 0's gradients, the final parameters and (--eval) the
validation and test losses, all from the library's own set-up, step and evaluation.

  cd REPO && export PYTHONPATH=$PWD JAX_PLATFORMS=cpu
  python notes/four_devices.py --steps=519 --eval --out=/tmp/d1.npz
  XLA_FLAGS=--xla_force_host_platform_device_count=4 \
      python notes/four_devices.py --steps=519 --eval --out=/tmp/d4.npz
  python notes/four_devices.py --compare /tmp/d1.npz /tmp/d4.npz

Perturbations of the one-device run that change nothing but float32 rounding:
--perturb_ulp=K (each initial parameter moved by -1, 0 or +1 ulp, pattern K) and --permute=K
(the rows of every batch in a fixed order K: the batch mean sums in another order).
--near records, at every step, how close each ReLU input comes to 0 (relative to the sum of
its terms' magnitudes; absolute for the first Dense). --save_at=S1,S2 writes the whole state
before those steps; --start_from=FILE --start_step=S resumes from one.
"""

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import headline
from mlheads import sharding
from mlheads import train
from mlheads.data import pipeline
from mlheads.evaluation import runner
from mlheads.model import layers
from mlheads.state import train_state
import mlheads.data as data_lib


def compare(a_path, b_path):
  a, b = np.load(a_path), np.load(b_path)
  for k in ('loss', 'loss_main', 'loss_aux', 'grad_norm'):
    r = np.abs(a[k] - b[k]) / np.abs(a[k])
    first = {t: (np.nonzero(r > t)[0][:1].tolist() or [len(r)])[0] for t in (1e-6, 1e-4)}
    print(f'{k}: first step off by > 1e-6: {first[1e-6]}, > 1e-4: {first[1e-4]} (of {len(r)}); '
          f'largest relative difference before: {r[:max(first[1e-6], 1)].max():.1e}')
  for k in sorted(f for f in a.files if f.startswith('g0')):
    d = np.abs(a[k].astype(np.float64) - b[k]).max() / max(np.abs(a[k]).max(), 1e-30)
    print(f'step 0 gradient {k[2:]}: max |diff| / max |g| = {d:.1e}')
  for k in sorted(f for f in a.files if f.startswith(('validation_', 'test_'))):
    print(f'{k}: {float(a[k]):.6f} vs {float(b[k]):.6f} ({(b[k] / a[k] - 1) * 100:+.3f}%)')


def main():
  p = argparse.ArgumentParser()
  p.add_argument('--steps', type=int, default=519)  # one epoch of the headline
  p.add_argument('--out')
  p.add_argument('--eval', action='store_true')
  p.add_argument('--perturb_ulp', type=int, default=0)
  p.add_argument('--permute', type=int, default=0)
  p.add_argument('--near', action='store_true')
  p.add_argument('--save_at', default='')
  p.add_argument('--start_from', default='')
  p.add_argument('--start_step', type=int, default=0)
  p.add_argument('--compare', nargs=2)
  a = p.parse_args()
  if a.compare:
    return compare(*a.compare)

  c = headline.get_config()
  spec, tx, _ = train.check_config(c)
  ds = data_lib.load(c.data, batch_size=c.batch_size)
  model, heads = train.build(spec, ds)
  par = sharding.DataParallel.over_all_devices()
  create = lambda params=None: train_state.create(model, tx, c.seed, pipeline.example_inputs(ds),
                                                  par.replicated, params=params)
  state = create()
  if a.perturb_ulp:
    rs = np.random.default_rng(a.perturb_ulp)
    def nudge(x):
      d = rs.integers(-1, 2, x.shape)  # -1, 0, +1 ulp
      return np.where(d == 0, x, np.nextafter(x, np.where(d > 0, np.inf, -np.inf).astype(x.dtype)))
    state = create(jax.tree.map(nudge, jax.device_get(state.params)))
  if a.start_from:
    z = np.load(a.start_from)
    leaves, tdef = jax.tree.flatten(state)
    state = jax.device_put(jax.tree.unflatten(tdef, [z[f'l{i}'] for i in range(len(leaves))]),
                           par.replicated)
  step_fn = train.make_train_step(heads, par)
  batches = pipeline.train_batches(ds, ds.split('train'), c.batch_size, c.seed, c.epochs,
                                   a.start_step, rows=par.process_rows(c.batch_size))

  @jax.jit
  def grads(state, batch):  # train_step's loss, differentiated alone
    dense, tables = state.split_params()
    lookups = {k: layers.lookup_rows(t, batch['inputs'][k]) for k, t in tables.items()}

    def loss_fn(dense, rows):
      inputs = {**batch['inputs'], **{k: l._replace(rows=rows[k]) for k, l in lookups.items()}}
      logits = state.apply_fn({'params': state.merge_params(dense, tables)}, inputs,
                              labels=batch['targets'], masks=batch['masks'], train=True)
      return sum(heads[k].weight * v for k, v in train.head_losses(heads, logits, batch).items())
    return jax.grad(loss_fn, argnums=(0, 1))(dense, {k: l.rows for k, l in lookups.items()})

  @jax.jit
  def near(params, batch):  # [layers] of [B, width]: |ReLU input| / sum of |its terms|
    _, inter = model.apply({'params': params}, batch['inputs'], capture_intermediates=True)
    t = inter['intermediates']['trunk']
    out = [jnp.abs(t['dense_0']['__call__'][0])]
    for i in range(1, len(c.trunk.hidden)):
      h, k = jax.nn.relu(t[f'dense_{i - 1}']['__call__'][0]), params['trunk'][f'dense_{i}']
      scale = jnp.abs(h) @ jnp.abs(k['kernel']) + jnp.abs(k['bias'])
      out.append(jnp.abs(t[f'dense_{i}']['__call__'][0]) / scale)
    return out

  out = {k: [] for k in ('loss', 'loss_main', 'loss_aux', 'grad_norm')}
  nears, save_at, t0 = [], {int(s) for s in a.save_at.split(',') if s}, time.time()
  for step in range(a.start_step, a.steps):
    if step in save_at:
      np.savez(a.out.replace('.npz', f'_state{step}.npz'),
               **{f'l{i}': x for i, x in enumerate(jax.device_get(jax.tree.leaves(state)))})
    batch = next(batches)
    if a.permute:
      order = np.random.default_rng(a.permute).permutation(c.batch_size)
      batch = jax.tree.map(lambda x: x[order], batch)
    batch = par.shard(batch)
    if a.near:
      nears.append(jax.device_get(near(state.params, batch)))
    if step == a.start_step:
      for path, g in jax.tree_util.tree_flatten_with_path(jax.device_get(grads(state, batch)))[0]:
        out['g0' + jax.tree_util.keystr(path)] = g
    state, scalars = step_fn(state, batch)
    for k, v in jax.device_get(scalars).items():
      out[k].append(float(v))
  for path, x in jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]:
    out['p' + jax.tree_util.keystr(path)] = x
  for i in range(len(nears[0]) if nears else 0):
    out[f'near{i}'] = np.stack([n[i] for n in nears])
  if a.eval:
    eval_fn = runner.make_eval_fn(model, heads, par, c.dtype)
    prop = runner.propensities(heads, ds, ds.split('train'), c.evaluation.propensity_a,
                               c.evaluation.propensity_b)
    for split in ('validation', 'test'):
      m = runner.metrics_of(runner.evaluate_split(eval_fn, state.params, ds, ds.split(split),
                                                  c.eval_batch_size, heads, propensity=prop))
      for h in m:
        out[f'{split}_{h}_loss'] = m[h]['loss']
        print(f'{split} {h} loss {m[h]["loss"]:.6f}')
  np.savez(a.out, **{k: np.asarray(v) for k, v in out.items()})
  print(f'devices {jax.device_count()}, steps {a.start_step}-{a.steps}, '
        f'{time.time() - t0:.0f} s, last loss {out["loss"][-1]}')


if __name__ == '__main__':
  sys.exit(main())
