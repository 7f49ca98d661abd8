"""One thin Hydra app per `vitcli <command>`: compose the command's primary config, check
what only the command can check, call the library, print. A command never imports another.

May import: every package but vitcli.cli.
"""
