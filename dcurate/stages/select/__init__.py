"""select: the stage (stage) and its kernels: DSIR (dsir), ZIP-FIT (zipfit) and the exact model of
zlib's deflate sizes (deflate_model)."""
