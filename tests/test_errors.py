"""Every failure is one line with a meaningful exit code (0 ok, 1 data/run, 2 usage, 130 Ctrl-C),
and no process outlives a killed driver. Subprocess runs assert the exit code and that stderr is
one line without a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dcurate.core.errors import RecipeError, RunError, explain

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TEXT = "This is a perfectly ordinary sentence about the history of the river valley and its towns. "

# Runs the dcurate CLI with the toy stages of tests/toy_stages.py registered (toy_len can sleep,
# crash or kill the pool process that runs it).
LAUNCH = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import toy_stages
from dcurate.core.stage import register
register(toy_stages.ToyLen)
from dcurate.cli.entry import main
sys.argv = ["dcurate"] + sys.argv[1:]
main()
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("DCURATE_TRACEBACK", None)
    return env


def dc(*args, toys: bool = False, stdin=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", LAUNCH, *map(str, args)] if toys else [sys.executable, "-m", "dcurate", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=ROOT, stdin=stdin)


def one_line(r) -> str:
    """The failure's one line (progress log lines may come before it, never after)."""
    err = r.stderr.strip()
    assert "Traceback" not in err and "panicked" not in err, err
    lines = err.splitlines()
    assert lines, "no error line"
    assert all(" started, " in x or " done, " in x or "docs/s" in x for x in lines[:-1]), err
    return lines[-1]


