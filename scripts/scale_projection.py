"""Project the scale benchmark to 1e8, 1e9 and 1e10 documents on 1, 16 and 128 nodes.

    python scripts/bench_scale.py --json scale.json        # measure (1x, 4x, 16x)
    python scripts/bench_scale.py --json one.json --workers 1 --scales 4   # the serial share of reduces
    python scripts/scale_projection.py scale.json --single one.json        # print the table (Markdown)

The model (every input below is measured by bench_scale.py, every assumption is a flag):

* Documents flow through the stages with the measured survival ratios (docs in per stage / corpus).
* A stage's parallel work (scan and apply tasks) costs its measured CPU seconds per document
  minus its driver reduce seconds, spread over ``nodes x cores`` workers at ``--efficiency``.
* A stage's reduce runs in the driver, serially, at its measured seconds per document (from the
  largest run whose ``-v`` log was recorded; with ``--single``, only the reduce's serial part: the
  driver also runs its share of the tasks a reduce fans out).
* Reading and writing shards (CPU not attributed to a stage: the run's CPU minus the stages') is
  parallel work too, per input document.
* Bytes moved (read + written by the run's processes; from the ``--single`` run when given, whose
  counters hold no inter-process pipe traffic) cross each node's link to storage at
  ``--node-gbps``; the run takes the longer of compute and transfer (tasks stream both), plus the
  serial reduces.
* Memory: a worker's is flat (pieces are capped at ``split_size``, 256 MB by default); the
  driver's grows by the measured slope between the smallest and largest scale (the plans: scores,
  keys and cluster labels per document) over its measured base.
* Intermediate bytes: the work folder's measured peak per document.
* With more than one node, the driver copies from the store the files of other nodes' tasks that
  its own reduces read (``--driver-copy-bytes``: select's per-document keys, 53 B/doc measured by
  tests/test_ray_nodes.py's log line; markers and plans are per piece) at ``--driver-gbps`` (an
  assumption), in parallel with the tasks.
"""

from __future__ import annotations

import argparse
import json


def _fmt_t(s: float) -> str:
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.0f} min"
    if s < 86400 * 2:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _fmt_b(b: float) -> str:
    for unit, k in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"


def inputs(rows: list[dict], single: list[dict] | None = None) -> dict:
    big = max(rows, key=lambda r: r["docs"])
    small = min(rows, key=lambda r: r["docs"])
    d0 = big["docs"]
    # Driver reduce seconds per document: from the largest run that logged them. The driver also
    # runs its share (1/w) of the tasks a reduce fans out, so with a 1-worker run of the same
    # corpus the serial part is S = (w R_w - R_1) / (w - 1).
    logged = [r for r in rows if any("driver_reduce_cpu_s" in st for st in r["stages"])]
    ref_row = max(logged, key=lambda r: r["docs"]) if logged else {"stages": [], "docs": 0, "workers": 1}
    one = next((r for r in (single or []) if r["docs"] == ref_row["docs"] and r["workers"] == 1), None)
    ref = {}
    for st in ref_row["stages"]:
        red = st.get("driver_reduce_cpu_s", 0.0)
        if one is not None and ref_row["workers"] > 1:
            r1 = next(x for x in one["stages"] if x["stage"] == st["stage"]).get("driver_reduce_cpu_s", 0.0)
            w = ref_row["workers"]
            red = max(0.0, (w * red - r1) / (w - 1))
        ref[st["stage"]] = red / max(1, st["docs_in"])
    stages = []
    for st in big["stages"]:
        n = max(1, st["docs_in"])
        ser = ref.get(st["stage"], 0.0)
        stages.append({"stage": st["stage"], "share": st["docs_in"] / d0,
                       "par": max(0.0, st["cpu_s"] / n - ser), "ser": ser})
    io = max(0.0, big["cpu_s"] - sum(st["cpu_s"] for st in big["stages"])) / d0
    slope = 0.0
    if big["docs"] > small["docs"]:
        slope = max(0.0, (big["rss_driver_mb"] - small["rss_driver_mb"]) * 1e6 / (big["docs"] - small["docs"]))
    # Bytes read and written: from the 1-worker run when given (with a pool, the counters also
    # include the pipes that carry task arguments and results between processes).
    src = one if one is not None else big
    moved = src.get("read_bytes_per_doc", 0.0) + src.get("written_bytes_per_doc", 0.0)
    return {"docs": d0, "stages": stages, "io": io, "driver_base": big["rss_driver_mb"] * 1e6 - slope * d0,
            "driver_slope": slope, "worker": max(r["rss_worker_mb"] for r in rows) * 1e6,
            "work": big["work_bytes_per_doc"], "moved": moved,
            "written": src.get("written_bytes_per_doc", 0.0)}


