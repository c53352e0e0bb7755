"""Evaluation: whole-split predictions, metrics equal to scikit-learn's, tuned thresholds, reports."""
