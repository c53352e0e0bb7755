"""The same program on 4 (forced) CPU devices: batch sharded, parameters replicated."""

import json
import os
import subprocess
import sys

from conftest import ROOT

SNIPPET = r'''
import json, jax, numpy as np
from test_train import _toy, _config, _batch
from mlheads import configs, errors, train
ds, arrays = _toy()
c = _config()
trainer = train.Trainer(c, ds)
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
print(json.dumps({'devices': jax.device_count(), 'losses': losses, 'err': err,
                  'spec': str(batch['inputs']['x'].sharding.spec)}))
'''


def _run(devices: int) -> dict:
  env = dict(os.environ, PYTHONPATH=f'{ROOT}:{ROOT / "tests"}', JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  r = subprocess.run([sys.executable, '-c', SNIPPET], env=env, capture_output=True, text=True,
                     timeout=300, check=False)
  assert r.returncode == 0, r.stderr[-2000:]
  return json.loads(r.stdout.strip().splitlines()[-1])


def test_four_devices_train_like_one():
  one, four = _run(1), _run(4)
  assert four['devices'] == 4 and "'data'" in four['spec']
  for a, b in zip(one['losses'], four['losses']):
    assert abs(a - b) < 1e-4 * max(1.0, abs(a))
  assert 'not divisible by the 4 devices' in four['err']
