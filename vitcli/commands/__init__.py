"""One module per `vitcli <command>`, each exposing a Hydra `main`."""