def jsonl(path: Path, n: int, start: int = 0, extra: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i in range(start, start + n):
            f.write(json.dumps({"id": f"d{i}", "text": f"{TEXT} number {i}"}) + "\n")
        if extra is not None:
            f.write(extra + "\n")
    return path


def test_exit_codes_data_1_usage_2(tmp_path):
    inp = jsonl(tmp_path / "in" / "a.jsonl", 3, extra="{not json")
    r = dc("filter", inp.parent, tmp_path / "o", "--workers", "1")
    assert r.returncode == 1 and "a.jsonl: line 4: malformed JSON" in one_line(r)
    r = dc("filter", inp.parent, tmp_path / "o", "--no-such-flag")
    assert r.returncode == 2
    recipe = tmp_path / "r.yaml"
    recipe.write_text("input: x\noutput: y\nstages:\n  - stage: filter\n    min_wordz: 3\n")
    r = dc("run", recipe)
    assert r.returncode == 2 and "unknown parameter 'min_wordz'" in one_line(r)


def test_out_that_is_a_file_is_a_usage_error(tmp_path):
    a = jsonl(tmp_path / "a.jsonl", 3)
    b = jsonl(tmp_path / "b.jsonl", 3, start=10)
    r = dc("filter", a, b, "--workers", "1")  # `dcurate filter *.jsonl` forgetting OUT
    assert r.returncode == 2 and "is an existing file, not a folder" in one_line(r)
    assert b.read_text().count("\n") == 3


def test_keep_if_deep_nesting_and_huge_integers(tmp_path):
    inp = jsonl(tmp_path / "in" / "a.jsonl", 5)
    deep = "(" * 5000 + "1 < 2" + ")" * 5000
    r = dc("filter", inp, tmp_path / "o1", "--preset", "none", "--keep-if", deep, "--workers", "1")
    assert r.returncode == 2 and "nested 5000 deep" in one_line(r)
    r = dc("filter", inp, tmp_path / "o2", "--preset", "none", "--keep-if", "not " * 3000 + "1 < 2", "--workers", "1")
    assert r.returncode == 2 and "nested too deeply" in one_line(r)
    r = dc("filter", inp, tmp_path / "o3", "--preset", "none", "--workers", "1",
           "--keep-if", "id != '' and 1" + "0" * 5000 + " > 5")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o3" / "a.jsonl").read_text().count("\n") == 5


def test_non_arpa_lm_is_one_line(tmp_path):
    pytest.importorskip("kenlm")
    inp = jsonl(tmp_path / "in" / "a.jsonl", 5)
    bad = tmp_path / "bad.arpa"
    bad.write_text("garbage\n")
    r = dc("perplexity", inp, tmp_path / "o", "--lm", bad, "--backend", "kenlm", "--workers", "1")
    assert r.returncode == 1 and "not an ARPA file" in one_line(r)


def test_broken_pipe_on_stdout_exits_quietly(tmp_path):
    inp = jsonl(tmp_path / "a.jsonl", 20000)
    p = subprocess.Popen([sys.executable, "-m", "dcurate", "filter", str(inp), "-", "--preset", "none",
                          "--workers", "1", "--no-progress"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), cwd=ROOT)
    assert p.stdout is not None and p.stderr is not None
    p.stdout.read(100)
    p.stdout.close()  # the reader goes away, as `| head -c 100` does
    err = p.stderr.read().decode()
    p.wait()
    assert p.returncode in (0, 141), err
    assert "Traceback" not in err and "Broken pipe" not in err and "Exception ignored" not in err


def test_symlink_loop_and_symlinked_subdirectories(tmp_path):
    inp = tmp_path / "in"
    jsonl(inp / "real" / "a.jsonl", 3)
    jsonl(tmp_path / "elsewhere" / "b.jsonl", 4, start=10)
    (inp / "linked").symlink_to(tmp_path / "elsewhere")  # a symlinked sub-directory is read
    (inp / "real" / "up").symlink_to(inp)  # a loop back to an ancestor is entered once
    r = dc("filter", inp, tmp_path / "o", "--preset", "none", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "7 documents written" in r.stdout + r.stderr
    assert (tmp_path / "o" / "linked" / "b.jsonl").exists()
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "x.jsonl").symlink_to(loop / "y.jsonl")
    (loop / "y.jsonl").symlink_to(loop / "x.jsonl")
    r = dc("filter", loop, tmp_path / "o2", "--workers", "1")
    assert r.returncode == 1 and "symlink loop" in one_line(r)


def test_input_vanishing_mid_run_is_one_line(tmp_path):
    inp = tmp_path / "in"
    jsonl(inp / "a.jsonl", 3)
    jsonl(inp / "b.jsonl", 3, start=10)
    # toy_len's crash hook is not what we want here: the launcher deletes b.jsonl once a.jsonl
    # is being processed (calls_dir is written on a piece's first batch).
    launch = LAUNCH.replace("main()", "")
    launch += (
        "import toy_stages as t, os\n"
        "orig = t.ToyLen.process\n"
        "def process(self, batch, shard, pos):\n"
        f"    if os.path.exists({str(inp / 'b.jsonl')!r}): os.remove({str(inp / 'b.jsonl')!r})\n"
        "    return orig(self, batch, shard, pos)\n"
        "t.ToyLen.process = process\n"
        "main()\n"
    )
    r = subprocess.run([sys.executable, "-c", launch, "toy_len", str(inp), str(tmp_path / "o"), "--workers", "1"],
                       capture_output=True, text=True, env=_env(), cwd=ROOT)
    assert r.returncode == 1
    assert "b.jsonl: no such file or directory" in one_line(r) and "re-run to resume" in r.stderr


@pytest.mark.slow
def test_killed_worker_is_one_line(tmp_path):
    for i in range(8):
        jsonl(tmp_path / "in" / f"p{i}.jsonl", 5, start=10 * i)
    r = dc("toy_len", tmp_path / "in", tmp_path / "o", "--die-on", "*", "--sleep", "0.3", "--workers", "2", toys=True)
    assert r.returncode == 1
    msg = one_line(r)
    assert "a worker was killed (out of memory?) while running" in msg and "re-run to resume" in msg
    assert ".jsonl" in msg


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "3"])
def test_disk_full_and_read_only_output(tmp_path, workers):
    inp = jsonl(tmp_path / "in" / "a.jsonl", 3000)
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "size=256k"):
        pytest.skip("cannot mount a small tmpfs here (needs root on Linux)")
    try:
        r = dc("filter", inp, mnt / "out", "--preset", "none", "--workers", workers)
        msg = one_line(r)
        assert r.returncode == 1 and "no space left on device writing" in msg and "free space and re-run" in msg
        assert str(mnt / "out") in msg or "small/out" in msg
    finally:
        subprocess.run(["umount", str(mnt)])
    ro = tmp_path / "ro"
    if not _mount_tmpfs(ro, "ro,size=64k"):
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        r = dc("filter", inp, ro / "out", "--preset", "none", "--workers", workers)
        assert r.returncode == 1 and "read-only file system" in one_line(r)
    finally:
        subprocess.run(["umount", str(ro)])


