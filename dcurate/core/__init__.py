"""The core every stage and the runner share: the stage contract and registry (stage), parameter
classes (params), run options (options) and the errors users see (errors)."""
