"""The Streamlit app through AppTest: empty project, results dashboard, builds, chat with tiny models."""
from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from pathlib import Path

import pytest
from app_project import QUESTIONS, write_corpus, write_run

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "streamlit_app.py")


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.setenv("WORKBENCH_HOME", str(root))
    monkeypatch.delenv("WORKBENCH_BASE_MODEL", raising=False)
    return root


def app_test(page: str | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=120)
    if page:
        at.session_state["page"] = page
    return at


def texts(at) -> str:
    """All text the page shows (markdown, captions, infos, errors, code, expander labels)."""
    parts = []
    for kind in ("markdown", "caption", "info", "error", "warning", "success", "code", "subheader", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    parts += [str(e.label) for e in at.expander]
    return "\n".join(parts)


# --- artifacts -----------------------------------------------------------------------------------

def test_only_project_artifacts_can_be_resolved(project, tmp_path):
    from workbench.app import artifacts
    from workbench.core.errors import WorkbenchError

    write_run(project)
    (project / "indices" / "good").mkdir(parents=True)
    (project / "indices" / "good" / "manifest.json").write_text(json.dumps({"kind": "index", "corpus": "/c/demo",
                                                                            "embedder": "m", "n_chunks": 7}))
    (project / "indices" / ".good.tmp-1234").mkdir()  # an unfinished build is never offered
    (project / "indices" / ".good.tmp-1234" / "manifest.json").write_text("{}")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"kind": "index"}))
    (project / "indices" / "link").symlink_to(outside)  # a symlink out of the project is not offered

    assert [a.name for a in artifacts.list_indices()] == ["good"]
    assert "7 chunks" in artifacts.list_indices()[0].describe()
    assert artifacts.resolve("run", "demo-20250101-120000").path == (project / "runs" / "demo-20250101-120000")
    for bad in ("../elsewhere", "link", str(outside), ".good.tmp-1234", "missing"):
        with pytest.raises(WorkbenchError):
            artifacts.resolve("index", bad)


def test_text_is_escaped_and_overlap_highlighted():
    from workbench.app.text import escape_markdown, highlight_overlap

    raw = "<script>alert(1)</script> [link](http://x) ![img](http://y) $x$ :red[hi]"
    esc = escape_markdown(raw)
    assert "<" not in esc and ">" not in esc
    assert "](" not in esc and ":red[" not in esc and "$x$" not in esc
    out = highlight_overlap("The Tern-3 buoy weighs 42 kg. <b>bold</b>", "It weighs 42 kg")
    assert ":orange-background[weighs 42 kg]" in out
    assert "<b>" not in out and "&lt;b&gt;" in out
    assert "buoy" in out and ":orange-background[buoy" not in out


# --- empty project ---------------------------------------------------------------------------------

def test_empty_project_shows_build_guidance(project):
    write_corpus(project)
    at = app_test()
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "Nothing is built yet" in shown
    assert "workbench run corpora/demo" in shown
    labels = {b.label for b in at.button}
    assert {"Build index", "Fine-tune", "Full run"} <= labels
    assert [o for o in at.selectbox(key="guide_corpus").options] == ["tiny"]
    # with nothing built only the base model can answer
    assert at.multiselect(key="chat_systems").options == ["base"]


def test_empty_results_page_explains_how_to_get_a_run(project):
    at = app_test("Results")
    at.run()
    assert not at.exception
    assert "No evaluation run yet" in texts(at)


# --- results ---------------------------------------------------------------------------------------

def test_results_page_renders_a_run(project):
    write_run(project)
    at = app_test("Results")
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "rag** wins on unseen facts" in shown  # the report's verdict
    assert "| system |" not in shown  # ...and only the verdict, not the report's tables
    table = at.dataframe[0].value
    assert list(table["system"]) == ["base", "rag", "ft", "ft_rag"]
    rag = table[table["system"] == "rag"].iloc[0]
    assert rag["F1 [95% CI]"] == "0.58 [0.39–0.79]"  # (0.67 + 0.67 + 0 + 1) / 4, as the report writes it
    assert len(at.image) == 2  # both plots
    assert len(at.expander) >= len(QUESTIONS)  # one expandable row per question (+ retrieval/cost)
    assert "5 of 5 questions" in shown
    # document and question text is escaped, never rendered as HTML
    assert "<script>" not in shown and "&lt;script&gt;" in shown
    assert not at.get("html")


