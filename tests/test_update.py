"""`workbench update`: the update contract (bad inputs), the three question sets, stale answers and FUAR on
constructed numbers, the report section on a constructed summary, and the whole flow on tiny models
(incremental re-index, continue / replay / retrain adapters, before/after scoring)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.core.artifacts import hash_tree
from workbench.core.config import CONFIG_DIR
from workbench.core.errors import WorkbenchError
from workbench.corpus.qa import QAItem
from workbench.update.folder import question_sets, read_update
from workbench.update.measures import answer_state, count_changes, fuar, stale_rate, system_update

runner = CliRunner()


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


UPDATE_QA = [
    {"id": "u1", "question": "How heavy is the Tern-3 buoy now?", "answers": ["48 kg"], "old_answers": ["42 kg"],
     "split": "train", "doc": "buoy.md", "fact_id": "f1", "kind": "updated"},
    {"id": "u2", "question": "What does a Tern-3 buoy weigh after the redesign?", "answers": ["48 kg"],
     "old_answers": ["42 kg"], "split": "train", "doc": "buoy.md", "fact_id": "f1", "kind": "updated"},
    {"id": "u3", "question": "Give the current mass of the Tern-3.", "answers": ["48 kg"], "old_answers": ["42 kg"],
     "split": "eval", "doc": "buoy.md", "fact_id": "f1", "kind": "updated"},
    {"id": "n1", "question": "How often does the Skua-G2 sensor sample?", "answers": ["every 15 minutes"],
     "split": "train", "doc": "sensors.md", "fact_id": "f9", "kind": "new"},
    {"id": "n2", "question": "What is the sampling interval of the Skua-G2?", "answers": ["every 15 minutes"],
     "split": "train", "doc": "sensors.md", "fact_id": "f9", "kind": "new"},
    {"id": "n3", "question": "Skua-G2 sampling: how frequent?", "answers": ["every 15 minutes"], "split": "eval",
     "doc": "sensors.md", "fact_id": "f9", "kind": "new"},
]


@pytest.fixture
def update_dir(tmp_path) -> Path:
    """Replaces buoy.md (42 kg -> 48 kg), adds sensors.md, removes page.html."""
    root = tmp_path / "update"
    root.mkdir()
    (root / "buoy.md").write_text(
        "# Tern-3 buoy\n\nThe Tern-3 buoy weighs 48 kg. It runs on a 9 Ah battery.\n\n"
        "## Maintenance\n\nReplace the anode every 18 months. Use silicone grease on the seals.\n", encoding="utf-8")
    (root / "sensors.md").write_text("# Skua-G2\n\nThe Skua-G2 sensor samples every 15 minutes and reports over "
                                     "LoRa.\n", encoding="utf-8")
    (root / "removed.txt").write_text("# gone\npage.html\n", encoding="utf-8")
    _jsonl(root / "qa.jsonl", UPDATE_QA)
    return root


# --- the contract ------------------------------------------------------------------------------------

def test_plan_and_question_sets(tiny_corpus, update_dir):
    from workbench.corpus.qa import load_qa

    plan = read_update(tiny_corpus, update_dir)
    assert (plan.replaced, plan.added, plan.removed) == (["buoy.md"], ["sensors.md"], ["page.html"])
    assert plan.kept == ["sub/people.txt"] and len(plan.questions) == 6
    sets = question_sets(plan, load_qa(tiny_corpus / "qa.jsonl"))
    by = sets.by_set()
    # e1 (42 kg, buoy.md) is left out: its document changed and no longer says 42 kg; e3 is unanswerable
    assert [q.id for q in by["invariant"]] == ["e2"] and sets.left_out == ["e1"]
    assert [q.id for q in by["updated"]] == ["u3"] and [q.id for q in by["new"]] == ["n3"]
    assert [q.id for q in sets.new_train] == ["u1", "u2", "n1", "n2"]
    assert sets.old_train == []  # t1, t2 taught 42 kg: no longer true


def test_a_replaced_document_that_still_holds_the_answer_keeps_its_questions(tiny_corpus, tmp_path):
    from workbench.corpus.qa import load_qa

    up = tmp_path / "up"
    up.mkdir()
    (up / "buoy.md").write_text("The Tern-3 buoy weighs 42 kg. It now runs on a 12 Ah battery.\n", encoding="utf-8")
    sets = question_sets(read_update(tiny_corpus, up), load_qa(tiny_corpus / "qa.jsonl"))
    assert [q.id for q in sets.by_set()["invariant"]] == ["e1", "e2"] and not sets.left_out
    assert [q.id for q in sets.old_train] == ["t1", "t2"]


def _bad(corpus: Path, update: Path, home: Path, expect: str) -> None:
    before = hash_tree(corpus), (hash_tree(update) if update.is_dir() else None)
    result = runner.invoke(app, ["update", str(corpus), str(update), "--name", "u"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], result.output
    assert not home.exists() or not any(home.rglob("*")), list(home.rglob("*"))  # nothing written
    assert (hash_tree(corpus), (hash_tree(update) if update.is_dir() else None)) == before


def test_bad_update_folders_fail_with_one_line_and_write_nothing(tiny_corpus, update_dir, tmp_path, home):
    _bad(tiny_corpus, tmp_path / "nope", home, "update folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _bad(tiny_corpus, empty, home, "is empty")
    same = tmp_path / "same"
    (same / "sub").mkdir(parents=True)
    shutil.copy(tiny_corpus / "sub" / "people.txt", same / "sub" / "people.txt")
    _bad(tiny_corpus, same, home, "nothing changed")

    rows = [dict(r) for r in UPDATE_QA]
    del rows[2]["old_answers"]
    _jsonl(update_dir / "qa.jsonl", rows)
    _bad(tiny_corpus, update_dir, home, "'u3' is kind 'updated' but has no old_answers")
    _jsonl(update_dir / "qa.jsonl", UPDATE_QA)

    (update_dir / "removed.txt").write_text("page.html\nmissing.md\n", encoding="utf-8")
    _bad(tiny_corpus, update_dir, home, "removed.txt:2 names 'missing.md', which is not a document")

    gone = tmp_path / "gone"
    gone.mkdir()
    (gone / "removed.txt").write_text("buoy.md\nsub/people.txt\npage.html\n", encoding="utf-8")
    _bad(tiny_corpus, gone, home, "removes every document")


def test_update_questions_need_kind_new_or_updated(tiny_corpus, update_dir):
    _jsonl(update_dir / "qa.jsonl", [{**UPDATE_QA[0], "kind": "paraphrase"}])
    with pytest.raises(WorkbenchError, match="kind 'new' or 'updated'"):
        read_update(tiny_corpus, update_dir)


# --- measures on constructed numbers -----------------------------------------------------------------

def test_stale_answers_are_judged_by_the_value_they_match_better():
    assert answer_state("48 kg", ["48 kg"], ["42 kg"]) == "current"   # F1 0.5 with the old value too
    assert answer_state("It weighs 42 kg.", ["48 kg"], ["42 kg"]) == "stale"
    assert answer_state("42", ["48 kg"], ["42 kg"]) == "stale"          # F1 2/3 with the old, 0 with the new
    assert answer_state("I don't know", ["48 kg"], ["42 kg"]) == "other"
    assert answer_state("Ilse Varnholt", ["Mara Quist"], ["Ilse Varnholt", "I. Varnholt"]) == "stale"
    r = stale_rate(["48 kg", "42 kg", "42 kg", "no idea"], [["48 kg"]] * 4, [["42 kg"]] * 4)
    assert r == {"current": 0.25, "stale": 0.5, "n": 4}


def test_fuar_counts_by_hand():
    Q = QAItem
    sets = {"invariant": [Q("i1", "?", ["red"]), Q("i2", "?", ["blue"]), Q("i3", "?", ["green"]),
                          Q("i4", "?", ["pink"])],
            "updated": [Q("u1", "?", ["48 kg"], old_answers=["42 kg"]), Q("u2", "?", ["7"], old_answers=["5"]),
                        Q("u3", "?", ["Oslo"], old_answers=["Bergen"])],
            "new": [Q("n1", "?", ["Skua"]), Q("n2", "?", ["Tern"])]}
    before = {"i1": "red", "i2": "blue", "i3": "green", "i4": "grey",
              "u1": "42 kg", "u2": "7", "u3": "Bergen", "n1": "no", "n2": "Tern"}
    after = {"i1": "red", "i2": "navy", "i3": "olive", "i4": "pink",
             "u1": "48 kg", "u2": "7", "u3": "Bergen", "n1": "Skua", "n2": "Tern"}
    # forgotten: i2, i3 (right before, wrong after; i4 was wrong before, so gaining it is not counted)
    # updated: u1 (new value now, old before); u2 had the new value before already; u3 is still stale
    # acquired: n1 (n2 was right before)
    counts = count_changes(before, after, sets)
    assert counts == {"forgotten": 2, "updated": 1, "acquired": 1}
    assert fuar(**counts) == 1.0 and fuar(3, 0, 0) is None and fuar(0, 2, 2) == 0.0
    block = system_update(after, before, sets)
    assert block["invariant"]["f1"] == pytest.approx(0.5) and block["before"]["invariant"]["f1"] == pytest.approx(0.75)
    assert block["forgetting"] == pytest.approx(0.25) and block["fuar"] == 1.0
    assert block["updated"]["stale"] == pytest.approx(1 / 3) and block["updated"]["current"] == pytest.approx(2 / 3)
    assert block["new"]["f1"] == 1.0 and block["before"]["new"]["f1"] == 0.5


# --- report section on a constructed summary ---------------------------------------------------------

def _summary() -> dict:
    def sys(strategies, cost, inv, up, cur, stale, new, forg, counts, f):
        return {"strategies": strategies, "update_cost_s": cost, "invariant": {"f1": inv, "n": 40},
                "updated": {"f1": up, "current": cur, "stale": stale, "n": 30}, "new": {"f1": new, "n": 20},
                "forgetting": forg, "counts": dict(zip(("forgotten", "updated", "acquired"), counts)), "fuar": f}
    return {"update": {
        "update_dir": "corpora/demo-update", "sets": {"invariant": 40, "invariant_available": 150, "updated": 30,
                                                      "new": 20, "left_out": 12},
        "changes": {"replaced": ["a.md"] * 8, "added": ["b.md"] * 4, "removed": ["c.md"]}, "replay": 0.3,
        "strategies": {"reindex": {"seconds": 4.0, "chunks_encoded": 31, "chunks_total": 380, "peak_rss_mb": 900.0},
                       "continue": {"seconds": 60.0, "tokens_trained": 9000, "n_examples": 100,
                                    "data_source": "gold"},
                       "retrain": {"seconds": 400.0, "tokens_trained": 70000, "n_examples": 360,
                                   "data_source": "gold"}},
        "systems": {
            "rag": sys(["reindex"], 4.0, 0.6, 0.7, 0.9, 0.05, 0.65, 0.01, (1, 27, 13), 1 / 40),
            "ft": sys([], 0.0, 0.4, 0.1, 0.03, 0.6, 0.05, 0.0, (0, 0, 0), None),
            "ft_continue": sys(["continue"], 60.0, 0.3, 0.5, 0.55, 0.2, 0.45, 0.1, (6, 15, 9), 0.25),
            "ft_retrain": sys(["retrain"], 400.0, 0.38, 0.55, 0.6, 0.1, 0.5, 0.02, (2, 17, 10), 2 / 27)}}}


def test_update_report_section_from_a_constructed_summary(tmp_path):
    from workbench.update.report import update_appendix, update_section

    lines = update_section(_summary())
    text = "\n".join(lines)
    assert lines[0] == "## After the update"
    assert ("After re-indexing, **rag** answers 90% of the 30 updated questions with the new value and 5% with the "
            "old one (F1 0.70); on new facts its F1 is 0.65.") in text
    assert "The old adapter **ft**, untouched, gives the old value on 60% of the updated questions" in text
    assert "Best on updated facts: **rag** (F1 0.70, update cost 4.00 s)." in text
    assert "Re-indexing took 4.00 s, 100x less wall time than retraining (400 s)." in text
    assert ("Continuing training (ft_continue) lost 0.10 F1 on invariant facts (6 forgotten against 15 updated and "
            "9 acquired: FUAR 0.25).") in text
    assert "| ft | none | 0.00 s | 0.40 | 0.000 | 0.10 | 3% | 60% | 0.05 | n.d. | 0 / 0 / 0 |" in text
    assert "40 invariant (a sample of 150)" in text and "- reindex: 4.00 s, 31 of 380 chunks re-encoded" in text
    (tmp_path / "plots").mkdir()
    appendix = update_appendix(_summary(), tmp_path / "plots")
    assert (tmp_path / "plots" / "update_quality_vs_cost.png").stat().st_size > 1000
    assert "![update quality vs cost](plots/update_quality_vs_cost.png)" in appendix


def test_side_effects_section_from_a_constructed_summary():
    from workbench.evaluation.report import side_effects_section

    s = {"side_effects": {"n_questions": 100, "n_kept": 20, "text_tokens": 2048, "base": {"perplexity": 12.0},
                          "adapters": {"ft": {"adapter": "demo-sft", "kept_right": 15, "still_right": 0.75,
                                              "perplexity": 15.0, "perplexity_change": 0.25}}}}
    text = "\n".join(side_effects_section(s))
    assert "| ft | `demo-sft` | 75% (15 of 20) | 15.0 | +25% |" in text
    assert "**ft** lost most: it still answers 75% of the probe questions the base model knew" in text


def test_replay_sample_is_the_asked_share():
    from workbench.update.strategies import sample_replay

    pool = [QAItem(f"q{i}", "?", ["a"]) for i in range(10)]
    got = sample_replay(pool, 0.3, seed=1)
    assert len(got) == 3 and got == sample_replay(pool, 0.3, seed=1) and sample_replay(pool, 0.0) == []


# --- the whole flow on tiny models -------------------------------------------------------------------

@pytest.fixture
def tiny_probe(tmp_path, monkeypatch):
    from workbench.evaluation import side_effects

    probe = tmp_path / "probe.jsonl"
    _jsonl(probe, [{"id": f"g{i}", "question": q, "answers": [a]} for i, (q, a) in
                   enumerate([("What is the capital of France?", "Paris"), ("How many legs has a spider?", "8")])])
    text = tmp_path / "general.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    monkeypatch.setattr(side_effects, "PROBE_FILE", probe)
    monkeypatch.setattr(side_effects, "TEXT_FILE", text)


def _lora_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))




@pytest.mark.usefixtures("one_torch_thread")
def test_update_flow_on_tiny_models(tiny_corpus, update_dir, tiny_lm_dir, tiny_st_dir, home, tiny_probe, capsys):
    from test_pipeline import tiny_cfg

    from workbench.retrieval.index import load_index, passage_text
    from workbench.update.strategies import UpdateConfig, update

    cfg = tiny_cfg(tiny_lm_dir, tiny_st_dir)
    inputs = hash_tree(tiny_corpus), hash_tree(update_dir)
    folder = update(tiny_corpus, update_dir, cfg, UpdateConfig(replay=0.5), name="up", progress=False)
    assert (hash_tree(tiny_corpus), hash_tree(update_dir)) == inputs   # the inputs are only read
    assert folder == home / "runs" / "up"
    s = json.loads((folder / "summary.json").read_text())
    u = s["update"]
    assert u["sets"]["invariant"] == 1 and u["sets"]["updated"] == 1 and u["sets"]["new"] == 1
    assert u["sets"]["left_out_ids"] == ["e1"]

    # incremental re-index: only chunks whose text the old index lacks were encoded (the replaced document's
    # first section and the added document; its unchanged Maintenance section was reused)
    new, old = load_index("up"), load_index("corpus")
    old_texts = {passage_text(c) for c in old.chunks}
    fresh = [c for c in new.chunks if passage_text(c) not in old_texts]
    r = u["strategies"]["reindex"]
    assert [c.id for c in fresh] == ["buoy.md#0", "sensors.md#0"] and any(c.id == "buoy.md#1" for c in new.chunks)
    assert r["chunks_encoded"] == 2 and r["chunks_total"] == len(new.chunks) > 2
    assert new.manifest["n_reused"] == len(new.chunks) - 2 and r["seconds"] > 0
    assert not any(c.doc == "page.html" for c in new.chunks) and any(c.doc == "page.html" for c in old.chunks)

    # continue / replay start from the old adapter; retrain is a fresh one; the old adapter is untouched
    adapters = home / "adapters"
    old_w = _lora_weights(adapters / "corpus-sft")
    for suffix in ("continue", "replay", "retrain"):
        m = json.loads((adapters / f"up-{suffix}" / "manifest.json").read_text())
        w = _lora_weights(adapters / f"up-{suffix}")
        assert set(w) == set(old_w) and any(not (w[k] == old_w[k]).all() for k in w)
        assert u["strategies"][suffix]["tokens_trained"] > 0
        assert (m.get("continued_from") == "corpus-sft") == (suffix != "retrain")
    assert json.loads((adapters / "up-replay" / "manifest.json").read_text())["n_replay_examples"] == 0  # no gold left
    # the same continuation again is reused, not retrained
    from dataclasses import replace

    from workbench.training.finetune import continue_finetune

    work = home / ".workbench" / "updates" / "up"
    again = continue_finetune("corpus-sft", work / "corpus", replace(cfg.finetune, mode="sft"), cfg.model,
                              "up-continue", work / "continue-qa.jsonl", cfg, progress=False)
    assert again.reused and again.tokens_seen == u["strategies"]["continue"]["tokens_trained"]
    assert u["strategies"]["retrain"]["data_source"] == "gold"
    trained = [json.loads(x) for x in (adapters / "up-retrain" / "train_data.jsonl").read_text().splitlines()]
    assert {t["target"] for t in trained} == {"48 kg", "every 15 minutes"}   # never the stale 42 kg of t1, t2

    systems = ["base", "rag", "ft", "ft_rag", "ft_continue", "ft_continue_rag", "ft_replay", "ft_retrain",
               "ft_retrain_rag"]
    assert list(s["systems"]) == systems and list(u["systems"]) == systems
    assert u["systems"]["ft_continue_rag"]["predecessor"] == "ft_rag"
    assert u["systems"]["ft_continue_rag"]["update_cost_s"] == pytest.approx(
        u["strategies"]["continue"]["seconds"] + r["seconds"], abs=0.02)
    assert u["systems"]["base"]["forgetting"] == 0 and u["systems"]["ft"]["update_cost_s"] == 0
    rows = [json.loads(x) for x in (folder / "results.jsonl").read_text().splitlines()]
    assert {(r["id"], r["kind"]) for r in rows} == {("e2", "invariant"), ("u3", "updated"), ("n3", "new")}
    assert set(s["side_effects"]["adapters"]) == {"ft", "ft_continue", "ft_replay", "ft_retrain"}
    report = (folder / "report.md").read_text()
    assert "## After the update" in report and "## Side effects on general ability" in report
    assert (folder / "plots" / "update_quality_vs_cost.png").exists()


# --- the scenario with the embedded models ------------------------------------------------------------

@pytest.mark.slow
def test_workbench_update_with_the_embedded_models(tmp_path, monkeypatch):
    """A three-document slice of the demo and the demo update's Tern-3 changes, through the command line."""
    import yaml
    from test_run_slow import REPO, small_corpus

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path / "home"))
    corpus = small_corpus(tmp_path / "tern", n_eval=8, n_unanswerable=0)
    demo_update = REPO / "corpora" / "demo-update"
    docs = ["products/tern-3-specification.md", "products/skua-g3-specification.md"]
    up = tmp_path / "tern-update"
    for d in docs:
        (up / d).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(demo_update / d, up / d)
    rows = [json.loads(line) for line in (demo_update / "qa.jsonl").read_text(encoding="utf-8").splitlines()]
    mine = [r for r in rows if r.get("doc") in docs]
    ev = [r for r in mine if r["split"] == "eval"]
    keep = [r for r in mine if r["split"] == "train"] + [r for r in ev if r["kind"] == "updated"][:4] + \
        [r for r in ev if r["kind"] == "new"][:3]
    _jsonl(up / "qa.jsonl", keep)
    preset = yaml.safe_load((CONFIG_DIR / "quick.yaml").read_text())
    preset["finetune"].update(max_steps=4, batch_size=4, max_seq_len=128, paraphrases=0, heldout_fraction=0.0)
    preset["eval"].update(bootstrap=200)
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(preset))
    # retraining and the probe run through the same code as continue and evaluation (tested on tiny models):
    # left out here to keep this test a few minutes on 2 cores
    result = runner.invoke(app, ["update", str(corpus), str(up), "--profile", str(tmp_path / "small.yaml"),
                                 "--strategies", "reindex,continue", "--replay", "0.5", "--no-side-effects",
                                 "--name", "tu"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "home" / "runs" / "tu"
    s = json.loads((out / "summary.json").read_text())
    u = s["update"]
    assert u["sets"]["updated"] == 4 and u["sets"]["new"] == 3 and u["sets"]["invariant"] >= 1
    r = u["strategies"]["reindex"]
    assert 0 < r["chunks_encoded"] < r["chunks_total"]
    assert u["strategies"]["replay"]["tokens_trained"] > 0 and u["strategies"]["continue"]["tokens_trained"] > 0
    assert list(u["systems"]) == ["base", "rag", "ft", "ft_rag", "ft_continue", "ft_continue_rag", "ft_replay"]
    # the updated index holds the new values in place of the old ones, so RAG rarely answers with an old one;
    # how often it copies the new value (1 of 4 in one run under heavy load) is reported, not asserted, as in
    # test_run_slow: on four questions a margin would test noise
    from workbench.core.text import normalize_answer
    from workbench.retrieval.index import load_index

    spec = " ".join(normalize_answer(c.text) for c in load_index("tu").chunks
                    if c.doc == "products/tern-3-specification.md")
    updated = [r for r in keep if r["kind"] == "updated" and r["split"] == "eval"]
    assert all(normalize_answer(r["answers"][0]) in spec for r in updated)
    assert u["systems"]["rag"]["updated"]["stale"] <= 0.25, u["systems"]["rag"]
    assert "## After the update" in (out / "report.md").read_text()


def test_results_page_shows_after_the_update(home):
    from app_project import write_run
    from test_app import app_test, texts

    home.mkdir(parents=True)
    run = write_run(home)
    s = json.loads((run / "summary.json").read_text())
    s.update(_summary())
    s["side_effects"] = {"n_questions": 100, "n_kept": 20, "text_tokens": 2048, "base": {"perplexity": 12.0},
                         "adapters": {"ft": {"adapter": "demo-sft", "kept_right": 15, "still_right": 0.75,
                                             "perplexity": 15.0, "perplexity_change": 0.25}}}
    (run / "summary.json").write_text(json.dumps(s), encoding="utf-8")
    at = app_test("Results")
    at.run()
    assert not at.exception
    shown = texts(at)
    assert "After the update" in shown and "Side effects on general ability" in shown
    assert "Re-indexing took 4.00 s, 100x less wall time than retraining (400 s)." in shown
    assert "| ft | `demo-sft` | 75% (15 of 20) | 15.0 | +25% |" in shown


@pytest.mark.usefixtures("one_torch_thread")
def test_update_without_any_train_split_synthesizes_training_data(tiny_corpus, update_dir, tiny_lm_dir,
                                                                   tiny_st_dir, home):
    from test_pipeline import tiny_cfg

    from workbench.update.strategies import UpdateConfig, update

    for qa in (tiny_corpus / "qa.jsonl", update_dir / "qa.jsonl"):
        rows = [json.loads(line) for line in qa.read_text().splitlines()]
        _jsonl(qa, [r for r in rows if r.get("split") != "train"])
    folder = update(tiny_corpus, update_dir, tiny_cfg(tiny_lm_dir, tiny_st_dir),
                    UpdateConfig(strategies=["reindex", "continue", "retrain"], replay=1.0), name="syn",
                    progress=False, side_effects=False)
    u = json.loads((folder / "summary.json").read_text())["update"]
    st = u["strategies"]
    assert st["continue"]["data_source"] == "synthesized" and st["retrain"]["data_source"] == "synthesized"
    # continue synthesized its questions from the replaced and added documents only
    rows = [json.loads(x) for x in (home / "adapters" / "syn-continue" / "train_data.jsonl").read_text().splitlines()]
    assert rows and all(r["question"] for r in rows)
    assert any("48 kg" in r["target"] or "15 minutes" in r["target"] for r in rows)
    assert not any("Varnholt" in r["target"] or "2011" in r["target"] for r in rows)  # untouched people.txt
    # replay drew on what the old adapter was trained on (synthesized), keeping only answers still in the corpus
    replayed = json.loads((home / "adapters" / "syn-replay" / "manifest.json").read_text())["n_replay_examples"]
    assert replayed > 0
    assert u["sets"]["invariant"] == 1 and u["sets"]["updated"] == 1 and u["sets"]["new"] == 1
