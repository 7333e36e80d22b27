"""One module per stage; each registers its stage classes with :func:`dcurate.stage.register`
and may expose ``register_cli(app)`` for extra commands (``train-quality``, ``mix-fit``, ...)."""
