"""A run's state: the TrainState, its checkpoints (orbax + sha256 manifest), the workdir, metric files."""
