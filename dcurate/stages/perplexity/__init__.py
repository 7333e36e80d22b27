"""perplexity: the stage (stage), the n-gram language models (lm: training, ARPA) and their tokenisation (tokenize)."""
