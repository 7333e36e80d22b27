"""dedup: the stage (stage) and its kernels: MinHash signatures and shingles (minhash), the band and
signature store (store), candidate-pair clustering (graph)."""
