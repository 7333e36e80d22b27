"""Small stages used to test the runner independently of the real stages."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.params import param
from dcurate.core.stage import Result, Stage, with_column


def _in_pool_worker() -> bool:
    import multiprocessing

    return multiprocessing.parent_process() is not None


@dataclass
class LenParams:
    min_chars: int = param(0, "drop shorter documents")
    calls_dir: str | None = param(None, "append one line per processed piece here (to count work)")
    crash_on: str | None = param(None, "raise when processing this shard stem")
    die_on: str | None = param(None, "kill the pool process (SIGKILL) that processes this shard stem ('*': any)")
    sleep: float = param(0.0, "seconds to sleep per batch (to let the pool start before the driver is done)")


class ToyLen(Stage):
    """Map stage: adds n_chars, drops documents shorter than min_chars."""

    name = "toy_len"
    Params = LenParams

    def process(self, batch, shard, pos):
        p = self.params
        if p.crash_on and shard.stem == p.crash_on and not os.environ.get("DCURATE_NO_CRASH"):
            raise RuntimeError(f"planned crash in {shard.stem}")
        if p.sleep:
            import time

            time.sleep(p.sleep)
        if p.die_on and (p.die_on == "*" or shard.stem == p.die_on) and _in_pool_worker():
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if p.calls_dir and pos == 0:
            os.makedirs(p.calls_dir, exist_ok=True)
            with open(os.path.join(p.calls_dir, "calls.txt"), "a") as f:
                f.write(f"{shard.stem}\n")
        n = pc.utf8_length(self.texts(batch))
        batch = with_column(batch, "n_chars", n)
        keep = np.asarray(pc.greater_equal(n, p.min_chars).to_numpy(zero_copy_only=False), dtype=bool)
        return Result.keep_where(batch, keep, self.reason("short"))


@dataclass
class TopParams:
    k: int = param(3, "keep the k longest documents of the whole run (ties: smallest id)")


class ToyTopK(Stage):
    """Global stage, 2 rounds: round 0 counts, round 1 collects (len, id), reduce picks top k."""

    name = "toy_topk"
    Params = TopParams
    kind = "global"
    rounds = 2

    def scan(self, batches, shard, round, plan):
        if round == 0:  # the count goes through a work file, as real stages pass large data
            n = sum(b.num_rows for b in batches)
            (self.ctx.workdir / f"{shard.key}.count").write_text(str(n))
            return shard.key
        out = []
        for b in batches:
            lens = pc.utf8_length(self.texts(b)).to_pylist()
            ids = b.column(self.ctx.id_field).to_pylist()
            out.extend(zip(lens, ids, strict=True))
        return out

    def reduce(self, partials, round, plan):
        if round == 0:
            return {"total": sum(int((self.ctx.workdir / f"{key}.count").read_text()) for _, key in partials)}
        allp = [x for _, p in partials for x in p]
        allp.sort(key=lambda t: (-t[0], t[1]))
        return {"total": plan["total"], "keep": {i for _, i in allp[: self.params.k]}}

    def apply(self, batch, shard, pos, plan):
        ids = batch.column(self.ctx.id_field).to_pylist()
        keep = np.array([i in plan["keep"] for i in ids], dtype=bool)
        batch = with_column(batch, "total_docs", pa.array([plan["total"]] * batch.num_rows, pa.int64()))
        return Result.keep_where(batch, keep, self.reason("not_top"), {"kept": int(keep.sum())})

    def finish(self, plan):
        return {"total_seen": plan["total"]}
