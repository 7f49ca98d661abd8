"""Training engine: loop, evaluation, checkpoints, optimizers and progress."""