def test_disk_full_is_explained_with_the_task_output():
    # The same message without a mount: an injected ENOSPC from a task, as the executor reports it.
    from dcurate.runner.executor import LocalExecutor

    class Task:
        out_path = "/data/out/part-00003.parquet"

    def fail(_task):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as info:
        LocalExecutor(1).map(fail, [Task()])
    msg, code = explain(info.value)
    assert code == 1 and msg == (
        "no space left on device writing /data/out/part-00003.parquet; free space and re-run to resume"
    )


def test_explain_maps_errors_to_exit_codes():
    assert explain(RecipeError("bad key")) == ("bad key", 2)
    assert explain(RunError("x"))[1] == 1
    assert "read-only" in explain(OSError(errno.EROFS, "Read-only file system", "/o"))[0]
    assert "symlink loop" in explain(OSError(errno.ELOOP, "Too many levels", "/i/a"))[0]
    assert explain(ValueError("a bug")) is None


def _session_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.mark.slow
def test_kill_9_of_the_driver_leaves_no_process(tmp_path):
    for i in range(12):
        jsonl(tmp_path / "in" / f"p{i:02d}.jsonl", 5, start=10 * i)
    calls = tmp_path / "calls"
    p = subprocess.Popen([sys.executable, "-c", LAUNCH, "toy_len", str(tmp_path / "in"), str(tmp_path / "o"),
                          "--sleep", "1", "--calls-dir", str(calls), "--workers", "3", "--no-progress"],
                         env=_env(), cwd=ROOT, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(1200):  # until pool workers are busy (or the run ended)
            done = (calls / "calls.txt").read_text().count("\n") if (calls / "calls.txt").exists() else 0
            if done >= 3 or p.poll() is not None:
                break
            time.sleep(0.1)
        assert p.poll() is None, "the run ended before it could be killed"
        os.kill(p.pid, signal.SIGKILL)  # the driver only, not its process group
        p.wait()
        for _ in range(300):
            if not _session_alive(p.pid):
                break
            time.sleep(0.1)
        left = subprocess.run(["ps", "-o", "pid,cmd", "-g", str(p.pid)], capture_output=True, text=True).stdout
        assert not _session_alive(p.pid), f"processes left after kill -9 of the driver:\n{left}"
    finally:
        if _session_alive(p.pid):
            os.killpg(p.pid, signal.SIGKILL)


def _interrupt(cmd: list[str], delay: float) -> tuple[int, str]:
    p = subprocess.Popen(cmd, env=_env(), cwd=ROOT, start_new_session=True, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    os.killpg(p.pid, signal.SIGINT)  # as Ctrl-C: the whole process group
    _, err = p.communicate()
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return p.returncode, err


def _assert_interrupted(rc: int, err: str) -> None:
    assert rc == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "dcurate: interrupted; re-run the same command to resume"


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.2, 0.4, 0.5, 0.6, 1.2])
def test_ctrl_c_during_start_up(tmp_path, delay):
    """While Python imports dcurate and the fork server starts (the real `python -m dcurate`)."""
    inp = jsonl(tmp_path / "in" / "a.jsonl", 20000)
    rc, err = _interrupt([sys.executable, "-m", "dcurate", "filter", str(inp), str(tmp_path / "o"), "--workers", "2"],
                         delay)
    if rc == 0:
        pytest.skip("the run finished before the interrupt")
    _assert_interrupted(rc, err)


@pytest.mark.slow
def test_ctrl_c_during_the_run(tmp_path):
    for i in range(6):
        jsonl(tmp_path / "in" / f"p{i}.jsonl", 5, start=10 * i)
    rc, err = _interrupt([sys.executable, "-c", LAUNCH, "toy_len", str(tmp_path / "in"), str(tmp_path / "o"),
                          "--sleep", "1", "--workers", "2", "--no-progress"], 4.0)
    _assert_interrupted(rc, err)


def test_a_ctrl_c_wrapped_by_an_import_is_still_an_interrupt():
    from dcurate.core.errors import is_interrupt

    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as k:
            raise RuntimeError("Error calling __set_name__") from k
    except RuntimeError as e:
        assert is_interrupt(e)
    assert not is_interrupt(RuntimeError("plain")) and not is_interrupt(None)
