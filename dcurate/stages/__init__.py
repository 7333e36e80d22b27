"""One package per stage; its `stage` module registers the stage classes with :func:`dcurate.core.stage.register`
and may expose ``register_cli(app)`` for extra commands (``train-quality``, ``mix-fit``, ...)."""
