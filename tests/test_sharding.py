"""The same program on 4 (forced) CPU devices: batch sharded, parameters replicated."""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import ROOT

# Forced devices and two processes, each a subprocess.
pytestmark = pytest.mark.slow

SNIPPET = r'''
import json, jax, numpy as np
from test_train import _toy, _config, _batch
from conftest import compiled
from mlheads import configs, errors
ds, arrays = _toy()
c = _config()
trainer = compiled(c, ds)
state = trainer.init_state(0)
batch = trainer.shard(_batch(ds, arrays, 16))
losses = []
for _ in range(5):
  state, s = trainer.train_step(state, batch)
  losses.append(float(s['loss']))
c.batch_size = 6
try:
  configs.validate(c, jax.device_count())
  err = ''
except errors.UsageError as e:
  err = str(e)
from mlheads import distributed
print(json.dumps({'devices': jax.device_count(), 'losses': losses, 'err': err,
                  'spec': str(batch['inputs']['x'].sharding.spec),
                  'describe': distributed.describe()}))
'''


def _run(devices: int) -> dict:
  env = dict(os.environ, PYTHONPATH=f'{ROOT}:{ROOT / "tests"}', JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  r = subprocess.run([sys.executable, '-c', SNIPPET], env=env, capture_output=True, text=True,
                     timeout=300, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def test_four_devices_train_like_one():
  """B15: on 4 devices the same step gives the same losses, and a batch not divisible by the devices
  is refused."""
  one, four = _run(1), _run(4)
  assert four['devices'] == 4 and "'data'" in four['spec']
  assert four['describe'] == 'devices: 4, processes: 1, local devices: 4, platform: cpu'
  assert one['describe'] == 'devices: 1, processes: 1, local devices: 1, platform: cpu'
  for a, b in zip(one['losses'], four['losses']):
    assert abs(a - b) < 1e-4 * max(1.0, abs(a))
  assert 'not divisible by the 4 devices' in four['err']


MULTI = r'''
import json, sys, jax
jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(sys.argv[1], 2, int(sys.argv[2]))
from test_train import _toy, _config, _batch
from conftest import compiled
ds, arrays = _toy()
trainer = compiled(_config(), ds)
state = trainer.init_state(0)
batch = _batch(ds, arrays, 16)
losses = []
for _ in range(5):
  state, s = trainer.train_step(state, trainer.parallel.shard_global(batch))
  losses.append(float(s['loss']))
print(json.dumps({'process': jax.process_index(), 'devices': jax.device_count(),
                  'losses': losses}))
'''


def test_two_processes_on_localhost_train_like_one():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
  env = dict(os.environ, PYTHONPATH=f'{ROOT}:{ROOT / "tests"}', JAX_PLATFORMS='cpu',
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  procs = [subprocess.Popen([sys.executable, '-c', MULTI, f'127.0.0.1:{port}', str(i)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=240)
    assert p.returncode == 0, err[-2000:]
    outs.append(json.loads(out.strip().splitlines()[-1]))
  one = _run(1)
  assert [o['process'] for o in outs] == [0, 1] and outs[0]['devices'] == 2
  for o in outs:
    for a, b in zip(one['losses'], o['losses']):
      assert abs(a - b) < 1e-4 * max(1.0, abs(a))
