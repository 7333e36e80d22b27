"""quality: the stage (stage) and fastText classifier helpers (classifier)."""
