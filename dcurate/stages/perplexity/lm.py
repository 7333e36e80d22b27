"""Word n-gram language models: modified Kneser-Ney training, ARPA files and a vectorised scorer.

Three parts, used by ``dcurate train-lm`` and the ``perplexity`` stage:

* :class:`Tokenizer` turns documents into sentences the CCNet way: every line (paragraph) of a
  document is one sentence; its tokens are the words of :mod:`dcurate.text.normalize` (NFKC, lower-case,
  ``\\w+``), or sentencepiece pieces of the normalised line when a sentencepiece model is given.
  Lines without any token are skipped (CCNet scores them as ``<s> </s>``; see the README).
* :func:`train` estimates an interpolated modified Kneser-Ney model exactly as KenLM's ``lmplz``
  (Chen & Goodman 1998; Heafield et al. 2013, "Scalable Modified Kneser-Ney Language Model
  Estimation"), with n-gram counting done by sorting integer n-gram keys (numpy), never with
  one Python object per n-gram. :func:`write_arpa` writes the standard ARPA text format.
* :func:`read_arpa` loads any ARPA file (clear errors with line numbers) into a
  :class:`NGramModel`, whose :meth:`NGramModel.score_tokens` computes ARPA back-off log10
  probabilities for every token of many sentences at once (``np.searchsorted`` over sorted
  n-gram keys), matching ``kenlm.Model.full_scores(sentence, bos=True, eos=True)``.

The estimate, as lmplz computes it (order N, every sentence wrapped as ``<s> w1 .. wm </s>``):

* adjusted counts a(g): the raw count for N-grams and for n-grams that start with ``<s>``;
  otherwise the number of distinct words that precede g (its continuation count). ``<s>`` and
  ``<unk>`` have count 0.
* discounts per order from the count-of-counts t_k of adjusted counts:
  Y = t1 / (t1 + 2 t2), D_k = k - (k + 1) Y t_{k+1} / t_k for k = 1, 2, 3 (D3 used for 3+).
  Degenerate statistics (tiny corpora) fall back to lmplz's ``--discount_fallback`` values
  0.5, 1, 1.5 with a warning, or raise :class:`~dcurate.core.errors.ModelError` when disabled.
* u(w | c) = (a(c w) - D(a(c w))) / sum_x a(c x);
  gamma(c) = (D1 n1(c .) + D2 n2(c .) + D3 n3+(c .)) / sum_x a(c x);
  p(w | c) = u(w | c) + gamma(c) p(w | c minus its first word), and for unigrams
  p(w) = u(w) + gamma / |V| with |V| the vocabulary including ``<unk>`` and excluding ``<s>``.
  ``<unk>`` gets only the uniform share gamma / |V|; ``<s>`` gets probability 1 (log10 0).
* ARPA back-off of an n-gram h (order < N) is gamma(h) when h is a context (every n-gram that
  does not end in ``</s>`` or ``<unk>``), else 1 (log10 0).
* pruning (``--prune 0 1 1`` as lmplz): an n-gram of order n >= 2 whose raw count is <= the
  threshold of its order is removed; its adjusted count still counts in the denominators, and
  its mass goes to gamma (lmplz's normaliser), so the model still sums to one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from dcurate.core.errors import InputError, ModelError
from dcurate.stages.perplexity.tokenize import (
    BOS,
    BOS_ID,
    EOS,
    EOS_ID,
    UNK,
    UNK_ID,
    Sentences,
    Tokenizer,
    encode_sentences,
    frame_sentences,
)

log = logging.getLogger("dcurate")

FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # lmplz --discount_fallback defaults
SIDECAR_SUFFIX = ".json"  # lm.arpa -> lm.arpa.json (tokenizer and training parameters)


# -- training ----------------------------------------------------------------------------------------


@dataclass
class OrderTable:
    """All n-grams of one order seen in training (dense ids 0..n-1, sorted by key)."""

    prefix: np.ndarray  # id of the (n-1)-gram formed by all but the last word (0 for unigrams)
    word: np.ndarray  # last word id
    suffix: np.ndarray  # id of the (n-1)-gram formed by all but the first word (-1 for unigrams)
    raw: np.ndarray  # raw count
    bos: np.ndarray  # starts with <s>


@dataclass
class TrainedLM:
    """The estimate: per order, the n-grams kept, their log10 probability and back-off."""

    order: int
    vocab: list[str]
    tables: list[OrderTable]
    adjusted: list[np.ndarray]
    kept: list[np.ndarray]
    prob: list[np.ndarray]  # interpolated probability p (not log), per n-gram of the order
    backoff: list[np.ndarray]  # gamma (not log) for n-grams of orders < N, 1 when not a context
    discounts: list[tuple[float, float, float]]
    fallback_orders: list[int] = field(default_factory=list)
    tokens: int = 0
    sentences: int = 0

    def counts(self) -> list[int]:
        return [int(k.sum()) for k in self.kept]


class _VocabBuilder:
    def __init__(self) -> None:
        self.words = pl.Series("w", [UNK, BOS, EOS], dtype=pl.String)
        self.ids = pl.Series("i", [UNK_ID, BOS_ID, EOS_ID], dtype=pl.Int64)

    def add(self, tokens: pl.Series) -> None:
        flat = tokens.explode().drop_nulls().unique(maintain_order=True)
        new = flat.filter(~flat.is_in(self.words.implode()))
        if len(new):
            start = len(self.words)
            self.words = pl.concat([self.words, new.rename("w")])
            self.ids = pl.concat(
                [self.ids, pl.Series("i", np.arange(start, start + len(new), dtype=np.int64))]
            )


def count_tokens(batches: Iterable[Sentences]) -> tuple[np.ndarray, list[str], int]:
    """Id stream of all sentences (``<s> .. </s>`` framed) and the vocabulary, in first-seen order."""
    vb = _VocabBuilder()
    parts: list[np.ndarray] = []
    n_sent = 0
    for sent in batches:
        if len(sent) == 0:
            continue
        vb.add(sent.tokens)
        ids, starts = encode_sentences(sent.tokens, vb.words, vb.ids)
        parts.append(ids)
        n_sent += len(starts)
    tok = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    return tok, vb.words.to_list(), n_sent


def _ngram_tables(tok: np.ndarray, order: int, vocab_size: int) -> list[OrderTable]:
    """Count every n-gram (n <= order) of the framed id stream; n-grams never cross a ``<s>``."""
    V = np.int64(vocab_size)
    is_bos = tok == BOS_ID
    raw1 = np.bincount(tok, minlength=vocab_size).astype(np.int64)
    tables = [
        OrderTable(
            prefix=np.zeros(vocab_size, dtype=np.int64),
            word=np.arange(vocab_size, dtype=np.int64),
            suffix=np.full(vocab_size, -1, dtype=np.int64),
            raw=raw1,
            bos=np.arange(vocab_size) == BOS_ID,
        )
    ]
    ids_prev = tok  # id of the (n-1)-gram ending at each position (-1 where none)
    positions = np.arange(len(tok), dtype=np.int64)
    for n in range(2, order + 1):
        prev_at = np.empty_like(ids_prev)
        prev_at[0:1] = -1
        prev_at[1:] = ids_prev[:-1]
        valid = (prev_at >= 0) & ~is_bos
        n_prev = len(tables[-1].raw)
        if n_prev * int(V) >= 2**62:
            raise ModelError(
                f"too many {n - 1}-grams ({n_prev}) for 64-bit n-gram keys with {vocab_size} words"
            )
        keys = prev_at[valid] * V + tok[valid]
        uniq, first, inv, cnt = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        pos = positions[valid][first]
        prefix = uniq // V
        ids_n = np.full(len(tok), -1, dtype=np.int64)
        ids_n[valid] = inv.reshape(-1)
        tables.append(
            OrderTable(
                prefix=prefix,
                word=uniq % V,
                suffix=ids_prev[pos],
                raw=cnt.astype(np.int64),
                bos=tables[-1].bos[prefix],
            )
        )
        ids_prev = ids_n
    return tables


def discounts_for(adjusted: np.ndarray, n: int, fallback: bool) -> tuple[tuple[float, float, float], bool]:
    """Modified Kneser-Ney discounts (Chen & Goodman eq. 26) from count-of-counts, lmplz's checks."""
    t = [int(np.count_nonzero(adjusted == k)) for k in range(5)]
    why = ""
    if min(t[1], t[2], t[3]) == 0:
        k = next(k for k in (1, 2, 3) if t[k] == 0)
        why = f"no {n}-gram has adjusted count {k}"
    else:
        y = t[1] / (t[1] + 2.0 * t[2])
        d = tuple(k - (k + 1) * y * t[k + 1] / t[k] for k in (1, 2, 3))
        bad = [k for k, dk in zip((1, 2, 3), d, strict=False) if not 0.0 <= dk <= k]
        if not bad:
            return (float(d[0]), float(d[1]), float(d[2])), False
        why = f"{n}-gram discount D{bad[0]} = {d[bad[0] - 1]:.4f} is out of range [0, {bad[0]}]"
    if not fallback:
        raise ModelError(
            f"cannot estimate Kneser-Ney discounts: {why} (is this small or artificial data?); "
            "pass --discount-fallback to use 0.5, 1, 1.5 as lmplz --discount_fallback does"
        )
    log.warning(
        "%s; using fallback discounts D1=0.5 D2=1 D3+=1.5 for order %d (as lmplz --discount_fallback)", why, n
    )
    return FALLBACK_DISCOUNTS, True


