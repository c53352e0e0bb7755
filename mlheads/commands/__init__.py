"""Command-line tools besides training: predict, score, compare, bench, the experiment list."""