@pytest.mark.parametrize("how, expect", [
    ("Systems disagree", {"q1", "q2", "q3", "q4", "q5"}),
    ("Unanswerable", {"q4"}),
    ("One right, other wrong", {"q2", "q4", "q5"}),  # rag right, ft wrong (defaults)
])
def test_results_filters(project, how, expect):
    write_run(project)
    at = app_test("Results")
    at.run()
    at.radio(key="results_filter").set_value(how).run()
    assert not at.exception
    shown = {e.label.split(" ")[1].replace("\\", "") for e in at.expander if "·" in e.label}
    assert shown == expect


def test_results_filter_reverse_pair_and_kind(project):
    from workbench.app import results

    run = write_run(project)
    qs = results.questions([json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()])
    ft_not_rag = results.filter_questions(qs, results.A_NOT_B, a="ft", b="rag")
    assert [q.id for q in ft_not_rag] == ["q3"]
    unseen = results.filter_questions(qs, results.ALL, kinds=["unseen"])
    assert [q.id for q in unseen] == ["q2", "q5"]
    assert results.filter_questions(qs, results.DISAGREE, systems=["rag", "ft_rag"]) == [
        q for q in qs if q.id == "q3"]

    at = app_test("Results")
    at.run()
    at.radio(key="results_filter").set_value("One right, other wrong").run()
    at.selectbox(key="results_a").set_value("ft").run()
    at.selectbox(key="results_b").set_value("rag").run()
    at.multiselect(key="results_kinds").set_value(["paraphrase"]).run()
    labels = [e.label for e in at.expander if "·" in e.label]
    assert len(labels) == 1 and "q3" in labels[0]


def test_results_csv(project):
    from workbench.app import results

    run = write_run(project)
    qs = results.questions([json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()])
    text = results.to_csv(results.filter_questions(qs, results.UNANSWERABLE), ["rag", "ft"])
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 1 and rows[0]["id"] == "q4"
    assert rows[0]["rag_prediction"] == "I don't know" and rows[0]["rag_right"] == "True"
    assert rows[0]["ft_right"] == "False"
    assert results._csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"


# --- builds ---------------------------------------------------------------------------------------

FAKE_CLI = textwrap.dedent('''
    """Stands in for `workbench`: prints progress, sleeps, writes indices/NAME/manifest.json."""
    import json, os, sys, time
    args = sys.argv[1:]
    name = args[args.index("--name") + 1]
    for i in range(0, 101, 25):
        sys.stdout.write(f"\\rencoding: {i}%|####| {i}/100"); sys.stdout.flush(); time.sleep(0.15)
    out = os.path.join(os.environ["WORKBENCH_HOME"], "indices", name)
    os.makedirs(out, exist_ok=True)
    json.dump({"kind": "index", "corpus": args[1], "embedder": "fake", "n_chunks": 3,
               "created": "2025-01-01T00:00:00"}, open(os.path.join(out, "manifest.json"), "w"))
    print("\\nindex written")
''')


@pytest.fixture
def fake_cli(tmp_path, monkeypatch):
    from workbench.app import build

    script = tmp_path / "fake_cli.py"
    script.write_text(FAKE_CLI)
    monkeypatch.setattr(build, "CLI", [sys.executable, str(script)])
    return script


def test_build_lock_refuses_a_second_build_of_the_same_artifact(project, fake_cli):
    from workbench.app import build
    from workbench.core.errors import WorkbenchError

    write_corpus(project)
    mgr = build.JobManager(project)
    title, args, locks = build.index_job("tiny")
    assert locks == ["index-tiny"] and args[:1] == ["index"]
    job = mgr.start(title, args, locks)
    with pytest.raises(WorkbenchError, match="already being built"):
        mgr.start(title, args, locks)
    # another manager (another server process) sees the same lock
    with pytest.raises(WorkbenchError, match="already being built"):
        build.JobManager(project).start(title, args, locks)
    done = mgr.wait(job, timeout=30)
    assert done.status == "succeeded"
    assert build.held_locks() == {}
    tail = build.log_tail(done.log)
    assert build.progress_of(tail)[0] == 1.0 and "index written" in tail
    again = mgr.start(title, args, locks)  # free again once the first ended
    assert mgr.wait(again, timeout=30).rc == 0


