"""The synthesized questions themselves, measured against a corpus's gold questions.

Synthesizes training questions from a corpus exactly as fine-tuning would (``workbench synth``: its chunks,
the preset's ``synth`` settings, never its question file) and reports, per corpus:

- form: the share of synthesized questions that open like a question (a wh-word, an inverted auxiliary,
  a preposition before a wh-phrase) and end with "?";
- answer_absent: the share whose answer does not appear in the question;
- length: mean words per synthesized question against the gold questions' mean (all splits);
- coverage: the share of the gold answers (answerable questions, all splits) the synthesized set asks for
  -- exactly (SQuAD-normalised equality with a synthesized answer) and loosely (one contains the other).

    .venv/bin/python bench/synthesis.py ../shared/corpora/squad-en-dev ../shared/corpora/squad-pt-dev corpora/demo
    .venv/bin/python bench/synthesis.py corpora/demo --set synth.wordings=1 --json /tmp/synthesis.json

Light: the rule path loads no model (``--set synth.backend=openai --set synth.base_url=...`` measures a
served model's questions instead).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from statistics import mean

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workbench.core.config import load_preset, override  # noqa: E402
from workbench.core.language import base_language, detect_language  # noqa: E402
from workbench.core.text import normalize_answer  # noqa: E402
from workbench.corpus.qa import load_qa  # noqa: E402
from workbench.training.synth import answer_in_question, looks_like_question  # noqa: E402
from workbench.training.trainset import synthesize_corpus  # noqa: E402


def coverage(gold_answers: list[list[str]], synthesized: set[str]) -> tuple[float, float]:
    """(exact, loose) shares of gold facts whose answers the synthesized answers hold: equal after SQuAD
    normalisation, or one containing the other."""
    if not gold_answers:
        return 0.0, 0.0
    exact = loose = 0
    for answers in gold_answers:
        norm = {normalize_answer(a) for a in answers if normalize_answer(a)}
        exact += bool(norm & synthesized)
        loose += any(g in s or s in g for g in norm for s in synthesized if s)
    return exact / len(gold_answers), loose / len(gold_answers)


def measure(corpus: Path, settings: dict[str, dict[str, object]], preset: str) -> dict[str, object]:
    """The figures for one corpus (see the module docstring)."""
    cfg = override(load_preset(preset), **settings)
    t = time.perf_counter()
    made = synthesize_corpus(corpus, cfg)
    seconds = time.perf_counter() - t
    items = made.items
    gold = [q for q in load_qa(corpus / "qa.jsonl") if q.answerable and q.answers]
    lang = base_language(detect_language(" ".join(s.sentence for s in items[:50]))[0] or "en")
    exact, loose = coverage([q.answers for q in gold], {normalize_answer(s.answer) for s in items})
    return {
        "corpus": str(corpus), "pipeline": made.pipeline, "backend": made.backend, "seconds": round(seconds, 1),
        "n_facts": made.n_facts, "n_questions": len(items), "n_dropped": made.n_dropped,
        "form": round(mean(looks_like_question(s.question, lang) for s in items), 3),
        "answer_absent": round(mean(not answer_in_question(s.question, s.answer) for s in items), 3),
        "words_synth": round(mean(len(s.question.split()) for s in items), 1),
        "words_gold": round(mean(len(q.question.split()) for q in gold), 1) if gold else None,
        "n_gold_facts": len(gold), "coverage_exact": round(exact, 3), "coverage_loose": round(loose, 3),
    }


def _settings(pairs: list[str]) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        group, _, name = key.partition(".")
        if not name:
            raise SystemExit(f"--set {pair}: use GROUP.KEY=VALUE, e.g. synth.wordings=1")
        out.setdefault(group, {})[name] = json.loads(value) if value[:1].isdigit() or value in (
            "true", "false", "null") else value
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("corpora", nargs="+", type=Path, help="corpus folders with a qa.jsonl at the root")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="settings", action="append", default=[], help="GROUP.KEY=VALUE over the preset")
    ap.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = ap.parse_args()
    rows = [measure(c, _settings(args.settings), args.preset) for c in args.corpora]
    cols = ["corpus", "n_facts", "n_questions", "form", "answer_absent", "words_synth", "words_gold",
            "coverage_exact", "coverage_loose", "seconds"]
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(Path(str(r[c])).name if c == "corpus" else str(r[c]) for c in cols))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
