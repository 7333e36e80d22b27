"""The text rules of :mod:`dcurate.stages.filter.stage` (Gopher quality and repetition, C4), vectorised
with polars and numba.

Kept apart from the stage so that a filter with no text rule (``--preset none``, a ``--keep-if``
threshold, a re-shard) imports neither polars nor numba: about 0.4 s less per process start.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pyarrow as pa

from dcurate.core.jit import njit
from dcurate.core.stage import with_column
from dcurate.stages.filter.params import (
    BULLETS,
    C4_POLICY_STRINGS,
    C4_TERMINAL_PUNCT,
    GROUP,
    RULE_NAMES,
    FilterParams,
)
from dcurate.text.normalize import normalize_series_ascii_fast
from dcurate.text.tokenizers import GOPHER_WORD_PATTERN

# -- vectorised measurements -------------------------------------------------------------------------


def _texts(batch: pa.RecordBatch, field: str) -> pl.Series:
    col = batch.column(field)
    if not (
        pa.types.is_string(col.type)
        or pa.types.is_large_string(col.type)
        or pa.types.is_string_view(col.type)
    ):
        from dcurate.core.errors import InputError

        raise InputError(f"filter: text field '{field}' has type {col.type}, expected string")
    return pl.Series(values=col).fill_null("")


def c4_clean_lines(text: pl.Series, p: FilterParams, active: set[str]) -> tuple[pl.Series, int]:
    """Apply the C4 line rules; return the cleaned texts and the number of lines removed.

    Kept lines are stripped of surrounding whitespace (as C4 does); blank lines are kept as
    paragraph breaks, with runs of them collapsed to one and none at the start or end."""
    df = pl.DataFrame({"line": text}).with_row_index("i")
    df = (
        df.with_columns(pl.col("line").str.split("\n"))
        .explode("line")
        .with_columns(pl.col("line").fill_null("").str.strip_chars())
    )
    keep = pl.lit(True)
    if "c4_javascript_lines" in active:
        keep = keep & ~pl.col("line").str.contains("(?i)javascript")
    if "c4_policy_lines" in active:
        keep = keep & ~pl.col("line").str.contains_any(C4_POLICY_STRINGS, ascii_case_insensitive=True)
    if "c4_terminal_punct" in active:
        keep = keep & pl.col("line").str.contains(f"[{re.escape(C4_TERMINAL_PUNCT)}]$")
    if "c4_min_words_per_line" in active:
        keep = keep & (pl.col("line").str.count_matches(GOPHER_WORD_PATTERN) >= p.c4_min_words_per_line)
    blank = pl.col("line") == ""
    df = df.with_columns(keep=keep | blank)  # blank lines stay as paragraph separators
    removed = int(df.select((~pl.col("keep")).sum()).item())
    out = df.group_by("i", maintain_order=True).agg(pl.col("line").filter(pl.col("keep")).str.join("\n"))
    # runs of blank lines left where lines were removed collapse to one paragraph break
    return out["line"].str.replace_all(r"\n{3,}", "\n\n").str.strip_chars("\n"), removed


_SENTENCE_END = r"[.!?…]+[\"'”’)\]]*(?:\s|$)"


def _element_dups(text: pl.Series, paragraphs: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document: (elements, repeated elements, characters in repeated elements), where an
    element is a non-blank line or paragraph (stripped) and *repeated* means equal to an earlier
    one in the same document."""
    n = len(text)
    s = text.str.replace_all(r"\n[ \t\r]*\n\s*", "\x00") if paragraphs else text
    df = pl.DataFrame({"el": s}).with_row_index("i")
    df = df.with_columns(pl.col("el").str.split("\x00" if paragraphs else "\n")).explode("el")
    df = df.with_columns(pl.col("el").fill_null("").str.strip_chars()).filter(pl.col("el") != "")
    df = df.with_columns(dup=~pl.struct("i", "el").is_first_distinct())
    g = df.group_by("i").agg(
        n=pl.len(),
        dup=pl.col("dup").sum(),
        dup_chars=pl.col("el").str.len_chars().filter(pl.col("dup")).sum(),
    )
    out_n, out_d, out_c = np.zeros(n), np.zeros(n), np.zeros(n)
    if g.height:
        pos = g["i"].to_numpy().astype(np.int64)
        out_n[pos] = g["n"].to_numpy()
        out_d[pos] = g["dup"].to_numpy()
        out_c[pos] = g["dup_chars"].fill_null(0).to_numpy()
    return out_n, out_d, out_c


