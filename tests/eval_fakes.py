"""Fakes for the evaluation tests: systems that answer from a table, no model needed."""
from __future__ import annotations

from dataclasses import dataclass, field

from workbench.core.records import Chunk, Hit


@dataclass
class FakeAnswer:
    """Shaped like workbench.answering.answer.Answer."""

    question: str
    text: str
    hits: list = field(default_factory=list)
    citations: list = field(default_factory=list)
    latency_s: float = 0.1
    n_new_tokens: int = 4


def passage(doc: str, text: str, rank: int = 1) -> Hit:
    return Hit(Chunk(id=f"{doc}#{rank}", text=text, doc=doc, span=(0, len(text))), score=1.0 / rank, rank=rank)


def table_system(name: str, answers: dict[str, str], retrieval: bool = False, hits: dict | None = None,
                 latency: float = 0.1):
    """A SystemSpec answering question text -> answers[question] (default "I don't know")."""
    from workbench.evaluation.systems import SystemSpec

    def build(ctx):
        def answer(items):
            return [FakeAnswer(q.question, answers.get(q.question, "I don't know"),
                               (hits or {}).get(q.question, []), latency_s=latency) for q in items]
        return answer

    return SystemSpec(name, f"fake {name}", retrieval=retrieval, build=build)
