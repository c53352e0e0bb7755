"""The prepared files, read back a batch at a time: the same arrays tfds' own decoder gives,
the record checks recorded when they were prepared, and a damaged, truncated, missing or
extra file refused, naming it, before anything is read (B12)."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core import shuffle as tfds_shuffle

from conftest import tiny_headline_config
from mlheads import errors
from mlheads.data import base
from mlheads.data import fingerprint as fingerprint_lib
from mlheads.data import pipeline
from mlheads.data import records
from mlheads.data import tweets
import mlheads.data as data_lib


@pytest.fixture
def tiny(tweets_dir):
  config = tiny_headline_config(tweets_dir)
  return config, data_lib.load(config.data)


def test_batches_decode_to_what_tfds_itself_decodes(tiny):
  config, ds = tiny
  builder = tweets.builder(config.data)
  for split in base.SPLITS:
    reference = builder.as_data_source(split)  # tfds' per-example decoding
    idx = np.array([5, 0, 17, 3, 3])  # any order, repeats allowed
    got = ds.split(split).read(idx)
    assert set(got) == set(reference[0])
    for k, v in got.items():
      want = np.stack([reference[int(i)][k] for i in idx])
      assert v.dtype == want.dtype and v.shape == want.shape
      np.testing.assert_array_equal(v, want)


def test_the_checks_run_when_preparing_are_recorded_in_the_metadata(tiny):
  _, ds = tiny
  recorded = ds.meta['checks']
  for split in base.SPLITS:
    arrays = pipeline.read_split(ds.split(split))
    assert recorded[split]['examples'] == len(ds.split(split)) == len(arrays['tokens'])
    assert recorded[split]['labels']['retweeted']['positives'] == [
        int(arrays['retweeted'].sum())]


def _copy(tweets_dir, tmp_path, config):
  """A private copy of the prepared slice (the session's is shared), and its version dir."""
  shutil.copytree(tweets_dir, tmp_path / 'tfds')
  config.data.dir = str(tmp_path / 'tfds')
  return config, pathlib.Path(tweets.builder(config.data).data_dir)


def _flip(p: pathlib.Path):
  data = bytearray(p.read_bytes())
  data[len(data) // 2] ^= 0x01
  p.write_bytes(bytes(data))


@pytest.mark.parametrize('damage,message', [
    (lambda d: _flip(d / 'trump_tweets-train.array_record-00000-of-00001'),
     'trump_tweets-train.array_record-00000-of-00001 is damaged: its sha256 differs'),
    (lambda d: os.truncate(d / 'trump_tweets-test.array_record-00000-of-00001', 100),
     'trump_tweets-test.array_record-00000-of-00001 is damaged: 100 bytes'),
    (lambda d: os.remove(d / 'trump_tweets-validation.array_record-00000-of-00001'),
     'trump_tweets-validation.array_record-00000-of-00001 is missing'),
    (lambda d: _flip(d / 'metadata.json'), 'metadata.json is damaged'),
    (lambda d: (d / 'stray.array_record').write_bytes(b'x'), "files it was not prepared with: "
     "['stray.array_record']"),
])
def test_b12_a_damaged_truncated_missing_or_extra_prepared_file_fails_naming_it(
    tweets_dir, tmp_path, damage, message):
  config, version_dir = _copy(tweets_dir, tmp_path, tiny_headline_config(tweets_dir))
  data_lib.load_checked(config)  # intact: loads
  damage(version_dir)
  with pytest.raises(errors.UsageError, match='prepared data') as e:
    data_lib.load_checked(config)
  assert message in str(e.value) and str(version_dir) in str(e.value), e.value
  assert 'to prepare the data set again' in str(e.value) and '\n' not in str(e.value)


def test_b12_files_without_a_record_are_recorded_then_checked(tweets_dir, tmp_path):
  """A preparation killed between tfds' last write and ours leaves no FILES: the files are
  recorded at the next load, and checked from then on."""
  config, version_dir = _copy(tweets_dir, tmp_path, tiny_headline_config(tweets_dir))
  (version_dir / records.FILES).unlink()
  data_lib.load_checked(config)
  files = json.loads((version_dir / records.FILES).read_text())['files']
  assert 'trump_tweets-train.array_record-00000-of-00001' in files
  assert 'dataset_info.json' not in files  # tfds may rewrite it; it parses it itself


def test_the_fingerprint_takes_the_verified_hashes_and_equals_one_read_from_the_files(
    tweets_dir, tmp_path):
  config, _ = _copy(tweets_dir, tmp_path, tiny_headline_config(tweets_dir))
  ds = data_lib.load_checked(config)
  b = data_lib.get(config.data.name).build(config.data)
  files = {s: [str(p) for p in b.info.splits[s].filepaths] for s in ds.splits}
  rows = {s: len(v) for s, v in ds.splits.items()}
  assert fingerprint_lib.of_files(files, rows, ds.meta) == ds.fingerprint
  # The digests are what `of_files` reads: a wrong one changes the fingerprint.
  name = os.path.basename(files['train'][0])
  other = fingerprint_lib.of_files(files, rows, ds.meta, {name: '00' * 32})
  assert other['records']['train'] != ds.fingerprint['records']['train']


def test_a_split_spilled_to_disk_while_preparing_writes_the_same_files(
    tweets_dir, tmp_path, monkeypatch):
  """tfds' writer spills past records.BUFFER_BYTES (memory stays bounded on a large table);
  with a 1-byte buffer every record goes through its temporary files, and the prepared
  files are byte for byte the ones the in-memory path wrote, and read back the same. No
  spilled bucket is sorted in memory (tfds' own read-back would hold the whole split)."""
  data_lib.load(tiny_headline_config(tweets_dir).data)  # in memory (if not prepared yet)
  monkeypatch.setattr(records, 'BUFFER_BYTES', 1)
  monkeypatch.setattr(tfds_shuffle, 'sorted', lambda *a, **k: pytest.fail('a bucket sorted'),
                      raising=False)
  spilled_records = []
  to_disk = tfds_shuffle.Shuffler._add_to_bucket  # pylint: disable=protected-access
  monkeypatch.setattr(tfds_shuffle.Shuffler, '_add_to_bucket',
                      lambda self, *a: (spilled_records.append(1), to_disk(self, *a))[1])
  config = tiny_headline_config(tweets_dir)
  config.data.dir = str(tmp_path / 'tfds')
  spilled = data_lib.load(config.data)
  kept = json.loads((pathlib.Path(tweets.builder(tiny_headline_config(tweets_dir).data)
                                  .data_dir) / records.FILES).read_text())['files']
  made = json.loads((pathlib.Path(tweets.builder(config.data).data_dir) / records.FILES
                     ).read_text())['files']
  assert made == kept and any('train.array_record' in n for n in made)
  assert not list((tmp_path / 'tfds').rglob('*.tmp'))  # tfds removed its spill files
  assert len(spilled_records) == sum(len(spilled.split(s)) for s in base.SPLITS)


class BadLabels(base.ArrayBuilder):
  """A builder whose train split holds a label 2."""
  VERSION = tfds.core.Version('1.0.0')

  def fields(self):
    return {'x': base.Field((2,), 'float32', 'features'),
            'y': base.Field((1,), 'float32', 'binary')}

  def make_splits(self):
    good = {'x': np.zeros((4, 2), np.float32), 'y': np.array([[0], [1], [1], [0]], np.float32)}
    bad = dict(good, y=np.array([[0], [1], [2], [0]], np.float32))
    return {'train': bad, 'validation': good, 'test': good}, {}


def test_b01_the_record_checks_run_before_tfds_writes_anything(tmp_path):
  builder = BadLabels(data_dir=str(tmp_path), file_format='array_record')
  with pytest.raises(errors.UsageError, match=r"split train, row 2: label 'y' column 0 is 2.0, "
                     'not 0 or 1'):
    base.prepare(builder)
  assert not builder.is_prepared()
  assert not [p for p in tmp_path.rglob('*') if p.is_file()]
