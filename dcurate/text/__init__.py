"""Text definitions shared by the stages: normalisation and words (normalize), compiled scanners
over Arrow string buffers (scan)."""
