"""Huffman trees of zlib's deflate, as its trees.c builds them (build_tree with its heap order,
gen_bitlen's overflow repair, scan_tree, build_bl_tree) and the length in bits of a block under
the stored / fixed / dynamic choice: the code-length half of :mod:`.deflate_model`."""

from __future__ import annotations

from typing import Any

import numpy as np

from dcurate.core.jit import njit

_NO_NRT: dict[str, Any] = {"cache": True, "_nrt": False}

L_CODES = 286
D_CODES = 30
BL_CODES = 19
HEAP_SIZE = 2 * L_CODES + 1
END_BLOCK = 256


def _tables():
    extra_l = np.array([0] * 8 + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [0], np.int64)
    length_code = np.zeros(256, np.int64)
    n = 0
    for code in range(28):
        for _ in range(1 << extra_l[code]):
            length_code[n] = code
            n += 1
    length_code[255] = 28  # match length 258 has its own code (285)
    extra_d = np.array([0, 0, 0, 0] + [i // 2 for i in range(2, 28)], np.int64)
    dist_code = np.zeros(32768, np.int64)
    d = 0
    for code in range(30):
        for _ in range(1 << extra_d[code]):
            dist_code[d] = code
            d += 1
    extra_bl = np.array([0] * 16 + [2, 3, 7], np.int64)
    static_l = np.array([8] * 144 + [9] * 112 + [7] * 24 + [8] * 8, np.int64)
    static_d = np.full(30, 5, np.int64)
    bl_order = np.array([16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15], np.int64)
    return extra_l, length_code, extra_d, dist_code, extra_bl, static_l, static_d, bl_order


EXTRA_L, LENGTH_CODE, EXTRA_D, DIST_CODE, EXTRA_BL, STATIC_L, STATIC_D, BL_ORDER = _tables()


# --------------------------------------------------------------------------------------------
# Huffman trees (trees.c semantics: build_tree, gen_bitlen, scan_tree, build_bl_tree)


@njit(**_NO_NRT)
def _smaller(freq, depth, n, m):
    return freq[n] < freq[m] or (freq[n] == freq[m] and depth[n] <= depth[m])


@njit(**_NO_NRT)
def _downheap(freq, depth, heap, heap_len, k):
    v = heap[k]
    j = k << 1
    while j <= heap_len:
        if j < heap_len and _smaller(freq, depth, heap[j + 1], heap[j]):
            j += 1
        if _smaller(freq, depth, v, heap[j]):
            break
        heap[k] = heap[j]
        k = j
        j <<= 1
    heap[k] = v


@njit(**_NO_NRT)
def _build_tree(freq, ln, elems, stree, extra, base, max_length, dad, depth, heap, bl_count):
    """Code lengths of one tree into ``ln``; returns (opt_len, static_len, max_code) increments.
    ``freq`` holds the leaf counts in [0, elems) and receives the internal nodes' counts."""
    opt_len = 0
    static_len = 0
    heap_len = 0
    heap_max = HEAP_SIZE
    max_code = -1
    for n in range(elems):
        if freq[n] != 0:
            heap_len += 1
            heap[heap_len] = n
            max_code = n
            depth[n] = 0
        else:
            ln[n] = 0
    # Deflate needs two codes at least: force symbols with frequency 1 (zlib's rule).
    while heap_len < 2:
        if max_code < 2:
            max_code += 1
            node = max_code
        else:
            node = 0
        heap_len += 1
        heap[heap_len] = node
        freq[node] = 1
        depth[node] = 0
        opt_len -= 1
        if stree.shape[0] > 0:
            static_len -= stree[node]
    for n in range(heap_len // 2, 0, -1):
        _downheap(freq, depth, heap, heap_len, n)
    node = elems
    while True:
        n = heap[1]
        heap[1] = heap[heap_len]
        heap_len -= 1
        _downheap(freq, depth, heap, heap_len, 1)
        m = heap[1]
        heap_max -= 1
        heap[heap_max] = n
        heap_max -= 1
        heap[heap_max] = m
        freq[node] = freq[n] + freq[m]
        depth[node] = (depth[n] if depth[n] >= depth[m] else depth[m]) + 1
        dad[n] = node
        dad[m] = node
        heap[1] = node
        node += 1
        _downheap(freq, depth, heap, heap_len, 1)
        if heap_len < 2:
            break
    heap_max -= 1
    heap[heap_max] = heap[1]

    # gen_bitlen: lengths from the root down, clipped at max_length, then repaired.
    for b in range(16):
        bl_count[b] = 0
    ln[heap[heap_max]] = 0
    overflow = 0
    for h in range(heap_max + 1, HEAP_SIZE):
        n = heap[h]
        bits = ln[dad[n]] + 1
        if bits > max_length:
            bits = max_length
            overflow += 1
        ln[n] = bits
        if n > max_code:
            continue
        bl_count[bits] += 1
        xbits = extra[n - base] if n >= base else 0
        f = freq[n]
        opt_len += f * (bits + xbits)
        if stree.shape[0] > 0:
            static_len += f * (stree[n] + xbits)
    if overflow == 0:
        return opt_len, static_len, max_code
    while True:
        bits = max_length - 1
        while bl_count[bits] == 0:
            bits -= 1
        bl_count[bits] -= 1
        bl_count[bits + 1] += 2
        bl_count[max_length] -= 1
        overflow -= 2
        if overflow <= 0:
            break
    h = HEAP_SIZE
    for bits in range(max_length, 0, -1):
        n = bl_count[bits]
        while n != 0:
            h -= 1
            m = heap[h]
            if m > max_code:
                continue
            if ln[m] != bits:
                opt_len += (bits - ln[m]) * freq[m]
                ln[m] = bits
            n -= 1
    return opt_len, static_len, max_code


@njit(**_NO_NRT)
def _scan_tree(ln, max_code, blfreq):
    prevlen = -1
    nextlen = ln[0]
    count = 0
    max_count = 7
    min_count = 4
    if nextlen == 0:
        max_count = 138
        min_count = 3
    for n in range(max_code + 1):
        curlen = nextlen
        nextlen = ln[n + 1] if n + 1 <= max_code else 0xFFFF
        count += 1
        if count < max_count and curlen == nextlen:
            continue
        elif count < min_count:
            blfreq[curlen] += count
        elif curlen != 0:
            if curlen != prevlen:
                blfreq[curlen] += 1
            blfreq[16] += 1
        elif count <= 10:
            blfreq[17] += 1
        else:
            blfreq[18] += 1
        count = 0
        prevlen = curlen
        if nextlen == 0:
            max_count = 138
            min_count = 3
        elif curlen == nextlen:
            max_count = 6
            min_count = 3
        else:
            max_count = 7
            min_count = 4


@njit(**_NO_NRT)
def block_bits(bits, lfreq, dfreq, stored_len, sc, tab):
    """Bits of the output after one more block (``_tr_flush_block``), given ``bits`` before."""
    extra_l, extra_d, extra_bl, static_l, static_d, bl_order = tab
    fl, ll, fd, ld, fb, lb, dad, depth, heap, bl_count = sc
    for i in range(L_CODES):
        fl[i] = lfreq[i]
    for i in range(D_CODES):
        fd[i] = dfreq[i]
    o1, s1, lmax = _build_tree(fl, ll, L_CODES, static_l, extra_l, 257, 15, dad, depth, heap, bl_count)
    o2, s2, dmax = _build_tree(fd, ld, D_CODES, static_d, extra_d, 0, 15, dad, depth, heap, bl_count)
    for i in range(BL_CODES):
        fb[i] = 0
    _scan_tree(ll, lmax, fb)
    _scan_tree(ld, dmax, fb)
    empty = static_d[:0]
    o3, _s3, _m3 = _build_tree(fb, lb, BL_CODES, empty, extra_bl, 0, 7, dad, depth, heap, bl_count)
    max_blindex = BL_CODES - 1
    while max_blindex >= 3:
        if lb[bl_order[max_blindex]] != 0:
            break
        max_blindex -= 1
    opt_len = o1 + o2 + o3 + 3 * (max_blindex + 1) + 5 + 5 + 4
    static_len = s1 + s2
    opt_lenb = (opt_len + 3 + 7) >> 3
    static_lenb = (static_len + 3 + 7) >> 3
    if static_lenb <= opt_lenb:
        opt_lenb = static_lenb
    if stored_len + 4 <= opt_lenb:
        return ((bits + 3 + 7) // 8) * 8 + 32 + 8 * stored_len
    if static_lenb == opt_lenb:
        return bits + 3 + static_len
    return bits + 3 + opt_len
