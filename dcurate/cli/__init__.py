"""The command line: the Typer app (app) and the console entry point (entry)."""
