"""The fault-injection matrix (issue 11 part 8): for every stage and each of its phases, a run is
killed (kill -9 of the driver or of one worker), interrupted (SIGINT to the driver) or runs out of
disk (ENOSPC from the atomic writer) at a precise point chosen by DCURATE_FAULT
(dcurate.core.faults, test-only); the first run must exit with the right code and one error line,
and a plain re-run must resume to data files byte-identical to an uninterrupted run.

The whole matrix is ``slow`` (each case is two CLI runs); the unit part and one in-process case
stay in the fast suite."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import docs, tree_digest, write_jsonl, write_parquet

from dcurate.core import faults
from dcurate.io import atomic

ROOT = Path(__file__).resolve().parents[1]

# -- the hook itself (fast) ----------------------------------------------------------------------


def test_fault_spec_parses_and_matches():
    f = faults.parse("pass1:2:kill-worker")
    assert (f.phase, f.number, f.count, f.action) == ("pass", 1, 2, "kill-worker")
    assert f.matches("pass1") and not f.matches("pass0") and not f.matches("scan1")
    g = faults.parse("scan:1:enospc")
    assert g.matches("scan0") and g.matches("scan3") and not g.matches("reshard")
    assert faults.parse("reshard:1:sigint").matches("reshard")
    for bad in ("pass:0:kill-driver", "pass:1:explode", "nowhere:1:sigint", "pass:kill-driver"):
        with pytest.raises(ValueError, match="DCURATE_FAULT"):
            faults.parse(bad)


def test_fault_counts_hits_and_fires_once(monkeypatch):
    monkeypatch.setattr(faults, "_FAULT", faults.parse("merge:2:enospc"))
    monkeypatch.setattr(faults, "_LOADED", True)
    monkeypatch.setattr(atomic, "_FAIL_NEXT", False)
    faults.task_start("merge")
    assert not atomic._FAIL_NEXT  # the first merge passes
    faults.task_start("reshard")
    faults.task_start("merge")
    assert atomic._FAIL_NEXT
    with pytest.raises(OSError, match="No space left"):
        atomic.write_bytes(str(Path(os.devnull).parent / "nonexistent-dcurate-test" / "x"), b"")
    assert not atomic._FAIL_NEXT


def test_enospc_in_process_then_resume(tmp_path, monkeypatch):
    """Filter pass, one worker (tasks run in this process): the first run fails with ENOSPC on its
    second shard, the re-run resumes (the first shard's marker holds) to the uninterrupted bytes."""
    from dcurate.core.options import RunOptions
    from dcurate.runner.driver import run
    from dcurate.stages.filter.stage import FilterParams

    inp = tmp_path / "in"
    for i in range(3):
        write_jsonl(inp / f"s{i}.jsonl", docs(20, f"s{i}-"))
    stages = [("filter", FilterParams(preset="none", keep_if="score > 0.5"))]
    run(str(inp), str(tmp_path / "ref"), stages, RunOptions(workers=1))
    monkeypatch.setattr(faults, "_FAULT", faults.parse("pass0:2:enospc"))
    monkeypatch.setattr(faults, "_LOADED", True)
    out = tmp_path / "out"
    with pytest.raises(OSError) as e:
        run(str(inp), str(out), stages, RunOptions(workers=1))
    assert e.value.errno == 28
    monkeypatch.setattr(faults, "_FAULT", None)
    summary = run(str(inp), str(out), stages, RunOptions(workers=1))
    assert summary["docs_out"] > 0
    assert tree_digest(out) == tree_digest(tmp_path / "ref")


# -- the matrix (slow) ---------------------------------------------------------------------------

ACTIONS = ("kill-driver", "kill-worker", "sigint", "enospc")
RUNNER_PHASES = ["merge", "reshard"]  # every run of the matrix splits shards into pieces and reshards


def _global(rounds: int) -> list[str]:
    return [f"scan{r}" for r in range(rounds)] + [f"reduce{r}" for r in range(rounds)] + ["pass0"]


# stage -> (recipe entry, phases); the side files are filled in by the fixture
MATRIX: dict[str, tuple[dict, list[str]]] = {
    "filter": ({"stage": "filter", "preset": "none", "keep_if": "score > 0.5"}, ["pass0"]),
    "dedup-minhash": ({"stage": "dedup"}, _global(2)),
    "dedup-exact": ({"stage": "dedup", "method": "exact"}, _global(1)),
    "quality": ({"stage": "quality", "model": "@model"}, ["pass0"]),
    "perplexity": ({"stage": "perplexity", "lm": "@arpa", "backend": "builtin"}, ["pass0"]),
    "quality-top": ({"stage": "quality", "model": "@model", "keep_top": 0.5}, _global(1)),
    "perplexity-top": ({"stage": "perplexity", "lm": "@arpa", "backend": "builtin", "keep_top": 0.5}, _global(1)),
    "select-dsir": ({"stage": "select", "method": "dsir", "target": "@target", "k": 2, "min_words": 0}, _global(1)),
    "select-zipfit": ({"stage": "select", "method": "zipfit", "target": "@target", "k": 2}, _global(1)),
    "mix": ({"stage": "mix", "weights": {"a": 0.5, "b": 0.3, "c": 0.2}, "docs": 40}, _global(2)),
}


def _kind_and_rounds(stage: dict, side: dict) -> tuple[str, int]:
    from dcurate.core.stage import StageContext, get_stage
    from dcurate.runner.recipe import parse_stages

    ((name, params),) = parse_stages([_resolve(stage, side)])
    st = get_stage(name)(params, StageContext(workdir=Path(side["dir"]) / "probe"))
    return st.kind, st.rounds


def _resolve(stage: dict, side: dict) -> dict:
    return {k: side[v[1:]] if isinstance(v, str) and v.startswith("@") else v for k, v in stage.items()}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny corpus (three shards, one Parquet; duplicates for dedup, three domains for mix) and
    the side files: a fastText model and an ARPA LM trained by dcurate's own trainers, a target set."""
    from dcurate.stages.perplexity.stage import train_lm
    from dcurate.stages.quality.stage import train_quality

    d = tmp_path_factory.mktemp("faults")
    inp = d / "in"
    write_jsonl(inp / "s0.jsonl", docs(40, "a"))
    write_jsonl(inp / "s1.jsonl.zst", docs(30, "b", 20))  # overlaps s0's texts: duplicates
    write_parquet(inp / "s2.parquet", docs(50, "c", 5), row_group_size=8)
    rng = random.Random(0)
    words = "river valley mill market town bridge harvest spam cheap buy winner lol".split()
    rows = [{"id": f"q{i}", "text": " ".join(rng.choice(words[:7] if i % 2 else words[7:]) for _ in range(30)),
             "label": "hq" if i % 2 else "lq"} for i in range(200)]
    side_dir = d / "side"
    side_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), side_dir / "train.parquet")
    train_quality(str(side_dir / "q.bin"), input=[str(side_dir / "train.parquet")], holdout=0.25, epoch=5, dim=8,
                  bucket=2000)
    write_jsonl(side_dir / "ref.jsonl", docs(60, "r"))
    train_lm([str(side_dir / "ref.jsonl")], str(side_dir / "lm.arpa"), order=2)
    tgt = side_dir / "target.jsonl"
    tgt.write_text("".join(json.dumps({"id": f"t{i}", "text": r["text"]}) + "\n" for i, r in enumerate(docs(12, "t"))))
    return {"dir": d, "input": str(inp), "model": str(side_dir / "q.bin"), "arpa": str(side_dir / "lm.arpa"),
            "target": str(tgt), "refs": {}}


