"""The base layer every other package builds on: config schemas and their closed choices,
user errors, atomic file I/O, the run-dir contract (every file name a run keeps),
checkpoints, prediction files, RNG state, and the process Runtime (device, DDP rank, precision).

May import: nothing else from vitcli.
"""
