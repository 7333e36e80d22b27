#!/usr/bin/env python
"""Generate dcurate's small demo corpus, deterministically and without any download.

    python scripts/make_demo_corpus.py [--out data/demo] [--docs 3000] [--seed 0]

Writes (byte-identical for the same --docs and --seed)::

    OUT/corpus/part-0000{0,2}.jsonl.zst   documents {id, text, domain}, JSON Lines, zstd level 3
    OUT/corpus/part-0000{1,3}.parquet     the same schema, Parquet (zstd)
    OUT/extra/quality_train.jsonl         {id, text, label}: label "hq" (clean prose) or "lq" (junk)
    OUT/extra/target.jsonl                {id, text, domain}: held-out wiki-like articles (a target
                                          set for `select --method dsir` or for training a small LM)
    OUT/extra/planted.json                what was planted: exact and near duplicates (with their
                                          word 5-gram Jaccard), low-quality documents by kind

The corpus has five domains of unequal size, all generated from built-in word lists and
templates with ``random.Random(seed)``: wiki (encyclopedic prose), forum (posts with quotes and
signatures), code (Python functions), legal (licence boilerplate, naturally repetitive), short
(page fragments). Planted on top: exact copies (id ``<orig>~dup<k>``), near duplicates with a few
words edited so that the word 5-gram Jaccard similarity with the original lies in 0.80..0.95
(``<orig>~near<k>``), and low-quality documents (``lq-<kind>-<n>``: too short, symbol soup,
repeated lines, lorem ipsum, bullet lists, keyword spam). Documents are shuffled across shards,
so duplicates usually sit in a different shard from their original.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

# -- word lists ---------------------------------------------------------------------------------------

PLACES = """Aldermoor Brackenfield Calder Dunmere Eastholme Fairhaven Glenrock Harrowgate Ivybridge Juniper
Kestrel Larchmont Millbrook Northwick Oakhurst Pennfold Quarrydale Redcliffe Stonebridge Thornbury Upwater
Valemount Westerly Yarrowby Ashcombe Birchwood Coldharbour Deepdale Elmstead Foxley Greywater Hollins""".split()
REGIONS = "northern southern eastern western central coastal upland lowland".split()
COUNTRIES = "Arvenia Belmark Corsland Dravonia Estmark Fenland Galmoria Hestria Istvale Jorland".split()
KINDS = "town village city river valley island lake harbour mountain forest district parish".split()
PEOPLE = """Edmund Hale|Margaret Quill|Thomas Verity|Agnes Morrow|William Ashdown|Clara Penrose|Henry Voss|
Eleanor Bright|Samuel Crane|Isabel Fenwick|Arthur Lowell|Beatrice Marsh|Walter Grieve|Harriet Lyle""".replace(
    "\n", ""
).split("|")
W_NOUNS = """trade wool grain timber coal iron salt fishing shipbuilding pottery railway bridge cathedral market
university library museum castle abbey mill canal harbour council charter festival population economy climate
architecture agriculture industry parliament treaty census dialect landscape monastery fortress garrison""".split()
W_ADJ = """historic ancient prosperous small large notable important rural industrial medieval coastal
fertile mountainous densely populated remote famous wealthy modest independent northern southern""".split()
W_VERBS = """expanded founded rebuilt governed described documented restored extended surveyed fortified
developed financed designed recorded established abandoned improved""".split()
FORUM_THINGS = (
    """laptop router graphics card printer bike engine guitar amplifier camera lens keyboard monitor