_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_S31 = np.uint64(31)
_S27 = np.uint64(27)


@njit(cache=True, nogil=True)
def _mix(a, b):
    # splitmix-style combination of two 64-bit hashes (wrapping arithmetic)
    x = (a ^ (b + _M1 + (a << np.uint64(6)) + (a >> np.uint64(2)))) * _M2
    return x ^ (x >> _S31)


@njit(cache=True, nogil=True)
def _ngram_kernel(hashes, lens, offsets, top_ns, dup_ns, out_top, out_dup):
    """For each document (words ``offsets[d]:offsets[d+1]`` of ``hashes``/``lens``):

    * ``out_top[d, k]``: characters of the most frequent ``top_ns[k]``-gram times its count, over
      all word characters (0 when no n-gram occurs twice);
    * ``out_dup[d, k]``: characters of the words covered by ``dup_ns[k]``-grams that repeat an
      earlier n-gram of the document (each word counted once), over all word characters.
    """
    n_docs = offsets.shape[0] - 1
    max_m = 0
    for d in range(n_docs):
        max_m = max(max_m, offsets[d + 1] - offsets[d])
    size = 16
    while size < 2 * max_m:
        size *= 2
    keys = np.zeros(size, np.uint64)
    counts = np.zeros(size, np.int64)
    chars = np.zeros(size, np.int64)
    stamp = np.zeros(size, np.int64)
    gen = 0
    max_n = 1
    for n in top_ns:
        max_n = max(max_n, n)
    for n in dup_ns:
        max_n = max(max_n, n)
    for d in range(n_docs):
        s = offsets[d]
        m = offsets[d + 1] - s
        total = 0
        for j in range(m):
            total += lens[s + j]
        if m < 2 or total == 0:
            continue
        tsize = 16
        while tsize < 2 * m:
            tsize *= 2
        mask = np.uint64(tsize - 1)
        g = hashes[s : s + m].copy()  # rolling n-gram hashes, g[i] = hash of words i..i+n-1
        glen = lens[s : s + m].astype(np.int64)  # characters of that n-gram's words
        for n in range(1, max_n + 1):
            if n > m:
                break
            cnt = m - n + 1
            if n > 1:
                for i in range(cnt):
                    g[i] = _mix(g[i], hashes[s + i + n - 1])
                    glen[i] += lens[s + i + n - 1]
            want_top = -1
            for k in range(top_ns.shape[0]):
                if top_ns[k] == n:
                    want_top = k
            want_dup = -1
            for k in range(dup_ns.shape[0]):
                if dup_ns[k] == n:
                    want_dup = k
            if want_top < 0 and want_dup < 0:
                continue
            gen += 1
            best_count = 0
            best_chars = 0
            cover_end = 0
            dup_chars = 0
            for i in range(cnt):
                h = g[i]
                slot = (h ^ (h >> _S27)) & mask
                while stamp[slot] == gen and keys[slot] != h:
                    slot = (slot + np.uint64(1)) & mask
                if stamp[slot] != gen:
                    stamp[slot] = gen
                    keys[slot] = h
                    counts[slot] = 1
                    chars[slot] = glen[i]
                    c = 1
                else:
                    counts[slot] += 1
                    c = counts[slot]
                    if want_dup >= 0:
                        start = max(i, cover_end)
                        for j in range(start, i + n):
                            dup_chars += lens[s + j]
                        cover_end = i + n
                if c > best_count or (c == best_count and chars[slot] > best_chars):
                    best_count = c
                    best_chars = chars[slot]
            if want_top >= 0 and best_count >= 2:
                out_top[d, want_top] = best_count * best_chars / total
            if want_dup >= 0:
                out_dup[d, want_dup] = dup_chars / total
    return out_top, out_dup


