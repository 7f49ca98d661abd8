"""vitcli's Hydra launcher plugin (hydra/launcher=slurm); the work lives in vitcli/launch/slurm_launcher.py."""


def register() -> None:
    """Make hydra/launcher=slurm's class known to Hydra by name: its plugin scan lists only
    installed files, and misses this package in an editable install. A no-op without submitit."""
    try:
        from hydra.core.plugins import Plugins

        from hydra_plugins.vitcli_launcher.slurm_launcher import VitcliSlurmLauncher
    except ImportError:  # the sweeps extra (hydra-submitit-launcher) is not installed
        return
    Plugins.instance().register(VitcliSlurmLauncher)
