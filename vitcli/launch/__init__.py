"""Processes: the torchrun relaunch of `trainer.devices=N`, DDP process groups and the
collectives the loop agrees on, stop signals and the stop vote across ranks, SLURM tasks as
ranks, requeue on time limits and preemption, vitcli's Hydra SLURM launcher, the run-dir lock.

May import: vitcli.core.
"""
