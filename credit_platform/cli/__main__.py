"""`python -m credit_platform.cli`: the `credit-platform` command."""

from credit_platform.cli.main import main

main()