def test_matrix_covers_every_phase_of_every_stage(tmp_path):
    """The phase lists above are what the planner runs: a global stage's scan and reduce rounds."""
    side = {"dir": str(tmp_path), "model": "q.bin", "arpa": "lm.arpa", "target": "t.jsonl"}  # not opened
    for stage, (entry, phases) in MATRIX.items():
        kind, rounds = _kind_and_rounds(entry, side)
        assert phases == (_global(rounds) if kind == "global" else ["pass0"]), (stage, kind, rounds)


def _env(fault: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for k in ("DCURATE_TRACEBACK", "DCURATE_FAULT"):
        env.pop(k, None)
    if fault:
        env["DCURATE_FAULT"] = fault
    return env


def _recipe(world: dict, stage: str, out: Path) -> Path:
    entry = _resolve(MATRIX[stage][0], world)
    doc = {"input": world["input"], "output": str(out), "workers": 2, "seed": 3, "split_size": 1500,
           "shard_size": 10, "stages": [entry]}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _dc(recipe: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dcurate", "run", str(recipe)], capture_output=True, text=True,
                          env=_env(fault), cwd=ROOT, timeout=900)


def _reference(world: dict, stage: str) -> dict[str, bytes]:
    if stage not in world["refs"]:
        out = world["dir"] / f"ref-{stage}"
        r = _dc(_recipe(world, stage, out))
        assert r.returncode == 0, r.stderr
        world["refs"][stage] = tree_digest(out)
        assert world["refs"][stage], "the reference run wrote no data files"
    return world["refs"][stage]


def _error_line(r: subprocess.CompletedProcess) -> str:
    err = r.stderr.strip()
    assert "Traceback" not in err and "panicked" not in err, err
    lines = err.splitlines()
    assert lines, "no error line"
    # log lines (progress, a stage's settings, mix's plan table) may come before it; the error is
    # the last line, and the only one
    assert not any(x.startswith(("dcurate: error", "dcurate: interrupted")) for x in lines[:-1]), err
    return lines[-1]


def _cases() -> list:
    out = []
    for stage, (_entry, phases) in MATRIX.items():
        for phase in phases + RUNNER_PHASES:
            for action in ACTIONS:
                if phase.startswith("reduce") and action == "kill-worker":
                    continue  # a reduce runs in the driver
                out.append(pytest.param(stage, phase, action, id=f"{stage}-{phase}-{action}"))
    return out


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("stage,phase,action", _cases())
def test_fault_then_resume_equals_uninterrupted(world, stage, phase, action):
    ref = _reference(world, stage)
    out = world["dir"] / f"{stage}-{phase}-{action}"
    recipe = _recipe(world, stage, out)
    r = _dc(recipe, f"{phase}:1:{action}")
    if action == "kill-driver":
        assert r.returncode == -9, (r.returncode, r.stderr)
    elif action == "sigint":
        assert r.returncode == 130, (r.returncode, r.stderr)
        assert _error_line(r).startswith("dcurate: interrupted")
    elif action == "kill-worker":
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "a worker was killed" in _error_line(r)
    else:
        assert r.returncode == 1, (r.returncode, r.stderr)
        assert "no space left on device" in _error_line(r)
    again = _dc(recipe)
    assert again.returncode == 0, again.stderr
    assert tree_digest(out) == ref
    v = subprocess.run([sys.executable, "-m", "dcurate", "verify", str(out)], capture_output=True, text=True,
                       env=_env(None), cwd=ROOT)
    assert v.returncode == 0, v.stdout + v.stderr


GLOBAL_STAGES = [s for s, (_e, phases) in MATRIX.items() if "reduce0" in phases]


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.parametrize("stage", GLOBAL_STAGES)
def test_truncated_stage_work_files_recompute_or_fail_in_one_line(world, stage):
    """Killed in its apply pass (every scan and reduce done), a global stage's work folder holds
    each kind of work file it loads; truncating any one of them, the re-run either recomputes
    (the file was named by a marker with its size) to the uninterrupted bytes, or stops with one
    line naming the file, never a traceback."""
    ref = _reference(world, stage)
    out = world["dir"] / f"trunc-{stage}"
    recipe = _recipe(world, stage, out)
    r = _dc(recipe, "pass0:1:kill-driver")
    assert r.returncode == -9, r.stderr
    backup = world["dir"] / f"trunc-{stage}.bak"
    shutil.copytree(out, backup, symlinks=True)
    work = out / ".dcurate" / "work" / "stages"
    kinds: dict[str, Path] = {}
    for p in sorted(work.rglob("*")):
        if p.is_file() and p.stat().st_size > 1 and not atomic.is_temp_name(p.name):
            kinds.setdefault(re.sub(r"[0-9a-f]{8,}|\d+", "#", str(p.relative_to(work))), p.relative_to(out))
    assert len(kinds) >= 3, kinds
    outcomes = {}
    for kind, rel in kinds.items():
        shutil.rmtree(out)
        shutil.copytree(backup, out, symlinks=True)
        victim = out / rel
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        again = _dc(recipe)
        if again.returncode == 0:
            assert tree_digest(out) == ref, kind
            outcomes[kind] = "recomputed"
        else:
            line = _error_line(again)
            assert again.returncode == 1 and str(victim) in line, (kind, again.returncode, line)
            outcomes[kind] = "one line"
    print(stage, outcomes)


# -- integrity gaps: work files, plan files, rejected files (fast) ---------------------------------


def _truncations(path: Path) -> list[bytes]:
    data = path.read_bytes()
    return [b"", data[: len(data) // 2], data[:-1]]


def test_malformed_stage_work_files_are_one_line_naming_them(tmp_path):
    import numpy as np

    from dcurate.core import stagefiles
    from dcurate.core.workfile import BadWorkFile

    np.save(tmp_path / "a.npy", np.arange(1000, dtype=np.int64))
    np.savez(tmp_path / "b.npz", rows=np.arange(1000), rep=np.ones(1000, dtype=bool))
    t = pa.table({"id": [f"x{i}" for i in range(500)]})
    with pa.OSFile(str(tmp_path / "c.arrow"), "wb") as f, pa.ipc.new_file(f, t.schema) as w:
        w.write_table(t)
    (tmp_path / "d.json").write_text(json.dumps([{"k": i} for i in range(50)]))
    loaders = {"a.npy": stagefiles.load_npy, "b.npz": stagefiles.load_npz, "c.arrow": stagefiles.read_arrow,
               "d.json": stagefiles.load_json}
    mmap = {"a.npy": lambda p: stagefiles.load_npy(p, mmap=True)}
    for name, load in list(loaders.items()) + list(mmap.items()):
        path = tmp_path / name
        good = path.read_bytes()
        load(path)  # the intact file loads
        for bad in _truncations(path):
            path.write_bytes(bad)
            with pytest.raises(BadWorkFile) as e:
                load(path)
            msg = str(e.value)
            assert msg.startswith(f"{path}: malformed work file") and "\n" not in msg, msg
        path.write_bytes(good)
    with pytest.raises(FileNotFoundError):  # absent is not malformed: callers decide
        stagefiles.load_npy(tmp_path / "absent.npy")


def test_empty_or_truncated_plan_file_is_named(tmp_path):
    import numpy as np

    from dcurate.core.workfile import BadWorkFile
    from dcurate.runner import tasks
    from dcurate.runner.markers import read_plan, write_plan

    path = tmp_path / "plan-round0.plan"
    write_plan(str(path), {"keep": np.arange(100), "n": 3})
    assert read_plan(str(path))["n"] == 3
    for bad, kind in zip(_truncations(path), ("empty", "malformed", "malformed"), strict=True):
        path.write_bytes(bad)
        tasks.forget_plan(str(path))
        with pytest.raises(BadWorkFile) as e:
            tasks.load_plan(str(path))
        msg = str(e.value)
        assert msg.startswith(f"{path}: {kind} plan file") and "\n" not in msg, msg


def test_rejected_files_are_in_the_format_their_name_says(tmp_path):
    """A fused pass (filter, then dedup's first scan) writes Parquet intermediates; its rejected
    documents keep the input's format, as their names say."""
    import zstandard

    from dcurate.core.options import RunOptions
    from dcurate.runner.driver import run
    from dcurate.stages.dedup.stage import Params as DedupParams
    from dcurate.stages.filter.stage import FilterParams

    inp = tmp_path / "in"
    write_jsonl(inp / "s0.jsonl.zst", docs(30, "a"))
    write_jsonl(inp / "s1.jsonl.zst", docs(30, "b", 10))
    write_parquet(inp / "s2.parquet", docs(20, "c"))
    rej = tmp_path / "rej"
    stages = [("filter", FilterParams(preset="none", keep_if="score > 0.5")), ("dedup", DedupParams())]
    run(str(inp), str(tmp_path / "out"), stages, RunOptions(workers=1, rejected=str(rej)))
    files = sorted(p for p in rej.rglob("*") if p.is_file())
    assert {p.parent.name for p in files} == {"00-filter", "01-dedup"}, files
    rows = 0
    for p in files:
        if p.name.endswith(".parquet"):
            rows += pq.read_table(p).num_rows
        else:
            assert p.name.endswith(".jsonl.zst"), p
            raw = zstandard.ZstdDecompressor().stream_reader(p.open("rb")).read()
            assert not raw.startswith(b"PAR1")
            lines = raw.decode().splitlines()
            assert all(json.loads(x)["dcurate_reason"] for x in lines)
            rows += len(lines)
    assert rows > 0
