"""`python -m dcurate` = the `dcurate` command."""

from dcurate.cli.entry import main

main()