garden hose heat pump thermostat motherboard hard drive phone battery compiler script""".split("\n")[
        0
    ].split()
    + ["graphics card", "heat pump", "hard drive", "phone battery", "garden hose"]
)
FORUM_OPEN = ["Hi all,", "Hey everyone,", "Hello,", "Quick question:", "Long time lurker, first post.", "So,"]
FORUM_Q = [
    "has anyone tried replacing the {t} on an older model?",
    "my {t} keeps making a weird noise when it warms up, is that normal?",
    "what is the best way to clean a {t} without breaking it?",
    "I just bought a used {t} and I am not sure it works right.",
    "does anyone know if the new {t} is worth the money?",
    "I think my {t} is broken but the shop says it is fine.",
]
FORUM_BODY = [
    "I tried turning it off and on again but that did not help at all.",
    "Honestly I have no idea what I am doing here lol.",
    "The manual says nothing useful about this, of course.",
    "It worked fine for about two weeks and then it just stopped.",
    "I read a few threads about it but they are all from years ago.",
    "My brother says I should just buy a new one, but that seems like a waste.",
    "Any advice would be great, I am pretty stuck right now.",
    "IMHO the older ones were built much better than the stuff you get today.",
    "I will post an update if I manage to fix it myself.",
    "Yes, I already checked the cables twice.",
]
FORUM_SIGN = ["Thanks in advance,", "Cheers,", "Thanks!", "Regards,", "-- sent from my phone"]
NAMES = "alex sam jo chris pat kim lee robin taylor morgan jamie casey".split()
CODE_VERBS = "load parse build read write merge split count filter sort update compute render fetch".split()
CODE_NOUNS = "config items records tokens rows users events values nodes files lines scores blocks".split()
LEGAL_PARTIES = [
    "the Licensee",
    "the Licensor",
    "the Recipient",
    "the Contributor",
    "the User",
    "the Provider",
]
LEGAL_THINGS = [
    "the Software",
    "the Work",
    "the Documentation",
    "the Service",
    "any Derivative Work",
    "the Materials",
]
LEGAL_VERBS = ["copy", "modify", "distribute", "sublicense", "sell", "reproduce", "publicly display"]
LEGAL_SENT = [
    "{P} may {V} {T} subject to the conditions set out in this Agreement.",
    "{P} shall not {V} {T} without the prior written consent of {Q}.",
    '{T} is provided on an "as is" basis, without warranties or conditions of any kind.',
    "In no event shall {P} be liable for any claim, damages or other liability arising from {T}.",
    "This Agreement shall be governed by the laws of the jurisdiction in which {Q} is established.",
    "The above notice and this permission notice shall be included in all copies of {T}.",
    "{P} agrees to indemnify {Q} against any loss arising from a breach of this section.",
    "Any notice under this Agreement shall be given in writing to {Q}.",
    "If any provision of this Agreement is held unenforceable, the remaining provisions remain in effect.",
]
SHORT = [
    "Click here to subscribe to our newsletter.",
    "Home | About | Contact | Blog",
    "Posted by {n} on {d}",
    "Read more",
    "Page {k} of {m}",
    "Share this: Twitter Facebook Email",
    "All rights reserved.",
    "Tags: {w}, {w2}",
    "Last updated {d}.",
    "Comments are closed.",
]
LOREM = """lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore
et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea
commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur""".split()
SPAM = "cheap best free buy now discount offer deal pills casino win click limited sale".split()
SYMBOLS = list("#@$%^&*~|<>+=_/\\") + ["...", "!!!", "###", "$$$"]


class Gen:
    """All generators draw from one seeded ``random.Random``, in a fixed order."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def pick(self, seq):
        return self.r.choice(seq)

    # -- domains ----------------------------------------------------------------------------------
    def wiki(self) -> str:
        r = self.r
        place, kind = self.pick(PLACES), self.pick(KINDS)
        year = r.randint(1100, 1950)
        sents = [
            f"{place} is a {self.pick(W_ADJ)} {kind} in the {self.pick(REGIONS)} part of {self.pick(COUNTRIES)}.",
            f"It was first recorded in {year}, when {self.pick(PEOPLE)} {self.pick(W_VERBS)} the {self.pick(W_NOUNS)} of the area.",
        ]
        templates = [
            "The {n} of {p} {v} rapidly during the {c} century.",
            "By {y} the {k} had a population of about {num} people.",
            "The local {n} was {v} in {y} and again after a fire in {y2}.",
            "{person} wrote that the {n} was the most {a} in the region.",
            "Most of the inhabitants worked in {n} or in {n2}.",
            "The {a} {n} that stands near the centre dates from the {c} century.",
            "In {y} a {n} was opened, and it remains an important part of the {n2} today.",
            "The climate is mild, and the surrounding land is used for {n} and {n2}.",
            "Historians have {v} the role of the {n} in the growth of the {k}.",
            "A {a} {n} connects the {k} with the nearby town of {p2}.",
            "The {k} is governed by a council that meets in the old {n}.",
            "During the war the {n} was {v} and later used as a {n2}.",
        ]
        for t in r.sample(templates, r.randint(4, len(templates))):  # no template twice in a document
            sents.append(
                t.format(
                    n=self.pick(W_NOUNS),
                    n2=self.pick(W_NOUNS),
                    p=place,
                    p2=self.pick(PLACES),
                    k=kind,
                    v=self.pick(W_VERBS),
                    a=self.pick(W_ADJ),
                    y=r.randint(1200, 1990),
                    y2=r.randint(1200, 1990),
                    c=self.pick(
                        ["twelfth", "fourteenth", "sixteenth", "eighteenth", "nineteenth", "twentieth"]
                    ),
                    num=f"{r.randint(2, 900) * 100:,}",
                    person=self.pick(PEOPLE),
                )
            )
        paras, i = [], 0
        while i < len(sents):
            k = r.randint(2, 5)
            paras.append(" ".join(sents[i : i + k]))
            i += k
        return f"{place}\n\n" + "\n\n".join(paras)

    def forum(self) -> str:
        r = self.r
        t = self.pick(FORUM_THINGS)
        lines = [f"Subject: {self.pick(['Re: ', ''])}{t} problem", ""]
        body = r.sample(FORUM_BODY, r.randint(3, 8))  # distinct sentences, the first may be quoted
        if r.random() < 0.4:
            lines += ["> " + body.pop(0), ""]
        q1, q2 = r.sample(FORUM_Q, 2)
        lines.append(self.pick(FORUM_OPEN) + " " + q1.format(t=t))
        lines.append(" ".join(body))
        if r.random() < 0.5:
            lines.append(q2.format(t=self.pick(FORUM_THINGS)).capitalize())
        lines += ["", self.pick(FORUM_SIGN), self.pick(NAMES)]
        return "\n".join(lines)

    def code(self) -> str:
        r = self.r
        funcs = []
        for _ in range(r.randint(1, 4)):
            v, n = self.pick(CODE_VERBS), self.pick(CODE_NOUNS)
            arg = self.pick(CODE_NOUNS)
            lim = r.randint(1, 100)
            body = self.pick(
                [
                    f"    result = []\n    for item in {arg}:\n        if len(item) > {lim}:\n            result.append(item)\n    return result",
                    f"    total = 0\n    for value in {arg}:\n        total += value * {lim}\n    return total",
                    f"    with open(path) as fh:\n        {n} = [line.strip() for line in fh]\n    return {n}[:{lim}]",
                    f'    if not {arg}:\n        raise ValueError("no {arg} given")\n    return sorted({arg}, key=lambda x: x[{lim % 3}])',
                    f"    {n} = {{}}\n    for key, value in {arg}.items():\n        {n}[key] = value + {lim}\n    return {n}",
                ]
            )
            params = "path" if "path" in body else arg
            funcs.append(
                f'def {v}_{n}({params}):\n    """{v.capitalize()} the {n} from {params}."""\n{body}\n'
            )
        header = self.pick(["import os\nimport sys\n\n", "from collections import defaultdict\n\n", ""])
        return (header + "\n\n".join(funcs)).strip()

    def legal(self) -> str:
        r = self.r
        out = [f"SECTION {r.randint(1, 30)}. {self.pick(['LICENCE', 'WARRANTY', 'LIABILITY', 'TERMS'])}"]
        for sent in r.sample(LEGAL_SENT, r.randint(4, len(LEGAL_SENT))):
            p, q = r.sample(LEGAL_PARTIES, 2)
            out.append(sent.format(P=p, Q=q, T=self.pick(LEGAL_THINGS), V=self.pick(LEGAL_VERBS)))
        return out[0] + "\n\n" + " ".join(out[1:])

    def short(self) -> str:
        r = self.r
        return " ".join(
            self.pick(SHORT).format(
                n=self.pick(NAMES),
                d=f"{r.randint(1, 28)} March {r.randint(2005, 2023)}",
                k=r.randint(1, 9),
                m=r.randint(10, 40),
                w=self.pick(W_NOUNS),
                w2=self.pick(W_NOUNS),
            )
            for _ in range(r.randint(1, 3))
        )

    # -- low quality ----------------------------------------------------------------------------------
    def low_quality(self, kind: str) -> str:
        r = self.r
        if kind == "too_short":
            return " ".join(r.choice(W_NOUNS + LOREM[:5]) for _ in range(r.randint(3, 20)))
        if kind == "symbol_soup":
            return " ".join(
                r.choice(SYMBOLS) + r.choice(["", self.pick(SPAM)]) for _ in range(r.randint(60, 200))
            )
        if kind == "repeated_lines":
            line = self.pick(FORUM_BODY)
            return "\n".join([line] * r.randint(15, 40))
        if kind == "lorem_ipsum":
            return "Lorem ipsum " + " ".join(r.choice(LOREM) for _ in range(r.randint(80, 250))) + "."
        if kind == "bullet_list":
            return "\n".join(
                f"- {self.pick(W_NOUNS)} {self.pick(W_NOUNS)} {r.randint(1, 99)}"
                for _ in range(r.randint(20, 60))
            )
        if kind == "keyword_spam":
            return " ".join(self.pick(SPAM) for _ in range(r.randint(80, 300)))
        raise ValueError(kind)