def ngram_fractions(norm: pl.Series, top_ns: list[int], dup_ns: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Top and duplicate n-gram character fractions of each (normalised) text; see
    :func:`_ngram_kernel`."""
    n = len(norm)
    words = norm.str.extract_all(GOPHER_WORD_PATTERN).fill_null([])
    counts = words.list.len().to_numpy().astype(np.int64)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = words.explode().drop_nulls()
    hashes = flat.hash(seed=0).to_numpy().astype(np.uint64) if len(flat) else np.zeros(0, np.uint64)
    lens = flat.str.len_chars().to_numpy().astype(np.int64) if len(flat) else np.zeros(0, np.int64)
    out_top = np.zeros((n, len(top_ns)))
    out_dup = np.zeros((n, len(dup_ns)))
    _ngram_kernel(
        hashes, lens, offsets, np.array(top_ns, np.int64), np.array(dup_ns, np.int64), out_top, out_dup
    )
    return out_top, out_dup


# -- rules -------------------------------------------------------------------------------------------


def apply(
    batch: pa.RecordBatch, p: FilterParams, active: set[str], v, text_field: str, counters: dict[str, int]
) -> pa.RecordBatch:
    """Run the active text rules on a batch; failures go to ``v`` (a ``_Verdict``); returns the
    batch, with the C4-cleaned text in kept rows when line rules are on."""
    fail = v.fail
    text = _texts(batch, text_field)
    orig_text = text
    # C4 document rules on the original text
    if "c4_lorem_ipsum" in active:
        fail("c4_lorem_ipsum", text.str.contains("(?i)lorem ipsum").to_numpy())
    if "c4_curly_brace" in active:
        fail("c4_curly_brace", text.str.contains("{", literal=True).to_numpy())
    line_rules = [
        r
        for r in (
            "c4_javascript_lines",
            "c4_policy_lines",
            "c4_terminal_punct",
            "c4_min_words_per_line",
        )
        if r in active
    ]
    if line_rules:
        text, removed = c4_clean_lines(text, p, active)
        counters["c4_lines_removed"] = removed
        if "c4_min_sentences" not in active:  # otherwise that rule catches it
            fail("c4_no_lines_left", (text == "").to_numpy())
    if "c4_min_sentences" in active:
        fail(
            "c4_min_sentences",
            (text.str.count_matches(_SENTENCE_END) < p.c4_min_sentences).to_numpy(),
        )
    gopher(p, text, active, v)
    if text is not orig_text:
        changed = (text != orig_text).to_numpy() & (v.code == 0)
        if changed.any():
            # Only kept rows get the cleaned text; dropped rows keep the original
            # (what --rejected shows).
            col = batch.column(text_field)
            merged = text.zip_with(pl.Series(changed), pl.Series(values=col))
            batch = with_column(batch, text_field, merged.to_arrow().cast(col.type))
    return batch


def gopher(p: FilterParams, text: pl.Series, active: set[str], v) -> None:
    """Gopher quality rules, then the repetition rules."""
    fail = v.fail
    quality = [r for r in RULE_NAMES if GROUP[r] == "gopher" and r in active]
    repetition = [r for r in RULE_NAMES if GROUP[r] == "gopher-repetition" and r in active]
    if not quality and not repetition:
        return
    norm = normalize_series_ascii_fast(text)
    if quality:
        t, nt = pl.col("t"), pl.col("n")
        cols = {"words": nt.str.count_matches(GOPHER_WORD_PATTERN)}
        if {"min_mean_word_length", "max_mean_word_length"} & active:
            cols["word_chars"] = nt.str.len_chars() - nt.str.count_matches(r"\W")  # cheaper than counting \w
        if "max_symbol_word_ratio" in active:
            cols["hash"] = t.str.count_matches("#", literal=True)
            cols["ellipsis"] = t.str.count_matches(r"\.\.\.|…")
        if {"max_bullet_lines_frac", "max_ellipsis_lines_frac"} & active:
            cols["lines"] = t.str.count_matches(r"(?m)^[ \t]*\S")
            cols["bullet_lines"] = t.str.count_matches(f"(?m)^[ \\t]*[{re.escape(BULLETS)}]")
            cols["ellipsis_lines"] = t.str.count_matches(r"(?m)(?:\.\.\.|…)[ \t\r]*$")
        if "min_alpha_words_frac" in active:
            cols["alpha_words"] = nt.str.count_matches(r"\w*[^\W\d_]\w*")
        if "min_stop_words" in active:
            alt = "|".join(re.escape(w.lower()) for w in p.stop_words) or "(?!)"
            cols["stop"] = nt.str.count_matches(rf"\b(?:{alt})\b")
        # one select: polars evaluates the independent counts in parallel
        res = pl.DataFrame({"t": text, "n": norm}).select(**cols)
        f = {k: res[k].fill_null(0).to_numpy().astype(np.float64) for k in cols}
        words = f["words"]
        safe_words = np.maximum(words, 1)
        lines = np.maximum(f.get("lines", np.ones(1)), 1)
        for r in quality:
            lim = getattr(p, r)
            if r == "min_words":
                fail(r, words < lim)
            elif r == "max_words":
                fail(r, words > lim)
            elif r == "min_mean_word_length":
                fail(r, f["word_chars"] / safe_words < lim)
            elif r == "max_mean_word_length":
                fail(r, f["word_chars"] / safe_words > lim)
            elif r == "max_symbol_word_ratio":
                fail(r, (f["hash"] / safe_words > lim) | (f["ellipsis"] / safe_words > lim))
            elif r == "max_bullet_lines_frac":
                fail(r, f["bullet_lines"] / lines > lim)
            elif r == "max_ellipsis_lines_frac":
                fail(r, f["ellipsis_lines"] / lines > lim)
            elif r == "min_alpha_words_frac":
                fail(r, f["alpha_words"] / safe_words < lim)
            elif r == "min_stop_words":
                fail(r, f["stop"] < lim)
    if repetition:
        repetition_rules(p, text, norm, active, v)


def repetition_rules(p: FilterParams, text: pl.Series, norm: pl.Series, active: set[str], v) -> None:
    """Gopher repetition rules, computed only for documents no earlier rule dropped."""
    fail = v.fail
    n = len(text)
    rows = np.flatnonzero(v.code == 0)
    if rows.size == 0:
        return
    sel = pl.Series(rows)
    t_alive, norm_alive = text.gather(sel), norm.gather(sel)
    chars = np.maximum(t_alive.str.len_chars().to_numpy().astype(np.float64), 1)

    def put(vals: np.ndarray) -> np.ndarray:
        out = np.zeros(n)
        out[rows] = vals
        return out

    if {"max_dup_line_frac", "max_dup_line_char_frac"} & active:
        ln, ld, lc = _element_dups(t_alive, paragraphs=False)
        if "max_dup_line_frac" in active:
            fail("max_dup_line_frac", put(ld / np.maximum(ln, 1)) > p.max_dup_line_frac)
    if {"max_dup_para_frac", "max_dup_para_char_frac"} & active:
        pn, pd_, pc_ = _element_dups(t_alive, paragraphs=True)
        if "max_dup_para_frac" in active:
            fail("max_dup_para_frac", put(pd_ / np.maximum(pn, 1)) > p.max_dup_para_frac)
    if "max_dup_line_char_frac" in active:
        fail("max_dup_line_char_frac", put(lc / chars) > p.max_dup_line_char_frac)
    if "max_dup_para_char_frac" in active:
        fail("max_dup_para_char_frac", put(pc_ / chars) > p.max_dup_para_char_frac)
    top = (
        sorted((int(k), v) for k, v in (p.max_top_ngram_char_frac or {}).items())
        if "max_top_ngram_char_frac" in active
        else []
    )
    dup = (
        sorted((int(k), v) for k, v in (p.max_dup_ngram_char_frac or {}).items())
        if "max_dup_ngram_char_frac" in active
        else []
    )
    if top or dup:
        ft, fd = ngram_fractions(norm_alive, [k for k, _ in top], [k for k, _ in dup])
        for j, (k, lim) in enumerate(top):
            fail(f"max_top_{k}gram_char_frac", put(ft[:, j]) > lim)
        for j, (k, lim) in enumerate(dup):
            fail(f"max_dup_{k}gram_char_frac", put(fd[:, j]) > lim)
