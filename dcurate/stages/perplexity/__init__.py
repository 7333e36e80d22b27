"""perplexity: the stage (stage) and the n-gram language models (lm)."""
