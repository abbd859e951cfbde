"""Run plots (matplotlib, Agg backend): metrics with intervals, per kind, quality vs cost, retrieval recall@k,
risk against coverage, and a reliability diagram per system."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from workbench.core.figures import pyplot, save_figure
from workbench.evaluation.report import setup_cost_s

METRICS = (("f1", "F1"), ("em", "EM"), ("contains", "contains"), ("rouge_l", "ROUGE-L"),
           ("abstain_unanswerable", "declines\nunanswerable"))


def _err(values: list[float | None], cis: list[list[float] | None]) -> list[list[float]]:
    """Asymmetric error bars (2, n) from intervals; zero where there is none."""
    lo = [max(0.0, v - c[0]) if (v is not None and c) else 0.0 for v, c in zip(values, cis)]
    hi = [max(0.0, c[1] - v) if (v is not None and c) else 0.0 for v, c in zip(values, cis)]
    return [lo, hi]


def _grouped_bars(ax: Any, groups: list[str], series: dict[str, tuple[list, list]], ylabel: str) -> None:
    """Bars for each series (system) within each group, with interval whiskers."""
    n = max(1, len(series))
    width = 0.8 / n
    for j, (name, (vals, cis)) in enumerate(series.items()):
        xs = [i + (j - (n - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [v or 0.0 for v in vals], width, yerr=_err(vals, cis), capsize=3, label=name)
    ax.set_xticks(range(len(groups)), groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)


def plot_metrics(summary: dict, path: Path) -> Path:
    plt = pyplot()
    systems = summary["systems"]
    fig, ax = plt.subplots(figsize=(8, 4))
    series = {n: ([s.get(k) for k, _ in METRICS], [s.get("ci95", {}).get(k) for k, _ in METRICS])
              for n, s in systems.items()}
    _grouped_bars(ax, [label for _, label in METRICS], series, "score (95% CI)")
    ax.set_title("Answer quality per system")
    return save_figure(fig, path)


def plot_by_kind(summary: dict, path: Path) -> Path:
    plt = pyplot()
    systems = summary["systems"]
    kinds = sorted({k for s in systems.values() for k in s.get("by_kind", {})})
    labels, series = [], {n: ([], []) for n in systems}
    for kind in kinds:
        cells = {n: s.get("by_kind", {}).get(kind, {}) for n, s in systems.items()}
        f1 = any(c.get("f1") is not None for c in cells.values())
        labels.append(f"{kind}\n({'F1' if f1 else 'declines'})")
        for n, c in cells.items():
            series[n][0].append(c.get("f1") if f1 else c.get("abstain"))
            series[n][1].append(c.get("f1_ci95") if f1 else None)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(kinds) + 2), 4))
    _grouped_bars(ax, labels, series, "F1 (answerable) / share declined (unanswerable)")
    ax.set_title("Per kind of question")
    return save_figure(fig, path)


def plot_quality_vs_cost(summary: dict, path: Path) -> Path:
    plt = pyplot()
    systems = summary["systems"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (label, cost) in zip(axes, (("set-up cost: index build + fine-tuning (s)",
                                         lambda n, s: setup_cost_s(summary, n)),
                                        ("answer latency p50 (s)", lambda n, s: s.get("latency_p50_s") or 0.0))):
        for n, s in systems.items():
            x, y = cost(n, s), s.get("f1") or 0.0
            ci = s.get("ci95", {}).get("f1")
            ax.errorbar([x], [y], yerr=_err([y], [ci]), fmt="o", capsize=3)
            ax.annotate(n, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
        ax.set_xlabel(label)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1 (95% CI)")
    axes[0].set_ylim(0, 1.05)
    fig.suptitle("Quality against cost")
    return save_figure(fig, path)


def plot_retrieval(summary: dict, path: Path) -> Path | None:
    r = summary.get("retrieval") or {}
    curves: dict[str, list[tuple[int, float]]] = {}
    for key, v in r.items():
        m = re.fullmatch(r"(\w+)@(\d+)", key)
        if m and isinstance(v, (int, float)):
            curves.setdefault(m.group(1), []).append((int(m.group(2)), float(v)))
    if not curves:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(curves.items()):
        pts.sort()
        ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xlabel("k (passages retrieved)")
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Retrieval recall@k ({r.get('mode', '')})")
    return save_figure(fig, path)


def plot_risk_coverage(summary: dict, path: Path) -> Path | None:
    """Every system's risk–coverage curve on one figure (answers taken most confident first)."""
    systems = (summary.get("abstention") or {}).get("systems") or {}
    if not systems:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in systems.items():
        curve = s.get("curve") or {}
        if curve.get("coverage"):
            ax.plot(curve["coverage"], curve["risk"], label=f"{name} (AURC {s.get('aurc') or 0:.2f})")
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("risk (share of answers wrong)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Risk against coverage (lower is better)")
    return save_figure(fig, path)


def plot_reliability(name: str, block: dict, path: Path) -> Path | None:
    """A system's reliability diagram on the eval questions: per confidence bin, the share of answers that
    are right against the mean confidence (on the diagonal: the confidence is a probability)."""
    bins = block.get("reliability") or []
    if not bins:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", label=name)
    for b in bins:
        ax.annotate(str(b["n"]), (b["confidence"], b["accuracy"]), textcoords="offset points", xytext=(4, -10),
                    fontsize=7)
    ax.set_xlabel("confidence (bin mean)")
    ax.set_ylabel("share of answers right")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{name}: Brier {block.get('brier') or 0:.3f}, ECE {block.get('ece') or 0:.3f}")
    return save_figure(fig, path)


def make_plots(summary: dict, out_dir: Path) -> list[Path]:
    """Write every plot the summary has data for into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_metrics(summary, out_dir / "metrics.png"), plot_by_kind(summary, out_dir / "by_kind.png"),
             plot_quality_vs_cost(summary, out_dir / "quality_vs_cost.png"),
             plot_retrieval(summary, out_dir / "retrieval_recall.png"),
             plot_risk_coverage(summary, out_dir / "risk_coverage.png")]
    for name, block in ((summary.get("abstention") or {}).get("systems") or {}).items():
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        paths.append(plot_reliability(name, block, out_dir / f"reliability_{safe}.png"))
    return [p for p in paths if p is not None]