DOMAIN_SHARE = {"wiki": 0.40, "forum": 0.25, "code": 0.14, "legal": 0.11, "short": 0.10}
LQ_KINDS = ["too_short", "symbol_soup", "repeated_lines", "lorem_ipsum", "bullet_list", "keyword_spam"]
LQ_DOMAIN = {
    "too_short": "short",
    "symbol_soup": "forum",
    "repeated_lines": "forum",
    "lorem_ipsum": "wiki",
    "bullet_list": "short",
    "keyword_spam": "forum",
}

_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = 5) -> set[tuple[str, ...]]:
    ws = _WORD.findall(text.lower())
    return {tuple(ws[i : i + n]) for i in range(max(1, len(ws) - n + 1))}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def near_duplicate(g: Gen, text: str) -> tuple[str, float]:
    """Replace single words of ``text`` until the word 5-gram Jaccard drops into 0.80..0.95."""
    target = g.r.uniform(0.80, 0.95)
    base = shingles(text)
    tokens = re.split(r"(\w+)", text)  # odd positions are words
    word_pos = [i for i in range(1, len(tokens), 2)]
    vocab = W_NOUNS + W_ADJ + W_VERBS
    j = 1.0
    for _ in range(len(word_pos)):
        i = g.r.choice(word_pos)
        tokens[i] = g.r.choice(vocab)
        j = jaccard(base, shingles("".join(tokens)))
        if j <= target:
            break
    if j < 0.80:  # one edit too many on a short text: undo is not tracked, so accept only >= 0.8
        return "", j
    return "".join(tokens), j


