"""Multi-label metrics (minimal version: accuracy and ROC AUC)."""

import numpy as np
from scipy import stats


def compute(labels, scores, threshold=0.5, mask=None) -> dict[str, float]:
  labels = np.asarray(labels, np.float64)
  scores = np.asarray(scores, np.float64)
  mask = np.ones_like(labels) if mask is None else np.asarray(mask, np.float64)
  known = mask > 0
  pred = scores > threshold
  out = {'accuracy': float(((pred == (labels > 0)) & known).sum() / max(known.sum(), 1))}
  aucs = []
  for k in range(labels.shape[1]):
    y, s = labels[known[:, k], k], scores[known[:, k], k]
    pos, neg = (y > 0).sum(), (y == 0).sum()
    if pos and neg:
      r = stats.rankdata(s)
      aucs.append((r[y > 0].sum() - pos * (pos + 1) / 2) / (pos * neg))
  out['roc_auc_macro'] = float(np.mean(aucs)) if aucs else float('nan')
  return out
