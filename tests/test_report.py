"""`dcurate report`: one self-contained HTML page (inline SVG charts, escaped text, the funnel
equal to the run summary), written at the end of `dcurate run`, rendered by headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from conftest import docs, write_jsonl, write_parquet
from typer.testing import CliRunner

from dcurate.api import curate
from dcurate.cli.app import app
from dcurate.report.collect import run_files

XSS_KEPT = "<script>alert('kept')</script> alpha beta gamma delta epsilon zeta eta theta"
XSS_REMOVED = "<script>alert('removed')</script> & <img src=x onerror=alert(1)> alpha beta"


class _Parsed(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.stack: list[str] = []
        self.svg_in_figure = 0
        self.pre_text: list[str] = []
        self._pre = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "svg" and self.stack and self.stack[-1] == "figure":
            self.svg_in_figure += 1
        if tag == "pre":
            self._pre = True
            self.pre_text.append("")
        self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        if tag == "pre":
            self._pre = False
        while self.stack:
            if self.stack.pop() == tag:
                break

    def handle_data(self, data):
        if self._pre:
            self.pre_text[-1] += data


def _corpus(d: Path) -> Path:
    a = docs(40, "a")
    a[:0] = [{"id": "xss-removed", "text": XSS_REMOVED, "domain": "c", "score": 0.0},
             {"id": "xss-kept", "text": XSS_KEPT, "domain": "a", "score": 5.5}]
    b = docs(30, "b", start=40)
    b += [dict(r, id=r["id"] + "~dup") for r in b[:4]]  # exact duplicates of four documents
    write_jsonl(d / "s0.jsonl", a)
    write_parquet(d / "s1.parquet", b)
    return d


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    src = _corpus(tmp / "in")
    out, rej = tmp / "out", tmp / "rejected"
    stats = curate(
        str(src), str(out),
        stages=[{"stage": "filter", "preset": "none", "keep_if": "score >= 0.5"},
                {"stage": "dedup", "method": "exact"}],
        workers=1, progress=False, rejected=str(rej), report=False,
    )
    page = tmp / "page.html"
    res = CliRunner().invoke(app, ["report", str(out), "--html", str(page)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(page)
    return page, stats, out


def test_no_network_and_every_chart_inline(report):
    page, _, _ = report
    text = page.read_text()
    p = _Parsed()
    p.feed(text)
    for tag, attrs in p.tags:
        for k in ("src", "href", "xlink:href", "action", "poster", "data"):
            v = (attrs.get(k) or "").strip().lower()
            assert not v.startswith(("http:", "https:", "//")), (tag, k, v)
        if tag == "img":
            assert (attrs.get("src") or "").startswith("data:"), attrs
    assert not [t for t, _ in p.tags if t in ("script", "link", "iframe", "object", "embed")]
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    figures = [a for t, a in p.tags if t == "figure" and "chart" in (a.get("class") or "")]
    # funnel, removals, score histogram, cluster sizes, domain mixture, timings
    assert len(figures) >= 6
    assert p.svg_in_figure == len(figures)
    charts = {a["data-chart"] for a in figures}
    assert {"funnel", "removals", "clusters", "mixture", "timings", "hist-score"} <= charts
    ids = [a["id"] for _, a in p.tags if a.get("id")]
    assert len(ids) == len(set(ids)), "element ids repeat across charts"


def test_document_text_is_escaped(report):
    page, _, _ = report
    text = page.read_text()
    p = _Parsed()
    p.feed(text)
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&#x27;kept&#x27;)&lt;/script&gt;" in text
    shown = "\n".join(p.pre_text)
    assert XSS_KEPT in shown  # the kept document, verbatim once unescaped
    assert XSS_REMOVED in shown  # the removed one, from --rejected


def test_funnel_numbers_equal_the_run_summary(report):
    page, stats, out = report
    on_disk = json.loads(run_files(out).stats.read_text())
    assert on_disk["stages"] == stats["stages"]
    p = _Parsed()
    p.feed(page.read_text())
    rows = [a for t, a in p.tags if t == "tr" and a.get("data-stage")]
    assert [r["data-stage"] for r in rows] == [s["stage"] for s in stats["stages"]] == ["filter", "dedup"]
    for r, s in zip(rows, stats["stages"], strict=True):
        for k in ("docs_in", "docs_out", "bytes_in", "bytes_out"):
            assert int(r["data-" + k.replace("_", "-")]) == s[k]
    assert stats["stages"][0]["docs_in"] == 42 + 34
    assert stats["stages"][0]["removed"] == {"filter.keep_if": 6}  # score 0.0, 0.1 .. 0.4 and xss-removed
    text = page.read_text()
    assert f"<td>{stats['stages'][1]['docs_in']:,}</td><td>{stats['stages'][1]['docs_out']:,}</td>" in text


def test_sections_show_clusters_domains_examples_and_recipe(report):
    page, _, _ = report
    text = page.read_text()
    for anchor in ("funnel", "removals", "scores", "duplicates", "domains", "examples", "recipe"):
        assert f"id='{anchor}'" in text
    assert "4 clusters holding 8 documents" in text
    assert text.count("<div class='side'>") >= 1 and "jaccard to kept" in text
    assert "filter.keep_if" in text and "dedup.exact" in text
    assert "keep_if" in text and "score &gt;= 0.5" in text  # the recipe, escaped


def test_run_files_prefers_the_new_layout(tmp_path):
    (tmp_path / "_dcurate").mkdir()
    (tmp_path / "stats.json").write_text("{}")
    (tmp_path / "_dcurate" / "manifest.json").write_text("{}")
    (tmp_path / "_dcurate" / "clusters.parquet").write_text("")
    f = run_files(tmp_path)
    assert (f.stats, f.manifest, f.clusters) == (
        tmp_path / "stats.json", tmp_path / "_dcurate" / "manifest.json", tmp_path / "_dcurate" / "clusters.parquet")
    assert f.report == tmp_path / ".dcurate" / "report.html"
    new = tmp_path / ".dcurate"
    new.mkdir()
    for n in ("stats.json", "manifest.json", "clusters.arrow"):
        (new / n).write_text("{}")
    f = run_files(tmp_path)
    assert (f.stats, f.manifest, f.clusters) == (new / "stats.json", new / "manifest.json", new / "clusters.arrow")


def test_report_of_a_folder_without_a_run_is_one_line(tmp_path):
    res = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert res.exit_code != 0
    assert "no run summary" in res.output and "Traceback" not in res.output


@pytest.mark.report
def test_run_writes_the_report_and_a_failure_is_one_warning(tmp_path, monkeypatch, caplog):
    import logging

    import dcurate.report.html as rh

    caplog.set_level(logging.INFO, logger="dcurate")

    write_jsonl(tmp_path / "in" / "s.jsonl", docs(10))
    calls = []
    monkeypatch.setattr(rh, "write_report", lambda out, html=None: calls.append(out) or Path(out) / "r.html")
    curate(str(tmp_path / "in"), str(tmp_path / "o1"), stages=[], workers=1, progress=False)
    assert calls == [tmp_path / "o1"]
    assert f"report: {tmp_path / 'o1' / 'r.html'}" in caplog.messages
    caplog.clear()
    curate(str(tmp_path / "in"), str(tmp_path / "o2"), stages=[], workers=1, progress=False, report=False)
    assert calls == [tmp_path / "o1"]
    assert not [m for m in caplog.messages if m.startswith("report")]

    def boom(out, html=None):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(rh, "write_report", boom)
    stats = curate(str(tmp_path / "in"), str(tmp_path / "o3"), stages=[], workers=1, progress=False)
    assert stats["docs_out"] == 10
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["no report written (RuntimeError: no fonts)"]


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _console(log: str) -> list[str]:
    """Console messages in chromium's --enable-logging output ('...:CONSOLE:1] "msg", source: ...')."""
    return [ln for ln in log.splitlines() if re.search(r"CONSOLE[(:]", ln) or "Uncaught" in ln]


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="headless chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    page, _, _ = report
    exe = _chromium()
    base = [
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
    ]
    url = page.resolve().as_uri()
    shot = tmp_path / "shot.png"
    env = dict(os.environ, HOME=str(tmp_path))
    r = subprocess.run([*base, f"--screenshot={shot}", "--window-size=1200,2400", url],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    d = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, env=env)
    assert d.returncode == 0, d.stderr[-2000:]
    assert _console(r.stderr + d.stderr) == []
    # the detector sees a console error (a control page), so the check above can fail
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>console.error('boom')</script></body></html>")
    c = subprocess.run([*base, "--dump-dom", bad.as_uri()], capture_output=True, text=True, env=env)
    assert any("boom" in ln for ln in _console(c.stderr))
    assert "net::ERR" not in r.stderr + d.stderr
    # the DOM as the browser built it: every chart an svg
    src = page.read_text()
    assert d.stdout.count("<svg") == src.count("<svg") >= 6
    assert "&lt;script&gt;alert" in d.stdout
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1200, 2400)
        colours = dict((c, n) for n, c in im.convert("RGB").getcolors(maxcolors=1 << 24))
    # the funnel's input bar and the histograms are drawn in the first palette colour
    assert colours.get((0x4C, 0x78, 0xA8), 0) > 2000, "no chart visible"


