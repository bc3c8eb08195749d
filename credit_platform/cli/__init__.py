"""The `credit-platform` command: the operator's layer on top of everything else."""
