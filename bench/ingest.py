"""Ingestion throughput (MB/s) on a generated corpus.

    python bench/ingest.py                      # 50 MB in ~500 files of markdown, text, rst and HTML
    python bench/ingest.py --single-file        # one 50 MB plain-text file
    python bench/ingest.py --size-mb 5 --tokenizer whitespace

The corpus is generated (seeded) into a temporary folder unless ``--dir`` names one to keep. It has
headings, long and short sentences, HTML boilerplate, an exact duplicate and a near-duplicate, so every
part of the stage runs. Throughput is corpus bytes over the wall time of ``ingest_corpus`` (tokenizer and
spaCy loading included), and over its CPU time (the figure to compare on a machine shared with other
work); peak RSS and the load average are reported too.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

def _vocabulary(rng, n_rare: int = 4000) -> list[str]:
    """English words (the whole words of the embedded MiniLM vocabulary when installed, in its rough
    frequency order) followed by made-up names and codes that tokenizers split into several pieces."""
    from workbench.core.paths import embedded_embedder_dir

    folder = embedded_embedder_dir()
    words: list[str] = []
    if folder is not None:
        vocab = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        words = [w for w in vocab[1996:] if w.isalpha() and w.isascii() and len(w) > 1][:20000]
    if not words:  # no embedded model: a small built-in list
        words = ("the of and to in is that for it as was with be by on not this are or from at which but have "
                 "an they you were there one all we their been has when who will more no if out so").split()
    syllables = ["ka", "re", "tor", "vik", "ne", "sal", "mo", "rin", "ta", "lu", "ber", "sk", "ua", "ter",
                 "ply", "on", "hav", "ik", "dra", "gen", "ost", "fel", "mar", "ki", "so"]
    rare = sorted({"".join(rng.choice(syllables, size=rng.integers(2, 5))).capitalize() for _ in range(n_rare)})
    return words[:200] + rare[:200] + words[200:] + rare[200:]


def _sentences(rng, vocab: list[str], n_words: int) -> list[str]:
    import numpy as np

    ranks = np.arange(1, len(vocab) + 1)
    p = 1.0 / ranks ** 1.05
    words = np.array(vocab, dtype=object)[rng.choice(len(vocab), size=n_words, p=p / p.sum())]
    out, i = [], 0
    while i < n_words:
        k = int(rng.integers(6, 32)) if rng.random() > 0.002 else 400  # now and then an over-long sentence
        s = words[i:i + k].tolist()
        i += k
        if not s:
            break
        s[0] = s[0].capitalize()
        if rng.random() < 0.15:
            s.insert(len(s) // 2, f"{rng.integers(1, 999)}.{rng.integers(0, 9)} kg,")
        out.append(" ".join(s) + rng.choice([".", ".", ".", "?", "!"]))
    return out


def _render(kind: str, title: str, sections: list[tuple[str, list[list[str]]]]) -> str:
    if kind == "md":
        body = "".join(f"\n## {h}\n\n" + "\n\n".join(" ".join(p) for p in paras) + "\n" for h, paras in sections)
        return f"# {title}\n{body}"
    if kind == "rst":
        body = "".join(f"\n{h}\n{'-' * len(h)}\n\n" + "\n\n".join(" ".join(p) for p in paras) + "\n"
                       for h, paras in sections)
        return f"{'=' * len(title)}\n{title}\n{'=' * len(title)}\n{body}"
    if kind == "txt":
        return title + "\n\n" + "\n\n".join("\n\n".join(" ".join(p) for p in paras) for _, paras in sections)
    body = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{' '.join(p)}</p>\n" for p in paras) for h, paras in sections)
    return (f"<html><head><title>{title}</title><style>body{{margin:0}}</style><script>var t=1;</script></head>"
            f"<body><nav><a href='/'>Home</a> <a href='/a'>About</a></nav><header>Site</header><main>"
            f"<h1>{title}</h1>{body}</main><footer>(c) Example</footer></body></html>")


def generate_corpus(root: Path, size_mb: float, single_file: bool = False, seed: int = 0) -> int:
    """Write a generated corpus of about ``size_mb`` MB under ``root``; returns its size in bytes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = _vocabulary(rng)
    root.mkdir(parents=True, exist_ok=True)
    target = int(size_mb * 1e6)
    if single_file:
        with open(root / "big.txt", "w", encoding="utf-8") as f:
            written = 0
            while written < target:
                sents = _sentences(rng, vocab, 200_000)
                paras = ["\n".join(sents[i:i + 6]) for i in range(0, len(sents), 6)]
                block = "\n\n".join(paras) + "\n\n"
                f.write(block)
                written += len(block.encode())
        return (root / "big.txt").stat().st_size
    total, n = 0, 0
    kinds = ["md", "md", "txt", "rst", "html"]
    while total < target:
        kind = kinds[n % len(kinds)]
        sents = _sentences(rng, vocab, int(rng.integers(8_000, 25_000)))
        sections, i = [], 0
        while i < len(sents):
            k = int(rng.integers(8, 40))
            chunk = sents[i:i + k]
            paras = [chunk[j:j + 5] for j in range(0, len(chunk), 5)]
            sections.append((f"Section {len(sections) + 1}: {sents[i].split()[0]}", paras))
            i += k
        text = _render(kind, f"Document {n}", sections)
        path = root / f"d{n // 100:02d}" / f"doc{n:05d}.{kind}"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        total += path.stat().st_size
        n += 1
        if n == 3:  # an exact duplicate and a near-duplicate of the first document
            first = (root / "d00" / "doc00000.md").read_text(encoding="utf-8")
            (root / "d00" / "copy.md").write_text(first, encoding="utf-8")
            (root / "d00" / "near.md").write_text(first.replace(" the ", " a ", 20), encoding="utf-8")
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=50.0)
    ap.add_argument("--single-file", action="store_true", help="one big .txt file instead of ~500 files")
    ap.add_argument("--dir", type=Path, help="generate into (and keep) this folder")
    ap.add_argument("--tokenizer", default="default")
    ap.add_argument("--chunk-tokens", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="0 = auto (IngestConfig.workers)")
    args = ap.parse_args(argv)

    from workbench.core.config import IngestConfig
    from workbench.corpus.ingest import ingest_corpus

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp) / "corpus"
        t = time.perf_counter()
        size = generate_corpus(root, args.size_mb, args.single_file) if not any(root.glob("**/*.*")) else \
            sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"corpus: {size / 1e6:.1f} MB at {root} (generated in {time.perf_counter() - t:.1f} s)")
        cfg = IngestConfig(chunk_tokens=args.chunk_tokens, tokenizer=args.tokenizer, workers=args.workers)
        t, cpu = time.perf_counter(), time.process_time()
        result = ingest_corpus(root, cfg, progress=True)
        seconds, cpu_seconds = time.perf_counter() - t, time.process_time() - cpu
    print(result.report.summary())
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # worker processes are the fork server's children, so their CPU time is not ours to read
    per_cpu = (f"{size / 1e6 / cpu_seconds:.2f} MB/s per CPU-second ({cpu_seconds:.1f} s CPU)"
               if result.report.workers < 2 else f"{result.report.workers} worker processes")
    print(f"ingest throughput: {size / 1e6 / seconds:.2f} MB/s wall ({size / 1e6:.1f} MB in {seconds:.1f} s), "
          f"{per_cpu}; {len(result.chunks)} chunks, peak RSS {peak_mb:.0f} MB (main process), "
          f"{os.cpu_count()} cores, load average {load:.1f}")


if __name__ == "__main__":
    main()
