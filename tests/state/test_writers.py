"""Metric writers: one line per record; a disabled writer (processes other than 0) writes
nothing at all."""

import json

from mlheads.state import writers


def test_b30_only_an_enabled_writer_writes_metrics_jsonl_and_tensorboard(tmp_path):
  """B30: every process but 0 gets a disabled writer: no file, no folder, no line."""
  (tmp_path / 'p0').mkdir()
  (tmp_path / 'p1').mkdir()
  with writers.MetricWriter(str(tmp_path / 'p0')) as w0, \
      writers.MetricWriter(str(tmp_path / 'p1'), enabled=False) as w1:
    for w in (w0, w1):
      w.write(5, 'train', {'loss': 0.5, 'nan': float('nan')})
  assert list((tmp_path / 'p1').iterdir()) == []
  lines = (tmp_path / 'p0' / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(l) for l in lines] == [{'step': 5, 'split': 'train', 'loss': 0.5,
                                              'nan': None}]
  assert list((tmp_path / 'p0' / 'tensorboard').iterdir())
