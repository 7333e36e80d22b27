"""dedup: the stage (stage) and its kernels: MinHash signatures and shingles (minhash; small batches
without numba in small), the band and signature store (store), the second scan's candidate documents
and the reduce tasks (candidates), candidate-pair clustering (graph)."""