def generate(n_docs: int, seed: int) -> tuple[list[dict], dict, list[dict], list[dict]]:
    g = Gen(seed)
    n_exact = max(1, n_docs * 5 // 100)
    n_near = max(1, n_docs * 7 // 100)
    n_lq = max(len(LQ_KINDS), n_docs * 6 // 100)
    n_orig = max(len(DOMAIN_SHARE), n_docs - n_exact - n_near - n_lq)
    docs: list[dict] = []
    counts = {d: int(n_orig * s) for d, s in DOMAIN_SHARE.items()}
    counts["wiki"] += n_orig - sum(counts.values())
    for domain, k in counts.items():
        make = getattr(g, domain)
        for i in range(k):
            docs.append({"id": f"{domain}-{i:05d}", "text": make(), "domain": domain})
    planted: dict = {"exact_dups": [], "near_dups": [], "low_quality": {}}
    long_docs = [
        d for d in docs if d["domain"] in ("wiki", "forum", "legal") and len(_WORD.findall(d["text"])) >= 60
    ]
    copies: dict[str, int] = {}
    for _ in range(n_exact):
        src = g.pick(docs[:n_orig])
        copies[src["id"]] = copies.get(src["id"], 0) + 1
        did = f"{src['id']}~dup{copies[src['id']]}"
        docs.append({"id": did, "text": src["text"], "domain": src["domain"]})
        planted["exact_dups"].append([src["id"], did])
    made = 0
    while made < n_near:
        src = g.pick(long_docs)
        text, j = near_duplicate(g, src["text"])
        if not text:
            continue
        copies[src["id"]] = copies.get(src["id"], 0) + 1
        did = f"{src['id']}~near{copies[src['id']]}"
        docs.append({"id": did, "text": text, "domain": src["domain"]})
        planted["near_dups"].append([src["id"], did, round(j, 4)])
        made += 1
    for i in range(n_lq):
        kind = LQ_KINDS[i % len(LQ_KINDS)]
        did = f"lq-{kind}-{i:04d}"
        docs.append({"id": did, "text": g.low_quality(kind), "domain": LQ_DOMAIN[kind]})
        planted["low_quality"][did] = kind
    g.r.shuffle(docs)

    n_q = max(20, n_docs // 5)
    quality = []
    for i in range(n_q):
        if i % 2 == 0:
            text = g.pick([g.wiki, g.wiki, g.legal])()
            label = "hq"
        else:
            text = g.pick([lambda: g.low_quality(g.pick(LQ_KINDS)), g.short, g.forum])()
            label = "lq"
        quality.append({"id": f"q-{i:05d}", "text": text, "label": label})
    target = [
        {"id": f"target-{i:05d}", "text": g.wiki(), "domain": "wiki"} for i in range(max(10, n_docs // 10))
    ]
    return docs, planted, quality, target


SHARDS = [
    ("part-00000", "jsonl.zst"),
    ("part-00001", "parquet"),
    ("part-00002", "jsonl.zst"),
    ("part-00003", "parquet"),
]
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("domain", pa.string())])


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write(out: Path, docs: list[dict], planted: dict, quality: list[dict], target: list[dict]) -> list[Path]:
    corpus, extra = out / "corpus", out / "extra"
    corpus.mkdir(parents=True, exist_ok=True)
    extra.mkdir(parents=True, exist_ok=True)
    for old in corpus.glob("part-*"):  # a previous run with other settings
        old.unlink()
    written = []
    k = len(SHARDS)
    for s, (stem, fmt) in enumerate(SHARDS):
        part = docs[s * len(docs) // k : (s + 1) * len(docs) // k]
        path = corpus / f"{stem}.{fmt}"
        if fmt == "parquet":
            table = pa.Table.from_pylist(part, schema=SCHEMA)
            buf = io.BytesIO()
            pq.write_table(table, buf, compression="zstd", row_group_size=500)
            path.write_bytes(buf.getvalue())
        else:
            path.write_bytes(zstandard.ZstdCompressor(level=3).compress(_jsonl(part)))
        written.append(path)
    for name, data in [
        ("quality_train.jsonl", _jsonl(quality)),
        ("target.jsonl", _jsonl(target)),
        ("planted.json", (json.dumps(planted, indent=1, sort_keys=True) + "\n").encode()),
    ]:
        (extra / name).write_bytes(data)
        written.append(extra / name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--out", default="data/demo", help="output folder (default: data/demo)")
    ap.add_argument("--docs", type=int, default=3000, help="number of corpus documents (default: 3000)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    a = ap.parse_args(argv)
    if a.docs < 50:
        ap.error("--docs must be at least 50")
    docs, planted, quality, target = generate(a.docs, a.seed)
    write(Path(a.out), docs, planted, quality, target)
    by_domain: dict[str, int] = {}
    for d in docs:
        by_domain[d["domain"]] = by_domain.get(d["domain"], 0) + 1
    print(
        f"wrote {len(docs)} documents to {Path(a.out) / 'corpus'} ({len(SHARDS)} shards; "
        + ", ".join(f"{k} {v}" for k, v in sorted(by_domain.items()))
        + f"); planted {len(planted['exact_dups'])} exact and {len(planted['near_dups'])} near duplicates, "
        f"{len(planted['low_quality'])} low-quality documents; extra: {len(quality)} quality-labelled, {len(target)} target",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