def estimate(
    tok: np.ndarray,
    vocab: list[str],
    order: int,
    prune: Sequence[int] | None = None,
    discount_fallback: bool = True,
    n_sentences: int = 0,
) -> TrainedLM:
    """Interpolated modified Kneser-Ney estimate of an order-``order`` model (lmplz's method)."""
    if order < 1:
        raise ModelError(f"order must be >= 1, got {order}")
    thresholds = list(prune or [])
    thresholds = (thresholds + [thresholds[-1] if thresholds else 0] * order)[:order]
    if thresholds[0] != 0:
        raise ModelError(
            "pruning unigrams is not supported (the first --prune threshold must be 0), as in lmplz"
        )
    if any(b < a for a, b in zip(thresholds, thresholds[1:], strict=False)):
        raise ModelError(f"--prune thresholds must not decrease with the order, got {thresholds}")
    V = len(vocab)
    tables = _ngram_tables(tok, order, V)
    adjusted: list[np.ndarray] = []
    for n in range(1, order + 1):
        t = tables[n - 1]
        if n == order:
            a = t.raw.copy()
        else:
            cont = np.bincount(tables[n].suffix, minlength=len(t.raw)).astype(np.int64)
            a = np.where(t.bos, t.raw, cont)
        if n == 1:
            a[BOS_ID] = 0
            a[UNK_ID] = 0
        adjusted.append(a)
    kept = []
    for n in range(1, order + 1):
        if n == 1 or thresholds[n - 1] == 0:
            kept.append(np.ones(len(adjusted[n - 1]), dtype=bool))
        else:
            kept.append(tables[n - 1].raw > thresholds[n - 1])
    discounts, fallback_orders = [], []
    for n in range(1, order + 1):
        d, fb = discounts_for(adjusted[n - 1], n, discount_fallback)
        discounts.append(d)
        if fb:
            fallback_orders.append(n)
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray] = []  # gamma per context id of the previous order (index: prefix id)
    uniform = 1.0 / max(V - 1, 1)  # |V| includes <unk>, excludes <s>
    for n in range(1, order + 1):
        t, a, k = tables[n - 1], adjusted[n - 1], kept[n - 1]
        disc = np.array((0.0,) + discounts[n - 1])[np.minimum(a, 3)]
        n_ctx = 1 if n == 1 else len(tables[n - 2].raw)
        denom = np.bincount(t.prefix, weights=a.astype(np.float64), minlength=n_ctx)
        mass = np.bincount(t.prefix, weights=np.where(k, disc, a.astype(np.float64)), minlength=n_ctx)
        with np.errstate(divide="ignore", invalid="ignore"):
            gamma = np.where(denom > 0, mass / denom, 1.0)
            u = (a - disc) / denom[t.prefix]
        if n == 1:
            p = u + gamma[0] * uniform
            p[UNK_ID] = gamma[0] * uniform
            p[BOS_ID] = 1.0
        else:
            p = u + gamma[t.prefix] * probs[n - 2][t.suffix]
        probs.append(p)
        gammas.append(gamma)
    backoffs = []
    for n in range(1, order + 1):
        size = len(adjusted[n - 1])
        if n == order:
            backoffs.append(np.ones(size))
            continue
        nxt = tables[n]
        is_ctx = np.bincount(nxt.prefix, minlength=size) > 0
        last = tables[n - 1].word
        is_ctx &= (last != EOS_ID) & (last != UNK_ID)
        backoffs.append(np.where(is_ctx, gammas[n], 1.0))
    return TrainedLM(
        order=order,
        vocab=vocab,
        tables=tables,
        adjusted=adjusted,
        kept=kept,
        prob=probs,
        backoff=backoffs,
        discounts=discounts,
        fallback_orders=fallback_orders,
        tokens=int(np.count_nonzero((tok != BOS_ID) & (tok != EOS_ID))),
        sentences=n_sentences,
    )