def project(m: dict, docs: float, nodes: int, cores: int, eff: float, gbps: float, node_mem: float,
            driver_gbps: float = 10.0, copy_per_doc: float = 53.0) -> dict:
    workers = nodes * cores * eff
    t = {s["stage"]: docs * s["share"] * s["par"] / workers for s in m["stages"]}
    serial = {s["stage"]: docs * s["share"] * s["ser"] for s in m["stages"]}
    io = docs * m["io"] / workers
    compute = sum(t.values()) + io
    net = docs * m["moved"] / (nodes * gbps * 1e9 / 8)
    # OUT and the work folder on the store: the driver copies, of what tasks on other nodes wrote,
    # the files its own reduces read (runner/nodesync.py), through its own link.
    copy = docs * copy_per_doc * (nodes - 1) / nodes / (driver_gbps * 1e9 / 8)
    total = max(compute, net, copy) + sum(serial.values())
    driver = m["driver_base"] + m["driver_slope"] * docs
    causes = {"CPU of " + max(t, key=lambda k: t[k]) + " (tasks)": compute,
              "network to storage": net, "driver reduces (serial)": sum(serial.values()),
              "driver's copies of task outputs": copy}
    first = max(causes, key=lambda k: causes[k])
    if driver > node_mem:
        first = f"driver memory ({_fmt_b(driver)} > {_fmt_b(node_mem)})"
    return {"stage_s": {k: t[k] + serial[k] for k in t}, "io_s": io, "net_s": net, "total_s": total,
            "serial_s": sum(serial.values()), "copy_s": copy, "driver": driver, "first": first,
            "work": docs * m["work"], "moved": docs * m["moved"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="JSON written by bench_scale.py --json")
    ap.add_argument("--single", help="bench_scale.py --workers 1 results of one of the same corpora: splits "
                    "the driver's reduce seconds into its serial part and its share of the fanned-out tasks.")
    ap.add_argument("--cores", type=int, default=64, help="Cores per node (one worker each).")
    ap.add_argument("--efficiency", type=float, default=0.9, help="Parallel efficiency of the workers.")
    ap.add_argument("--node-gbps", type=float, default=25.0, help="Each node's bandwidth to storage, Gbit/s.")
    ap.add_argument("--driver-gbps", type=float, default=10.0,
                    help="Rate at which the driver copies task outputs from the store (assumed, not measured).")
    ap.add_argument("--driver-copy-bytes", type=float, default=53.0,
                    help="Bytes per document the driver copies from the store (files its reduces read).")
    ap.add_argument("--node-mem-gb", type=float, default=512.0, help="Memory of the node running the driver.")
    a = ap.parse_args()
    m = inputs(json.load(open(a.results)), json.load(open(a.single)) if a.single else None)
    names = [s["stage"] for s in m["stages"]]
    print(f"Measured inputs ({m['docs']:,}-document run): "
          + ", ".join(f"{s['stage']} {1 / s['par'] if s['par'] else 0:,.0f} docs/s/core on "
                      f"{s['share']:.0%} of the docs + {s['ser'] * 1e9:,.0f} ns/doc serial" for s in m["stages"])
          + f"; read/write {m['io'] * 1e6:,.0f} CPU us/doc; moved {m['moved']:,.0f} B/doc; work folder "
          f"{m['work']:,.0f} B/doc; worker {m['worker'] / 1e6:,.0f} MB; driver {m['driver_base'] / 1e6:,.0f} MB "
          f"+ {m['driver_slope']:,.0f} B/doc.")
    print()
    print("| docs | nodes | " + " | ".join(names) + " | read/write | transfer | driver copies | total | worker mem | driver mem "
          "| intermediate | moved | first bottleneck |")
    print("|---|---:|" + "---:|" * (len(names) + 8) + "---|")
    for docs, label in ((1e8, "1e8"), (1e9, "1e9"), (1e10, "1e10")):
        for nodes in (1, 16, 128):
            p = project(m, docs, nodes, a.cores, a.efficiency, a.node_gbps, a.node_mem_gb * 1e9, a.driver_gbps,
                        a.driver_copy_bytes)
            print(f"| {label} | {nodes} | " + " | ".join(_fmt_t(p["stage_s"][n]) for n in names)
                  + f" | {_fmt_t(p['io_s'])} | {_fmt_t(p['net_s'])} | {_fmt_t(p['copy_s'])} | {_fmt_t(p['total_s'])} "
                  f"| {_fmt_b(m['worker'])} | {_fmt_b(p['driver'])} | {_fmt_b(p['work'])} | {_fmt_b(p['moved'])} "
                  f"| {p['first']} |")


if __name__ == "__main__":
    main()
