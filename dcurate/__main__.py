"""`python -m dcurate` = the `dcurate` command."""

from ._entry import main

main()