def train(
    texts: Iterable[pa.Array | pa.ChunkedArray | list[str]],
    order: int = 5,
    prune: Sequence[int] | None = None,
    tokenizer: Tokenizer | None = None,
    discount_fallback: bool = True,
) -> TrainedLM:
    """Train on batches of document texts (each line of a document is one sentence)."""
    tk = tokenizer or Tokenizer()
    tok, vocab, n_sent = count_tokens(tk.sentences(t) for t in texts)
    if n_sent == 0:
        raise InputError("the training text has no tokens (every document is empty or has no word)")
    return estimate(tok, vocab, order, prune, discount_fallback, n_sent)


def train_sentences(sentences: Iterable[Sequence[str]], order: int, **kw: Any) -> TrainedLM:
    """Train on already tokenised sentences (tests, small inputs)."""
    toks = pl.Series("tok", [list(s) for s in sentences if len(s)], dtype=pl.List(pl.String))
    tok, vocab, n_sent = count_tokens([Sentences.from_tokens(toks, np.zeros(len(toks), np.int64), len(toks))])
    return estimate(tok, vocab, order, n_sentences=n_sent, **kw)


# -- ARPA writing ------------------------------------------------------------------------------------


def _fmt(values: np.ndarray) -> pa.Array:
    """float -> shortest text that reads back as the same float32 (what KenLM stores)."""
    return pc.cast(pa.array(values.astype(np.float32)), pa.string())


