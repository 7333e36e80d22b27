"""`python -m dcurate` = the `dcurate` command."""

from .cli import main

main()