def test_lock_of_a_killed_process_is_taken_over(project):
    import subprocess
    import sys

    from workbench.app import build

    # a process that takes the lock and is killed without releasing it
    code = ("import os, signal; from workbench.core.locks import acquire_locks; acquire_locks(['index-x'], 'old'); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], env={**os.environ, "WORKBENCH_HOME": str(project)})
    assert json.loads((project / ".workbench" / "locks" / "index-x.lock").read_text())["job"] == "old"
    taken = build.acquire_locks(["index-x"], "new", pid=None)
    assert json.loads(taken[0].path.read_text())["job"] == "new"
    build.release_locks(taken)


def test_run_locks_cover_index_adapters_and_run(project):
    from workbench.app import build

    write_corpus(project)
    title, args, locks = build.run_job("tiny", "quick")
    assert args == ["run", str((project / "corpora" / "tiny").resolve()), "--preset", "quick"]
    assert locks[0] == "index-tiny" and "adapter-tiny-sft" in locks and locks[-1] == "run-tiny"


def test_build_from_the_app_shows_progress_and_the_artifact_appears(project, fake_cli):
    from workbench.app import build

    write_corpus(project)
    at = app_test("Build")
    at.run()
    assert "none yet" in texts(at)
    at.button(key="build_index").click().run()
    assert not at.exception
    assert any("Started: index tiny" in s.value for s in at.success)
    job = build.manager().jobs()[0]
    build.manager().wait(job, timeout=30)
    at.run()
    shown = texts(at)
    assert "succeeded" in shown and "index written" in shown
    assert "`tiny`" in shown  # listed under built artifacts without a restart
    at.session_state["page"] = "Chat"
    at.run()
    assert at.selectbox(key="chat_index").options == ["tiny"]


# --- chat with tiny models --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_project(tmp_path_factory, app_lm_dir, tiny_embedder_dir) -> Path:
    from app_project import build_tiny_project

    return build_tiny_project(tmp_path_factory.mktemp("app-project"), app_lm_dir, tiny_embedder_dir)


def chat_session(project: Path, lm: Path, monkeypatch, max_tokens: int = 12):
    monkeypatch.setenv("WORKBENCH_HOME", str(project))
    monkeypatch.setenv("WORKBENCH_BASE_MODEL", str(lm))
    at = app_test("Chat")
    at.run()
    assert not at.exception, at.exception
    at.number_input(key="chat_max_tokens").set_value(max_tokens).run()
    return at


@pytest.fixture
def chat_app(tiny_project, app_lm_dir, monkeypatch):
    return chat_session(tiny_project, app_lm_dir, monkeypatch)


def ask(at, question: str):
    at.chat_input(key="chat_question").set_value(question).run()
    assert not at.exception, at.exception
    return at


def columns_text(at) -> list[str]:
    """Text of each chat column (the top-level columns of the main area)."""
    cols = [c for c in at.main.columns]
    out = []
    for c in cols:
        parts = [str(m.value) for m in c.subheader] + [str(m.value) for m in c.markdown]
        parts += [str(m.value) for m in c.caption]
        parts += [str(m.value) for m in c.error] + [str(e.label) for e in c.expander]
        out.append("\n".join(parts))
    return out


def test_chat_offers_what_is_built(chat_app, app_lm_dir):
    at = chat_app
    assert at.selectbox(key="chat_index").options == ["tiny"]
    assert at.selectbox(key="chat_adapter_ft").options == ["tiny-sft"]
    assert at.selectbox(key="chat_base_model").value == str(app_lm_dir)
    assert at.multiselect(key="chat_systems").options == ["base", "rag", "ft", "ft_rag"]
    assert at.multiselect(key="chat_systems").value == ["base", "rag", "ft", "ft_rag"]
    assert "Nothing is built yet" not in texts(at)


def test_chat_defaults_come_from_the_preset_and_are_shown(tiny_project, app_lm_dir, monkeypatch, tmp_path):
    """The chat answers with evaluation's settings: $WORKBENCH_PRESET (else quick), named on the page."""
    monkeypatch.setenv("WORKBENCH_HOME", str(tiny_project))
    monkeypatch.setenv("WORKBENCH_BASE_MODEL", str(app_lm_dir))
    at = app_test("Chat")
    at.run()
    assert at.number_input(key="chat_max_tokens").value == 24 and at.slider(key="chat_k").value == 2  # quick's
    assert "Preset quick" in texts(at) and "24 new tokens" in texts(at)
    preset = tmp_path / "short.yaml"
    preset.write_text("generate:\n  max_new_tokens: 10\n  copy_spans: false\nretrieve:\n  k: 3\n  mode: dense\n",
                      encoding="utf-8")
    monkeypatch.setenv("WORKBENCH_PRESET", str(preset))
    at = app_test("Chat")
    at.run()
    assert not at.exception
    assert (at.number_input(key="chat_max_tokens").value, at.slider(key="chat_k").value) == (10, 3)
    assert at.selectbox(key="chat_mode").value == "dense" and at.checkbox(key="chat_copy").value is False
    assert "10 new tokens" in texts(at) and "short\\.yaml" in texts(at)  # the preset file, escaped
    monkeypatch.setenv("WORKBENCH_PRESET", "no-such-preset")
    at = app_test("Chat")
    at.run()
    assert "WORKBENCH_PRESET" in texts(at) and not at.exception


def test_chat_answers_with_every_selected_system_and_rag_shows_sources(chat_app):
    at = ask(chat_app, "How much does the Tern-3 buoy weigh?")
    cols = columns_text(at)
    assert len(cols) == 4
    for name, col in zip(["base", "rag", "ft", "ft_rag"], cols):
        assert col.startswith(f"{name}\n")  # the column's header
        assert "How much does the Tern" in col
        assert "tokens/s" in col or " 0 tokens" in col, col  # metrics line under every answer
        assert "latency" in col
        assert "Error" not in col
    history = at.session_state["chat_history"]
    assert set(history) == {"base", "rag", "ft:tiny-sft", "ft_rag:tiny-sft"}
    for key, turns in history.items():
        assert len(turns) == 1 and turns[0]["error"] is None
        assert turns[0]["n_new_tokens"] > 0 and turns[0]["latency_s"] > 0
    # retrieval systems show their passages (score, document); closed-book ones do not
    for key in ("rag", "ft_rag:tiny-sft"):
        hits = history[key][0]["hits"]
        assert 1 <= len(hits) <= at.slider(key="chat_k").value
        assert all(h["doc"] in {"buoy.md", "people.txt", "seals.md"} for h in hits)
    assert history["base"][0]["hits"] == [] and history["ft:tiny-sft"][0]["hits"] == []
    assert "Sources (" in cols[1] and "Sources (" in cols[3]
    assert "Sources (" not in cols[0] and "Sources (" not in cols[2]
    # the adapter changes the answer (the LoRA weights are random and large)
    assert history["base"][0]["answer"] != history["ft:tiny-sft"][0]["answer"] or \
        history["base"][0]["n_new_tokens"] != history["ft:tiny-sft"][0]["n_new_tokens"]


def test_copy_answers_from_passages_setting_reaches_generation(chat_app, monkeypatch):
    """RAG columns generate under the copy constraint (the passages' sentences closest to the question, in
    passage order, and the abstention) while
    "Copy answers from passages" is on, the default, and freely when it is off; closed-book ones never.
    (Whether constrained replies are spans is tested on the generator: this app model cannot end a reply.)"""
    from workbench.answering.generate import Generator
    from workbench.core import text as T
    from workbench.core.config import PromptConfig
    from workbench.corpus.chunking import split_sentences

    seen = []
    real = Generator.stream

    def stream(self, conversation, stop=(), sources=None, stats=None):
        seen.append(sources)
        return real(self, conversation, stop=stop, sources=sources, stats=stats)

    monkeypatch.setattr(Generator, "stream", stream)
    assert chat_app.checkbox(key="chat_copy").value
    at = ask(chat_app, "How much does the Tern-3 buoy weigh?")
    history = at.session_state["chat_history"]
    assert seen[0] is None and seen[2] is None  # base, ft
    for sources, key in ((seen[1], "rag"), (seen[3], "ft_rag:tiny-sft")):
        hits = history[key][0]["hits"]
        sentences = [s for h in hits for s in split_sentences(h["text"])]
        assert [s.text for s in sources[:-1]] == [s for s in sentences if s in {x.text for x in sources}]
        assert 1 <= len(sources) - 1 <= PromptConfig().copy_sentences and sources[-1].text == T.ABSTAIN
    seen.clear()
    at.checkbox(key="chat_copy").uncheck().run()
    ask(at, "How much does the Tern-3 buoy weigh?")
    assert seen == [None] * 4


def test_chat_columns_keep_their_history(chat_app):
    at = ask(chat_app, "Who leads Kestrelmark?")
    at = ask(at, "Where is the head office?")
    history = at.session_state["chat_history"]
    for turns in history.values():
        assert [t["question"] for t in turns] == ["Who leads Kestrelmark?", "Where is the head office?"]
    cols = columns_text(at)
    assert all(c.count("**You:**") == 2 for c in cols)
    at.button(key="chat_clear").click().run()
    assert at.session_state["chat_history"] == {}


def test_chat_never_renders_document_html(chat_app):
    at = ask(chat_app, "How do I grease the seals with silicone?")
    at.slider(key="chat_k").set_value(3).run()
    hits = [h for t in at.session_state["chat_history"]["rag"] for h in t["hits"]]
    seal = [h for h in hits if h["doc"] == "seals.md"]
    assert seal and "<script>" in seal[0]["text"]  # the document really holds HTML...
    shown = texts(at)
    assert "<script>" not in shown and "<b>" not in shown  # ...which is shown escaped, as text
    assert "&lt;script&gt;" in shown
    assert not at.get("html")


def test_generation_is_serialised_per_model_and_concurrent_sessions_get_their_own_answers(
        tiny_project, app_lm_dir, monkeypatch):
    """Eight sessions ask four questions with two systems at once through the app's engine (the cached
    models and retriever every session shares); each gets exactly the answer it gets alone, and no two
    generations ever run at once on one model. (AppTest cannot run concurrently: it swaps a process-wide
    runtime per run; the browser test drives truly separate sessions of a real server.)"""
    import threading

    from workbench.answering import generate
    from workbench.app import engine

    monkeypatch.setenv("WORKBENCH_HOME", str(tiny_project))
    from workbench.core.config import GenerateConfig, ModelConfig, RetrieveConfig

    settings = engine.ChatSettings(ModelConfig(base_model=str(app_lm_dir), device="cpu"),
                                   GenerateConfig(max_new_tokens=12), RetrieveConfig(k=2))
    questions = ["How much does the Tern-3 weigh?", "Who leads Kestrelmark Instruments?",
                 "When is the anode replaced?", "Which class for short flights?"]
    systems = [("base", None, False), ("rag", None, True), ("ft", "tiny-sft", False), ("ft_rag", "tiny-sft", True)]

    def session(question: str, system: tuple) -> engine.Turn:
        name, adapter, retrieval = system
        loaded = engine.get_model(settings, adapter)
        retriever = engine.get_retriever("tiny") if retrieval else None
        return engine.answer_once(engine.Turn(name, question), loaded, retriever, settings)

    alone = {(q, s[0]): session(q, s) for q in questions for s in systems}
    for s in systems:  # the answers tell the questions apart, so a mix-up could not go unnoticed
        assert len({alone[(q, s[0])].answer for q in questions}) == len(questions), [
            alone[(q, s[0])].answer for q in questions]

    active: dict[int, int] = {}
    peak: dict[int, int] = {}
    guard = threading.Lock()
    original = generate.Generator.stream

    def counting_stream(self, conversation, *args, **kwargs):
        key = id(self.model)
        with guard:
            active[key] = active.get(key, 0) + 1
            peak[key] = max(peak.get(key, 0), active[key])
        try:
            yield from original(self, conversation, *args, **kwargs)
        finally:
            with guard:
                active[key] -= 1

    monkeypatch.setattr(generate.Generator, "stream", counting_stream)
    jobs = [(q, s) for q in questions for s in systems] * 2
    results: list[tuple[str, str, engine.Turn]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def worker(q: str, s: tuple) -> None:
        try:
            start.wait()
            results.append((q, s[0], session(q, s)))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == len(jobs)
    assert len(peak) == 2 and set(peak.values()) == {1}, peak  # two models, one generation at a time on each
    for q, name, turn in results:
        solo = alone[(q, name)]
        assert turn.question == q and turn.error is None
        assert (turn.answer, turn.n_new_tokens) == (solo.answer, solo.n_new_tokens)
        assert [h["id"] for h in turn.hits] == [h["id"] for h in solo.hits]


def _calibrator(intercept: float) -> dict:
    """A calibrator giving every answer the same confidence (sigmoid of ``intercept``), threshold 0.5."""
    from workbench.answering.confidence import FEATURES

    n = len(FEATURES)
    return {"features": list(FEATURES), "mean": [0.0] * n, "scale": [1.0] * n, "weights": [0.0] * n,
            "intercept": intercept, "threshold": 0.5, "target": "answerable_declined<=0.1", "fit_on": {},
            "applied": True, "reason": "calibrated: test"}


def test_chat_shows_confidence_and_declines_with_the_newest_runs_calibrator(tiny_project, app_lm_dir, monkeypatch):
    import shutil

    from workbench.core.text import ABSTAIN
    from workbench.evaluation.abstention import target_fingerprints

    run = tiny_project / "runs" / "zz-calibrated"
    run.mkdir(parents=True)
    monkeypatch.setenv("WORKBENCH_HOME", str(tiny_project))
    (index,) = [p.name for p in (tiny_project / "indices").iterdir() if (p / "manifest.json").exists()]
    summary = {"created": "2999-01-01T00:00:00+00:00", "config": {}, "systems": {"base": {}, "rag": {}},
               "abstention": {**target_fingerprints(index),  # matched by the index's content, not its name
                              "systems": {"base": {"calibrator": _calibrator(5.0)},
                                          "rag": {"calibrator": _calibrator(-5.0), "retrieval": True}}}}
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    try:
        at = chat_session(tiny_project, app_lm_dir, monkeypatch)
        assert at.checkbox(key="chat_decline").value
        at.multiselect(key="chat_systems").set_value(["base", "rag"]).run()
        ask(at, "How much does the Tern-3 buoy weigh?")
        history = at.session_state["chat_history"]
        base, rag = history["base"][0], history["rag"][0]
        assert base["confidence"] == pytest.approx(1 / (1 + math.exp(-5))) and not base["declined"]
        assert rag["answer"] == ABSTAIN and rag["confidence"] < 0.5
        if rag["answer_before_decline"]:  # the model's own "I don't know" is not a calibrated decline
            assert rag["declined"].split(" (")[0] in {"low retrieval score", "low answer confidence"}
            assert "calibrated by run zz-calibrated" in rag["declined"]
            assert any("Declined:" in t for t in columns_text(at))
        assert any("confidence 0.99" in t for t in columns_text(at))
        at.checkbox(key="chat_decline").set_value(False).run()
        ask(at, "How much does the Tern-3 buoy weigh?")
        assert not at.session_state["chat_history"]["rag"][1]["declined"]
    finally:
        shutil.rmtree(run)


def test_results_page_shows_knowing_when_not_to_answer(project):
    run = write_run(project)
    s = json.loads((run / "summary.json").read_text())
    block = {"no_ans_acc": 0.75, "no_ans_ci95": [0.3, 0.95], "answerable_declined": 0.1, "wrong_answer_rate": 0.2,
             "aurc": 0.2, "aurc_ci95": [0.1, 0.3], "aurc_random": 0.4, "aurc_minus_random_ci95": [-0.3, -0.1],
             "selective": {"0.5": {"f1": 0.8, "wrong_rate": 0.1, "n": 2}, "0.8": None}, "brier": 0.2, "ece": 0.1,
             "operating_point": {"applied": False, "reason": "not calibrated: 4 of 48 calibration answers right"},
             "curve": {"coverage": [0.5, 0.7], "risk": [0.1, 0.2]}, "n_unanswerable": 1}
    s["abstention"] = {"mode": "calibrated", "target": "answerable_declined", "max_answerable_declined": 0.1,
                       "calibration": {"source": "train split"},
                       "systems": {"rag": block, "ft": {**block, "no_ans_acc": 0.1, "answerable_declined": 0.3}}}
    (run / "summary.json").write_text(json.dumps(s), encoding="utf-8")
    at = app_test("Results")
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "Knowing when not to answer" in shown and "**rag** tells them apart best" in shown
    assert "**ft**" not in shown.split("Knowing when not to answer")[1].split("| system")[0]
    assert "| rag | 75% [30%–95%] | 10% | 20% | 0.20 [0.10–0.30] (0.40) |" in shown
    assert "not calibrated: 4 of 48 calibration answers right" in shown
