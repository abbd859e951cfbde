"""`workbench serve` throughput: N concurrent requests to ``base`` vs the same N one after another.

Starts a real ``workbench serve`` subprocess (the embedded SmolLM2-135M by default), sends N short
closed-book questions sequentially, then all N at once, and prints wall times, requests/s, the speed-up
and whether the greedy replies are identical.

    OMP_NUM_THREADS=1 .venv/bin/python bench/serve_throughput.py [--n 16] [--max-tokens 24] [--preset quick]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

QUESTIONS = [
    "What is the capital of France?", "How many legs does a spider have?", "What colour is the sky?",
    "Who wrote Hamlet?", "What is 2 plus 2?", "What is the boiling point of water?",
    "Which planet is the largest?", "What language is spoken in Brazil?", "How many days are in a week?",
    "What is the chemical symbol for gold?", "What is the tallest animal?", "What do bees make?",
    "Which ocean is the largest?", "What is frozen water called?", "How many continents are there?",
    "What gas do plants absorb?",
]


def start(preset: str, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "workbench.cli", "serve", "--port", "0", "--preset", preset],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:
        m = re.search(r"at (http://\S+/v1)", line)
        if m:
            return proc, m.group(1)
        print(line, end="", file=sys.stderr)
    raise SystemExit("workbench serve did not start")


def ask(url: str, question: str, max_tokens: int) -> str:
    r = httpx.post(f"{url}/chat/completions", timeout=600,
                   json={"model": "base", "max_tokens": max_tokens, "temperature": 0,
                         "messages": [{"role": "user", "content": question}]})
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--preset", default="quick")
    args = ap.parse_args()
    questions = (QUESTIONS * (args.n // len(QUESTIONS) + 1))[:args.n]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    t0 = time.perf_counter()
    proc, url = start(args.preset, env)
    print(f"server up in {time.perf_counter() - t0:.1f} s at {url}")
    try:
        ask(url, "Warm up.", 4)
        t0 = time.perf_counter()
        sequential = [ask(url, q, args.max_tokens) for q in questions]
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.n) as pool:
            together = list(pool.map(lambda q: ask(url, q, args.max_tokens), questions))
        t_con = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    same = sum(a == b for a, b in zip(sequential, together))
    print(f"{args.n} requests, max_tokens {args.max_tokens}, load average {os.getloadavg()[0]:.1f}")
    print(f"sequential: {t_seq:.1f} s ({args.n / t_seq:.2f} requests/s)")
    print(f"concurrent: {t_con:.1f} s ({args.n / t_con:.2f} requests/s)")
    print(f"speed-up: {t_seq / t_con:.2f}x; identical greedy replies: {same}/{args.n}")
    for q, a, b in zip(questions, sequential, together):
        if a != b:
            print(f"  differs: {q!r}: {a!r} vs {b!r}")


if __name__ == "__main__":
    main()
