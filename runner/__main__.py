"""`python -m runner` runs the opsrun CLI."""

from runner.cli import main

main()