def test_without_rejected_the_examples_come_from_annotations(tmp_path):
    from dcurate.report.collect import collect
    from dcurate.report.html import _Page

    b = docs(12, "b")
    write_jsonl(tmp_path / "in" / "s.jsonl", b + [dict(r, id=r["id"] + "~dup") for r in b[:2]])
    curate(str(tmp_path / "in"), str(tmp_path / "out"), stages=[{"stage": "dedup", "method": "exact", "annotate": True}],
           workers=1, progress=False)
    page = _Page(collect(tmp_path / "out"))
    page.examples()  # the examples section alone: no charts drawn
    text = "".join(page.parts)
    assert "--rejected DIR" in text
    assert "in a duplicate cluster (dup_cluster_size &gt; 1) (3 shown)" in text
    assert "id: b00001~dup" not in text  # the first three members in read order
    assert text.count("dup_cluster_size: 2") >= 3


def test_many_domains_fold_into_one_row_and_dollar_signs_are_text(tmp_path):
    from dcurate.report.collect import collect
    from dcurate.report.html import MAX_DOMAINS, OTHER, _Page

    recs = [dict(r, domain=f"$\\frac{{{i % 30}$") for i, r in enumerate(docs(90))]  # invalid as TeX
    write_jsonl(tmp_path / "in" / "s.jsonl", recs)
    curate(str(tmp_path / "in"), str(tmp_path / "out"), stages=[{"stage": "dedup", "method": "exact"}],
           workers=1, progress=False)
    page = _Page(collect(tmp_path / "out"))
    page.domains()
    text = "".join(page.parts)
    assert text.count("<svg") == 1
    assert text.count("<tr>") == 1 + MAX_DOMAINS and OTHER in text
    assert "<td>$\\frac{0$</td><td>3</td>" in text


def test_thresholds_drawn_for_each_scoring_stage(tmp_path):
    from dcurate.report.collect import collect
    from dcurate.report.html import _Page

    write_jsonl(tmp_path / "in" / "s.jsonl", docs(5))
    curate(str(tmp_path / "in"), str(tmp_path / "out"), stages=[], workers=1, progress=False)
    page = _Page(collect(tmp_path / "out"))
    page.mstages = [
        {"stage": "quality", "params": {"column": ["q", "lang"], "threshold": "0.4", "model": ["m.bin"]}},
        {"stage": "perplexity", "params": {"column": "ppl", "max_perplexity": 900.0, "keep_top": 0.5}},
        {"stage": "select", "params": {"method": "zipfit"}},
    ]
    page.stages = [{"index": 0}, {"index": 1, "cutoffs": [100.0, 300.0]}, {"index": 2}]
    assert page._score_columns() == [
        ("q", [(0.4, "threshold 0.4")], False, "0 quality", None),
        ("lang", [], False, "0 quality", None),
        ("ppl", [(100.0, "bucket cut 100"), (300.0, "bucket cut 300"), (900.0, "max 900")], True, "1 perplexity", "highest"),
        ("zipfit_score", [], False, "2 select", "lowest"),
    ]
