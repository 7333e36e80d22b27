"""filter: the stage (stage), Gopher/C4 text rules (rules) and --keep-if expressions (expr)."""