def arpa_sections(lm: TrainedLM) -> list[tuple[int, pa.Array]]:
    """The lines of each ``\\n-grams:`` section (vectorised string building)."""
    vocab = pa.array(lm.vocab, type=pa.string())
    out = []
    strings = vocab
    for n in range(1, lm.order + 1):
        t = lm.tables[n - 1]
        words = vocab.take(pa.array(t.word))
        strings = (
            words if n == 1 else pc.binary_join_element_wise(strings.take(pa.array(t.prefix)), words, " ")
        )
        keep = lm.kept[n - 1]
        with np.errstate(divide="ignore"):
            lp = np.minimum(0.0, np.log10(lm.prob[n - 1][keep]))
        cols = [_fmt(lp), strings.filter(pa.array(keep))]
        if n < lm.order:
            cols.append(_fmt(np.log10(lm.backoff[n - 1][keep])))
        out.append((n, pc.binary_join_element_wise(*cols, "\t")))
    return out


def write_arpa(lm: TrainedLM, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``lm`` as an ARPA file (atomically) and a JSON sidecar ``<path>.json`` describing the
    tokenizer and training; returns the sidecar's content."""
    path = Path(path)
    sections = arpa_sections(lm)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as f:
        f.write("\\data\\\n")
        for n, lines in sections:
            f.write(f"ngram {n}={len(lines)}\n")
        for n, lines in sections:
            f.write(f"\n\\{n}-grams:\n")
            if len(lines):
                f.write(pl.Series(values=lines).str.join("\n").item())
                f.write("\n")
        f.write("\n\\end\\\n")
    os.replace(tmp, path)
    info = {
        "format": "arpa",
        "order": lm.order,
        "counts": [len(s) for _, s in sections],
        "discounts": {str(n + 1): list(d) for n, d in enumerate(lm.discounts)},
        "fallback_discount_orders": lm.fallback_orders,
        "tokens": lm.tokens,
        "sentences": lm.sentences,
        "vocab": len(lm.vocab),
        **(meta or {}),
    }
    Path(str(path) + SIDECAR_SUFFIX).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    from dcurate.io import storage

    if storage.is_uri(str(path)):  # a model on object storage: its sidecar is beside it there
        uri = str(path) + SIDECAR_SUFFIX
        try:
            return json.loads(storage.read_bytes(uri)) if storage.is_file(uri) else {}
        except (storage.StorageError, ValueError):
            return {}
    p = Path(str(path) + SIDECAR_SUFFIX)
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


# -- ARPA reading and scoring ------------------------------------------------------------------------


@dataclass
class NGramModel:
    """An ARPA back-off model in sorted-array form.

    Order-n n-grams are numbered 0..count-1 in the order of their key
    ``prefix_id * V + word_id`` (``keys[n-1]``, sorted), where ``prefix_id`` is the number of the
    (n-1)-gram formed by all but the last word; unigrams are numbered by word id.
    """

    order: int
    vocab: list[str]
    keys: list[np.ndarray]
    logprob: list[np.ndarray]
    backoff: list[np.ndarray]

    def __post_init__(self) -> None:
        self._words = pl.Series("w", self.vocab, dtype=pl.String)
        self._ids = pl.Series("i", np.arange(len(self.vocab), dtype=np.int64))
        where = {w: i for i, w in enumerate(self.vocab) if w in (UNK, BOS, EOS)}
        self.unk, self.bos, self.eos = where[UNK], where[BOS], where[EOS]

    @property
    def counts(self) -> list[int]:
        return [len(k) for k in self.keys]

    def encode(self, sent: Sentences) -> tuple[np.ndarray, np.ndarray]:
        """Flat id stream ``<s> w.. </s> ...`` of sentences (unknown words -> ``<unk>``)."""
        flat = sent.lines.str.split(" ").explode()
        ids = flat.replace_strict(self._words, self._ids, default=self.unk, return_dtype=pl.Int64).to_numpy()
        return frame_sentences(ids, sent.ntok, self.bos, self.eos)

    def score_ids(self, tok: np.ndarray) -> np.ndarray:
        """log10 p of every token of a framed id stream given its history (0 at ``<s>``), with
        ARPA back-off semantics: p(w | h) = P(longest suffix of h + w in the model) times the
        back-offs of the longer suffixes of h that are in the model."""
        T = len(tok)
        N = self.order
        V = np.int64(len(self.vocab))
        is_bos = tok == self.bos
        ids = [tok]  # id of the n-gram of each order ending at each position, -1 when absent
        for n in range(2, N + 1):
            prev = ids[-1]
            prev_at = np.full(T, -1, dtype=np.int64)
            prev_at[1:] = prev[:-1]
            valid = (prev_at >= 0) & ~is_bos
            cur = np.full(T, -1, dtype=np.int64)
            keys = self.keys[n - 1]
            if len(keys) and valid.any():
                q = prev_at[valid] * V + tok[valid]
                j = np.searchsorted(keys, q)
                j_c = np.minimum(j, len(keys) - 1)
                hit = keys[j_c] == q
                cur[valid] = np.where(hit, j_c, -1)
            ids.append(cur)
        # longest match and its probability
        score = np.zeros(T, dtype=np.float64)
        match = np.ones(T, dtype=np.int64)
        score[:] = self.logprob[0][tok]
        for n in range(2, N + 1):
            hit = ids[n - 1] >= 0
            match[hit] = n
            score[hit] = self.logprob[n - 1][ids[n - 1][hit]]
        # back-offs of the contexts (ending at t-1) of orders >= match that are in the model
        bo_sum = np.zeros(T, dtype=np.float64)  # sum over context orders k >= match of B_k(t-1)
        for k in range(N - 1, 0, -1):
            ctx = np.full(T, -1, dtype=np.int64)
            ctx[1:] = ids[k - 1][:-1]
            has = (ctx >= 0) & (match <= k)
            bo_sum[has] += self.backoff[k - 1][ctx[has]]
        score += bo_sum
        score[is_bos] = 0.0
        return score

    def score_sentences(self, sent: Sentences) -> tuple[np.ndarray, np.ndarray]:
        """Per document: (sum of log10 p over its sentences' tokens and ``</s>``, token count)."""
        if len(sent) == 0:
            return np.zeros(sent.n_docs), np.zeros(sent.n_docs, dtype=np.int64)
        tok, starts = self.encode(sent)
        lp = self.score_ids(tok)
        # sentence of each position: starts are sorted; <s> positions carry 0
        sid = np.searchsorted(starts, np.arange(len(tok)), side="right") - 1
        doc_of_pos = sent.doc[sid]
        sums = np.bincount(doc_of_pos, weights=lp, minlength=sent.n_docs)
        lens = np.bincount(doc_of_pos, weights=(~(tok == self.bos)).astype(np.float64), minlength=sent.n_docs)
        return sums, lens.astype(np.int64)


def _arpa_error(path: str, lineno: int, msg: str) -> ModelError:
    return ModelError(f"{path}:{lineno}: {msg}")


def read_arpa(path: str | os.PathLike, expected_order: int | None = None) -> NGramModel:
    """Parse an ARPA file into an :class:`NGramModel` (errors name the file and line)."""
    path = str(path)
    try:
        if path.endswith(".gz"):
            import gzip

            with gzip.open(path, "rb") as gz:
                data = gz.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: language model file not found") from None
    except UnicodeDecodeError:
        raise ModelError(
            f"{path}: not a UTF-8 ARPA text file (a KenLM binary model needs --backend kenlm)"
        ) from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read language model ({e})") from None

    def line_no(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def next_line(pos: int) -> tuple[int, str, int]:
        """Skip blank lines from ``pos``; return (start, stripped line, position after it)."""
        m = _NONBLANK.search(text, pos)
        if m is None:
            return len(text), "", len(text)
        start = text.rfind("\n", 0, m.start()) + 1
        end = text.find("\n", m.start())
        end = len(text) if end < 0 else end
        return start, text[start:end].strip(), end + 1

    start, line, cur = next_line(0)
    if line != "\\data\\":
        raise _arpa_error(
            path,
            line_no(start),
            f"expected '\\data\\' to start the ARPA file, got {line[:60] or 'end of file'!r}",
        )
    declared: list[int] = []
    while True:
        start, line, nxt = next_line(cur)
        if not line.startswith("ngram "):
            break
        head, sep, val = line[6:].partition("=")
        try:
            n, c = int(head), int(val)
        except ValueError:
            raise _arpa_error(
                path, line_no(start), f"malformed count line {line!r} (want 'ngram N=COUNT')"
            ) from None
        if not sep or n != len(declared) + 1 or c < 0:
            raise _arpa_error(
                path, line_no(start), f"expected 'ngram {len(declared) + 1}=COUNT', got {line!r}"
            )
        declared.append(c)
        cur = nxt
    if not declared:
        raise _arpa_error(path, line_no(start), "no 'ngram N=COUNT' lines after '\\data\\'")
    order = len(declared)
    if expected_order is not None and order != expected_order:
        raise _arpa_error(path, 2, f"the model has order {order}, expected {expected_order}")
    sections: list[tuple[int, pl.Series]] = []
    for n in range(1, order + 1):
        start, line, body_start = next_line(cur)
        want = f"\\{n}-grams:"
        if line != want:
            raise _arpa_error(
                path, line_no(start), f"expected section header '{want}', got {line[:60] or 'end of file'!r}"
            )
        end = text.find("\n\\", body_start - 1)
        if end < 0:
            raise _arpa_error(
                path,
                line_no(len(text)),
                f"the '{want}' section is not followed by '\\end\\' or another section",
            )
        first = line_no(body_start)
        body = text[body_start : end + 1].rstrip()
        lines = pl.Series([body]).str.split("\n").explode() if body else pl.Series([], dtype=pl.String)
        blank = (lines.str.strip_chars().str.len_bytes() == 0).to_numpy()
        if blank.any():
            r = int(np.flatnonzero(blank)[0])
            raise _arpa_error(path, first + r, f"blank line inside the '{want}' section")
        if len(lines) != declared[n - 1]:
            raise _arpa_error(
                path,
                first,
                f"'ngram {n}={declared[n - 1]}' in the header but the '{want}' section has {len(lines)} entries",
            )
        sections.append((first, lines))
        cur = end + 1
    start, line, _ = next_line(cur)
    if line != "\\end\\":
        raise _arpa_error(
            path,
            line_no(start),
            f"expected '\\end\\' after the {order}-grams, got {line[:60] or 'end of file'!r}",
        )
    return _build_model(path, order, sections)


_NONBLANK = re.compile(r"\S")


def _build_model(path: str, order: int, sections: list[tuple[int, pl.Series]]) -> NGramModel:
    keys: list[np.ndarray] = []
    logprob: list[np.ndarray] = []
    backoff: list[np.ndarray] = []
    vocab_s = pl.Series("w", [], dtype=pl.String)
    vocab_ids = pl.Series("i", [], dtype=pl.Int64)
    V = np.int64(0)
    for n, (first, lines) in enumerate(sections, start=1):
        fields = lines.str.extract_all(r"[^ \t\r]+")
        nf = fields.list.len().to_numpy()
        ok = (nf == n + 1) | (nf == n + 2)
        if not ok.all():
            r = int(np.flatnonzero(~ok)[0])
            raise _arpa_error(
                path,
                first + r,
                f"the {n}-gram section has a malformed entry {lines[r][:80]!r} (want 'logprob<TAB>{n} words[<TAB>backoff]')",
            )
        prob = fields.list.first().cast(pl.Float64, strict=False)
        bo = fields.list.get(n + 1, null_on_oob=True).cast(pl.Float64, strict=False)
        bad = prob.is_null().to_numpy() | ((nf == n + 2) & bo.is_null().to_numpy())
        if bad.any():
            r = int(np.flatnonzero(bad)[0])
            raise _arpa_error(path, first + r, f"non-numeric probability or back-off in {lines[r][:80]!r}")
        lp = prob.to_numpy().astype(np.float64)
        bov = bo.fill_null(0.0).to_numpy().astype(np.float64)
        if n == 1:
            words = fields.list.get(1)
            dup = words.is_duplicated().to_numpy()
            if dup.any():
                r = int(np.flatnonzero(dup)[1])
                raise _arpa_error(path, first + r, f"duplicate unigram {lines[r][:80]!r}")
            present = set(words.filter(words.is_in([UNK, BOS, EOS])).to_list())
            for special in (BOS, EOS):
                if special not in present:
                    raise _arpa_error(path, first, f"the unigrams have no {special}")
            if UNK not in present:
                # KenLM adds <unk> with log10 p = -100 when the model has none
                words = pl.concat([words, pl.Series([UNK])])
                lp = np.append(lp, -100.0)
                bov = np.append(bov, 0.0)
            vocab_s = words.rename("w")
            V = np.int64(len(vocab_s))
            vocab_ids = pl.Series("i", np.arange(V, dtype=np.int64))
            keys.append(np.arange(V, dtype=np.int64))
            logprob.append(lp)
            backoff.append(bov)
            continue
        flat = fields.list.slice(1, n).explode()
        wid = (
            flat.replace_strict(vocab_s, vocab_ids, default=-1, return_dtype=pl.Int64)
            .to_numpy()
            .reshape(-1, n)
        )
        missing = (wid < 0).any(axis=1)
        if missing.any():
            r = int(np.flatnonzero(missing)[0])
            raise _arpa_error(
                path, first + r, f"{n}-gram {lines[r][:80]!r} has a word missing from the unigrams"
            )
        ids = wid[:, 0]
        for j in range(1, n - 1):  # id of the prefix (w1..w_{j+1}) in the order-(j+1) table
            q = ids * V + wid[:, j]
            kj = keys[j]
            pos = np.minimum(np.searchsorted(kj, q), max(len(kj) - 1, 0))
            found = (kj[pos] == q) if len(kj) else np.zeros(len(q), dtype=bool)
            if not found.all():
                r = int(np.flatnonzero(~found)[0])
                raise _arpa_error(
                    path,
                    first + r,
                    f"{n}-gram {lines[r][:80]!r}: its first {j + 1} words are not a {j + 1}-gram of the model",
                )
            ids = pos
        k = ids * V + wid[:, n - 1]
        perm = np.argsort(k, kind="stable")
        ks = k[perm]
        if len(ks) > 1 and (ks[1:] == ks[:-1]).any():
            r = int(perm[np.flatnonzero(ks[1:] == ks[:-1])[0] + 1])
            raise _arpa_error(path, first + r, f"duplicate {n}-gram {lines[r][:80]!r}")
        keys.append(ks)
        logprob.append(lp[perm])
        backoff.append(bov[perm])
    return NGramModel(order=order, vocab=vocab_s.to_list(), keys=keys, logprob=logprob, backoff=backoff)


def perplexity(log10_sum: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """CCNet's 10 ** (-sum log10 p / tokens); NaN where a document has no token."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n_tokens > 0, np.power(10.0, -log10_sum / np.maximum(n_tokens, 1)), np.nan)


def is_arpa(path: str | os.PathLike) -> bool:
    """True for an ARPA text file (starts with ``\\data\\`` after blank lines)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    if str(path).endswith(".gz"):
        return True
    return head.lstrip().startswith(b"\\data\\")


__all__ = [
    "BOS",
    "EOS",
    "UNK",
    "NGramModel",
    "Sentences",
    "Tokenizer",
    "TrainedLM",
    "estimate",
    "is_arpa",
    "perplexity",
    "read_arpa",
    "read_sidecar",
    "train",
    "train_sentences",
    "write_arpa",
]
