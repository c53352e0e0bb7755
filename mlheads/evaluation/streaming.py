"""One output's metrics over a split of any size, exact, in bounded memory.

    acc = streaming.Accumulator(K, rows, thresholds={'own': 0.5, 'tuned': t_k},
                                inv_propensity=w_k)
    for labels, scores, mask in batches:        # [B, K], as metrics.check_inputs returns them
      acc.add(labels, scores, mask)
    result = acc.finish(tune=True, calibrate='platt')

Row pass (`add`, per batch): the threshold counts of each threshold set (counts.py), the sums
of the sample-wise ranking and @k metrics (`ranking.row_sums`), the batch's packed keys
(score bits, label bit; -2 where masked) into a `KeyStore`, and the score of every positive.

Class pass (`finish`, per block of whole classes): a block's keys `[C, rows]` are sorted once
per class; each positive's rank among its class's entries (a binary search in the sorted
keys) is all that the class's AP, ROC AUC and F1-best threshold need (`_summaries`), with no
pass over the negatives. The block's sorted rows, merged into one sorted run, give each
distinct positive score the number of entries of the block scored at least as high (and
higher); summed over blocks, these counts give micro AP, micro ROC AUC and the
micro-F1-best threshold the same way, exactly. Calibration is fitted and ECE binned per
block too (calibration.py).

Memory: the keys take 4 bytes per entry (rows x K); above `in_memory_bytes` they go to a
temporary file laid out block by block (reads back contiguous), so the peak is about
  one batch (B x K x ~24 bytes) + one block (`block_entries` x ~48 bytes)
  + 28 bytes per distinct positive score + O(K) per-class arrays,
whatever the split's size: with the defaults (2**22 entries a block), about 0.6 GB for
K = 10,000 at B = 1,000 (measured: 906 MiB peak RSS for the whole bench process, 307 MiB of
it before the evaluation; docs/metrics.md). The file needs rows x K x 4 bytes of disk.
"""

import dataclasses
import math
import os
import tempfile
from collections.abc import Mapping

import jax
import numpy as np

from mlheads.evaluation import calibration as calibration_lib
from mlheads.evaluation import counts as counts_lib
from mlheads.evaluation import ranking

BLOCK_ENTRIES = 2**22
IN_MEMORY_BYTES = 2**28
CALIBRATION_ENTRIES = 2**18  # calibration's chunk of a block (`_calibrate`): ~45 MB

_update = jax.jit(counts_lib.update)
_finalize = jax.jit(counts_lib.finalize)
_keys = jax.jit(ranking.sort_keys)


class KeyStore:
  """A split's packed keys `[rows, K]` int32, read back by blocks of whole classes `[C, rows]`.

  In memory up to `in_memory_bytes`; beyond, in one temporary file (under `directory`)
  holding block after block, each `[rows, C]` row-major, so that a batch writes one
  contiguous run per block and a block reads back in one piece.
  """

  def __init__(self, rows: int, num_classes: int, width: int,
               in_memory_bytes: int = IN_MEMORY_BYTES, directory: str | None = None):
    self.rows, self.num_classes = rows, num_classes
    self.blocks = [(c, min(c + width, num_classes)) for c in range(0, num_classes, width)]
    self.in_memory = rows * num_classes * 4 <= in_memory_bytes
    if self.in_memory:
      self._keys = np.full((rows, num_classes), -2, np.int32)
    else:
      self._file = tempfile.TemporaryFile(dir=directory, prefix='mlheads-keys-')
      self._file.truncate(rows * num_classes * 4)

  def _offset(self, c0: int, c1: int, row: int) -> int:
    return 4 * (c0 * self.rows + row * (c1 - c0))

  def write(self, row: int, keys: np.ndarray) -> None:
    """Rows `row .. row + len(keys)` of every class."""
    if self.in_memory:
      self._keys[row:row + len(keys)] = keys
      return
    for c0, c1 in self.blocks:
      self._file.seek(self._offset(c0, c1, row))
      np.ascontiguousarray(keys[:, c0:c1]).tofile(self._file)

  def block(self, i: int) -> np.ndarray:
    """Block i's keys `[C, rows]`, C-contiguous."""
    c0, c1 = self.blocks[i]
    if self.in_memory:
      return np.ascontiguousarray(self._keys[:, c0:c1].T)
    self._file.seek(self._offset(c0, c1, 0))
    flat = np.fromfile(self._file, np.int32, self.rows * (c1 - c0))
    return np.ascontiguousarray(flat.reshape(self.rows, c1 - c0).T)

  def close(self) -> None:
    if not self.in_memory:
      self._file.close()


