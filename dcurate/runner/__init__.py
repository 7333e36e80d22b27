"""The runner: recipes (recipe), planning and executing passes with resume (driver), process
pools and Ray (executor), and the fork server's warm-up (warmup)."""
