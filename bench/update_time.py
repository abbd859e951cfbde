"""How long `make demo-update` takes, stage by stage, and what it measured (a benchmark, not a test).

Runs ``workbench update corpora/demo corpora/demo-update`` (the `make demo-update` command; run `make demo`
first so the base index and adapter are reused) in a child process, then prints its wall time, the stage
timings and the headline figures from ``runs/NAME/summary.json``. The target is 15 minutes on a 2-core CPU.

    .venv/bin/python bench/update_time.py [--name demo-update] [--invariant-limit 60] [--replay 0.3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 15 * 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="demo-update")
    ap.add_argument("--invariant-limit", type=int, default=60)
    ap.add_argument("--replay", type=float, default=0.3)
    ap.add_argument("--corpus", default="corpora/demo")
    ap.add_argument("--update", default="corpora/demo-update")
    args = ap.parse_args()
    cmd = [str(Path(sys.executable).parent / "workbench"), "update", args.corpus, args.update, "--replay",
           str(args.replay), "--invariant-limit", str(args.invariant_limit), "--name", args.name]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if done.returncode:
        print(f"workbench update failed with exit code {done.returncode}", file=sys.stderr)
        return done.returncode
    s = json.loads((ROOT / "runs" / args.name / "summary.json").read_text(encoding="utf-8"))
    u = s["update"]
    print(f"\nwall time {wall:.0f} s ({'within' if wall <= TARGET_S else 'over'} the {TARGET_S // 60} min target) "
          f"on {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    for stage, secs in u.get("stages_s", {}).items():
        print(f"  {stage:<45} {secs:8.1f} s")
    st = u["strategies"]
    for name, c in st.items():
        extra = (f"{c['chunks_encoded']} of {c['chunks_total']} chunks re-encoded" if name == "reindex"
                 else f"{c['tokens_trained']:,} tokens trained")
        print(f"  strategy {name:<10} {c['seconds']:8.1f} s, {extra}, peak RSS {c.get('peak_rss_mb')} MB")
    if st.get("reindex", {}).get("seconds") and st.get("retrain", {}).get("seconds"):
        print(f"  retrain / reindex wall time: {st['retrain']['seconds'] / st['reindex']['seconds']:.0f}x")
    print(f"\n  {'system':<18} {'inv F1':>7} {'forget':>7} {'upd F1':>7} {'new val':>8} {'stale':>6} {'new F1':>7} "
          f"{'FUAR':>6}")
    for name, b in u["systems"].items():
        fuar = "n.d." if b["fuar"] is None else f"{b['fuar']:.2f}"
        print(f"  {name:<18} {b['invariant']['f1']:7.3f} {b['forgetting']:7.3f} {b['updated']['f1']:7.3f} "
              f"{b['updated']['current']:8.0%} {b['updated']['stale']:6.0%} {b['new']['f1']:7.3f} {fuar:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