@dataclasses.dataclass
class Result:
  """What `Accumulator.finish` returns.

  Attributes:
    metrics: threshold set -> {metric: value} (metrics.KEYS; NaN where undefined).
    per_class: threshold set -> {'precision', 'recall', 'f1', 'support', 'count',
      'average_precision', 'roc_auc'} `[K]` (NaN where undefined).
    tuned: `[K]` F1-best thresholds per class, and `tuned_global` (micro F1), if asked.
    calibration: `(a [K], b [K])` fitted here, if asked.
    ece: {'before': x, 'after': y} class-wise ECE (after: with the calibration used).
    reliability: {'before'|'after': calibration.reliability(...)}.
    columns: class -> {'labels', 'scores', 'mask'} `[rows]` of the classes asked for.
  """
  metrics: dict[str, dict[str, float]]
  per_class: dict[str, dict[str, np.ndarray]]
  tuned: np.ndarray | None = None
  tuned_global: float | None = None
  calibration: tuple[np.ndarray, np.ndarray] | None = None
  ece: dict[str, float] | None = None
  reliability: dict[str, dict] | None = None
  columns: dict[int, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)


def _bucket(n: int, cap: int) -> int:
  """The next power of two >= n (>= 1), at most `cap`: few distinct compiled shapes."""
  return min(cap, 1 << max(0, int(n) - 1).bit_length())


