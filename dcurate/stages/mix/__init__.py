"""mix: the stage (stage) and the RegMix mixture fit (regmix)."""
