"""Text definitions shared by the stages: normalisation (normalize), the named tokenisers
(tokenizers), the Unicode tables they index (unicode), compiled scanners over Arrow string buffers
(scan, utf8) and hash kernels (hashing)."""