class Accumulator:
  """Exact metrics of one output over `rows` examples fed in batches (see the module doc).

  Args:
    num_classes: K.
    rows: the number of examples `add` will be given in all (the key store is sized to it).
    thresholds: name -> scalar or `[K]` thresholds; the threshold metrics are counted at each.
    inv_propensity: `[K]` 1 / propensity for PSP@k and PSnDCG@k (default: all ones).
    block_entries: entries of one class block (rows x classes) in the class pass.
    in_memory_bytes: the key store spills to a temporary file above this size.
    directory: where that file goes (default: the system's temporary directory).
  """

  def __init__(self, num_classes: int, rows: int, *, thresholds: Mapping[str, object],
               inv_propensity=None, block_entries: int = BLOCK_ENTRIES,
               in_memory_bytes: int = IN_MEMORY_BYTES, directory: str | None = None):
    self.k, self.rows = num_classes, rows
    self.thresholds = {n: np.broadcast_to(np.asarray(t, np.float32), (num_classes,))
                       for n, t in thresholds.items()}
    self.counts = {n: counts_lib.init(num_classes) for n in thresholds}
    self.inv_propensity = (np.ones(num_classes, np.float32) if inv_propensity is None
                           else np.asarray(inv_propensity, np.float32))
    n_blocks = math.ceil(num_classes / max(1, min(num_classes, block_entries // max(rows, 1))))
    self.width = math.ceil(num_classes / n_blocks)  # balanced blocks
    self.store = KeyStore(rows, num_classes, self.width, in_memory_bytes, directory)
    self.sums: dict[str, float] = {}
    self.row = 0
    self.batch = 0
    self._positive_bits = []

  def add(self, labels: np.ndarray, scores: np.ndarray, mask: np.ndarray) -> None:
    """One batch: labels int8 0/1, scores float32 in [0, 1], mask bool, each `[b, K]`."""
    b = len(labels)
    if self.row + b > self.rows:
      raise ValueError(f'{self.row + b} rows added to an accumulator of {self.rows}')
    self.batch = self.batch or b
    if b < self.batch:  # a short last batch, padded with masked rows: the same compiled shapes
      pad = ((0, self.batch - b), (0, 0))
      labels, scores, mask = np.pad(labels, pad), np.pad(scores, pad), np.pad(mask, pad)
    for name, t in self.thresholds.items():
      self.counts[name] = _update(self.counts[name], labels, scores, t, mask)
    most = int(np.max(np.sum((labels == 1) & mask, 1), initial=0))
    sums = ranking.row_sums(labels, scores, mask, self.inv_propensity,
                            max_positives=_bucket(most, self.k))
    for name, v in jax.device_get(sums).items():
      self.sums[name] = self.sums.get(name, 0.0) + float(v)
    keys = np.asarray(_keys(labels, scores, mask))[:b]
    self.store.write(self.row, keys)
    self._positive_bits.append(keys[(keys >= 0) & ((keys & 1) == 1)] >> 1)
    self.row += b

  def finish(self, tune: bool = False, calibrate: str = 'none',
             calibration: tuple[np.ndarray, np.ndarray] | None = None,
             columns: int = 0) -> Result:
    """The class pass; returns every metric (see `Result`).

    Args:
      tune: also the F1-best thresholds (per class, and one global).
      calibrate: 'platt' or 'temperature': fit the calibration here (on this split).
      calibration: `(a, b)` to measure the ECE after (e.g. fitted on validation); with
        neither, no ECE.
      columns: keep the `columns` classes with the most positives (for PR curves).
    """
    if self.row != self.rows:
      raise ValueError(f'{self.row} rows added to an accumulator of {self.rows}')
    k = self.k
    ap, auc, tuned = (np.full(k, np.nan, np.float32) for _ in range(3))
    fit = calibrate in ('platt', 'temperature')
    cal = (np.empty(k, np.float32), np.empty(k, np.float32)) if fit else calibration
    ece_bins = ({'before': np.zeros((k, calibration_lib.N_BINS, 3)),
                 'after': np.zeros((k, calibration_lib.N_BINS, 3))} if cal is not None else None)
    first = next(iter(self.counts.values()))
    support = np.asarray(first.tp + first.fn)
    keep = set(np.argsort(-support, kind='stable')[:columns].tolist()) if columns else set()
    kept = {}
    uniq, cnt = np.unique(np.concatenate(self._positive_bits + [np.zeros(0, np.int32)]),
                          return_counts=True)
    n_ge, n_gt = np.zeros(len(uniq), np.int64), np.zeros(len(uniq), np.int64)
    below = np.full(len(uniq), -1, np.int64)
    n_valid = 0
    for i, (c0, c1) in enumerate(self.store.blocks):
      keys = self.store.block(i)
      ks = np.sort(keys, axis=-1)  # each class's keys ascending; masked (-2) first
      ap[c0:c1], auc[c0:c1], tuned[c0:c1] = _per_class(ks)
      flat = np.sort(ks.ravel(), kind='stable') >> 1  # merges the sorted runs; masked: -1
      lo, hi = np.searchsorted(flat, uniq, 'left'), np.searchsorted(flat, uniq, 'right')
      n_ge += flat.size - lo
      n_gt += flat.size - hi
      below = np.maximum(below, np.where(lo > 0, flat[np.maximum(lo - 1, 0)], -1))
      n_valid += int(flat.size - np.searchsorted(flat, 0, 'left'))
      if cal is not None or keep:
        valid = keys >= 0
        y = (keys & 1).astype(np.int8)
        s = np.where(valid, keys >> 1, 0).view(np.float32)
        if cal is not None:
          _calibrate(s, y, valid, calibrate if fit else None, cal, ece_bins, c0)
        for c in sorted(x for x in keep if c0 <= x < c1):
          kept[c] = {'labels': y[c - c0], 'scores': s[c - c0], 'mask': valid[c - c0]}
    self.store.close()
    micro, tuned_global = _micro(uniq, cnt, n_ge, n_gt, below, n_valid)
    rows = max(self.sums.get('rows', 0.0), 1.0)
    ranked = {name: v / rows for name, v in self.sums.items() if name != 'rows'}
    ranked['one_error'] = 1.0 - ranked['precision_at_1']
    ranked['average_precision_macro'] = _nanmean(ap)
    ranked['roc_auc_macro'] = _nanmean(auc)
    ranked.update(micro)
    metrics, per_class = {}, {}
    for name, c in self.counts.items():
      m = {**{m: float(v) for m, v in jax.device_get(_finalize(c)).items()}, **ranked}
      # One label per row: nothing to rank a row's labels against (metrics.keys(1)).
      metrics[name] = {n: v for n, v in m.items() if k != 1 or not ranking.is_ranking(n)}
      per_class[name] = {**counts_lib.per_class(c), 'average_precision': ap, 'roc_auc': auc}
    out = Result(metrics=metrics, per_class=per_class, columns=kept)
    if tune:
      out.tuned, out.tuned_global = tuned, tuned_global
    if cal is not None:
      out.calibration = cal if fit else None
      out.ece = {s: calibration_lib.ece(v) for s, v in ece_bins.items()}
      out.reliability = {s: calibration_lib.reliability(v) for s, v in ece_bins.items()}
    return out


def _calibrate(s, y, valid, method: str | None, cal, ece_bins, c0: int):
  """The calibration of a block's classes `[C, N]` (scores, 0/1 labels, valid mask), a chunk
  of classes of about CALIBRATION_ENTRIES entries at a time: fits `cal[0][c0:], cal[1][c0:]` with
  `method` (None: keeps them) and writes each class's ECE bins before and after.

  A chunk at a time because the Newton fit holds about 46 floats an entry at its peak
  (measured: +184 MB for 5 classes x 200,000 rows, +35 MB for one) and the ECE bins about 5
  words: over a whole block of 2**22 entries that was the peak of from_csv's 2M-row run.
  Every chunk is padded to one shape (one compilation each of the fit and of apply).
  """
  c, n = s.shape
  width = max(1, min(c, CALIBRATION_ENTRIES // max(n, 1)))
  for lo in range(0, c, width):
    hi = min(lo + width, c)
    pad = ((0, width - (hi - lo)), (0, 0))
    s_c, y_c, v_c = (np.pad(x[lo:hi], pad) for x in (s, y, valid))
    a, b = cal[0][c0 + lo:c0 + hi], cal[1][c0 + lo:c0 + hi]  # views: the fit writes into cal
    if method is not None:
      a[:], b[:] = (x[:hi - lo] for x in jax.device_get(
          calibration_lib.fit(s_c, y_c, v_c, method)))
    after = calibration_lib.apply_numpy(s_c, np.pad(a, pad[0])[:, None], np.pad(b, pad[0])[:, None])
    ece_bins['before'][c0 + lo:c0 + hi] = calibration_lib.bins(s[lo:hi], y[lo:hi], valid[lo:hi])
    ece_bins['after'][c0 + lo:c0 + hi] = calibration_lib.bins(
        after[:hi - lo], y[lo:hi], valid[lo:hi])


def _nanmean(x: np.ndarray) -> float:
  kept = ~np.isnan(x)
  return float(np.mean(x[kept], dtype=np.float64)) if kept.any() else float('nan')


def midpoint(v_bits, below_bits) -> np.ndarray:
  """The threshold that predicts {score >= v} and nothing lower: halfway between v and the
  next lower distinct score (`below_bits` < 0: none, then v / 2, or -0.5 when v is 0);
  float32 arithmetic, as thresholds.py states the rule."""
  v = np.asarray(v_bits, np.int32).view(np.float32)
  lower = np.maximum(np.asarray(below_bits), 0).astype(np.int32).view(np.float32)
  mid = lower + (v - lower) / np.float32(2)
  mid = np.where(mid < v, mid, lower)  # adjacent floats: the midpoint may round up to v
  return np.where(np.asarray(below_bits) >= 0, mid,
                  np.where(v > 0, v / np.float32(2), np.float32(-0.5))).astype(np.float32)


def _summaries(group, u, w, n_ge, n_gt, below, n_valid, groups: int):
  """AP, ROC AUC and F1-best threshold per group (a class, or all entries for micro) from
  its positives: distinct scores `u` (bits) of multiplicity `w`, sorted by (group, u), with
  n_ge / n_gt entries of the group scored >= / > u and `below` the highest score < u.

  The conventions are metrics.py's: a positive's precision is taken at its whole tie group,
  a tied (positive, negative) pair counts 1/2. The F1-best threshold predicts {score >= u}
  for the best u, the highest among equals: only a tie group holding a positive can be best,
  so the positives' scores are every candidate needed. NaN AP / AUC and threshold
  ranking.DEFAULT_THRESHOLD for a group without a positive; NaN AP / AUC without a negative.
  """
  w = w.astype(np.float64)
  n_pos = np.bincount(group, weights=w, minlength=groups)
  key = (group.astype(np.int64) << 32) | u.astype(np.int64)  # ascending
  cw = np.concatenate([[0.0], np.cumsum(w)])
  first, end = np.searchsorted(key, key, 'left'), np.searchsorted(key, key, 'right')
  start = np.searchsorted(group, group, 'left')
  tp_ge = n_pos[group] - (cw[first] - cw[start])  # positives of the group scored >= u
  neg_lt = (n_valid[group] - n_ge) - (n_pos[group] - tp_ge)
  neg_tied = (n_ge - n_gt) - (cw[end] - cw[first])
  n_neg = n_valid - n_pos
  with np.errstate(invalid='ignore', divide='ignore'):
    ap = np.bincount(group, weights=w * tp_ge / n_ge, minlength=groups) / n_pos
    auc = np.bincount(group, weights=w * (2 * neg_lt + neg_tied) / 2,
                      minlength=groups) / (n_pos * n_neg)
    f1 = 2 * tp_ge / (n_ge + n_pos[group])
  defined = (n_pos > 0) & (n_neg > 0)
  ap, auc = np.where(defined, ap, np.nan), np.where(defined, auc, np.nan)
  t = np.full(groups, ranking.DEFAULT_THRESHOLD, np.float32)
  if len(u):
    best = np.lexsort((u, f1, group))  # by group, then F1, then score: a group's last wins
    last = best[np.searchsorted(group[best], np.arange(groups), 'right') - 1]
    has = n_pos > 0
    t[has] = midpoint(u[last[has]], below[last[has]])
  return ap.astype(np.float32), auc.astype(np.float32), t


def _per_class(ks: np.ndarray):
  """AP, ROC AUC, F1-best threshold `[C]` of each row of sorted keys `ks` `[C, N]`."""
  c, n = ks.shape
  offset = np.arange(c, dtype=np.int64)[:, None] << 32
  flat = (ks + offset).ravel()  # one ascending run: row r's keys + r * 2^32
  row, col = np.nonzero((ks >= 0) & ((ks & 1) == 1))  # positives, by (class, score)
  u = ks[row, col] >> 1
  base = row.astype(np.int64) << 32
  first_ge = np.searchsorted(flat, base + (u.astype(np.int64) << 1)) - row * n
  first_gt = np.searchsorted(flat, base + ((u.astype(np.int64) + 1) << 1)) - row * n
  first_valid = np.searchsorted(flat, offset[:, 0]) - np.arange(c) * n
  below = np.where(first_ge > first_valid[row], ks[row, np.maximum(first_ge - 1, 0)] >> 1, -1)
  return _summaries(row, u, np.ones(len(u)), n - first_ge, n - first_gt, below,
                    (n - first_valid).astype(np.float64), c)


def _micro(uniq, cnt, n_ge, n_gt, below, n_valid) -> tuple[dict[str, float], float]:
  """Micro AP and ROC AUC, and the micro-F1-best threshold, from each distinct positive
  score's counts over all entries (`_summaries` with one group)."""
  if cnt.sum() == 0:
    nan = float('nan')
    return {'average_precision_micro': nan, 'roc_auc_micro': nan}, ranking.DEFAULT_THRESHOLD
  ap, auc, t = _summaries(np.zeros(len(uniq), np.int64), uniq, cnt, n_ge, n_gt, below,
                          np.array([float(n_valid)]), 1)
  return {'average_precision_micro': float(ap[0]), 'roc_auc_micro': float(auc[0])}, float(t[0])
