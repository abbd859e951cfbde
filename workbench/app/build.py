"""Build page: start index building, fine-tuning or a full run as a subprocess, with live log and progress.

Each build is ``python -m workbench.cli ...`` (the same commands a user types) started in its own
process group, its output going to a log file under ``.workbench/jobs/``. Before it starts, it takes a
lock file per artifact it will write (``workbench.core.locks``: the same locks the command line takes): a
second build of the same artifact — from this session, another session, another server process or a
terminal — is refused until the first ends. A lock whose process is gone is stale and is taken over. Finished artifacts appear in the selectors on the
next rerun, since artifact listing is never cached.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import streamlit as st

from workbench.app import artifacts
from workbench.app.text import escape_markdown
from workbench.core import paths
from workbench.core.artifacts import write_json
from workbench.core.config import CONFIG_DIR, load_preset
from workbench.core.errors import WorkbenchError
from workbench.core.locks import JOB_ENV, Lock, acquire_locks, alive, held_locks, lock_name, release_locks
from workbench.core.paths import safe_name
from workbench.evaluation.systems import adapter_plan, resolve_systems
from workbench.retrieval.index import default_index_name
from workbench.training.adapters import default_adapter_name
from workbench.training.trainset import synthesize_corpus

CLI = [sys.executable, "-m", "workbench.cli"]
"""How builds invoke the workbench command line (tests point this at a stand-in)."""
LOG_TAIL_BYTES = 64 * 1024
_PERCENT = re.compile(r"(\d{1,3})%\|")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass
class Job:
    """One build started from the app.

    Attributes:
        id: job id (also the log and job file names).
        title: what it builds, for people.
        args: the workbench CLI arguments.
        locks: artifact lock names it holds while running.
        log: log file path.
        pid: process id (also its process group id).
        started: start time (epoch seconds).
        ended: end time, once finished.
        rc: exit code, once finished (None while running or when unknown).
    """

    id: str
    title: str
    args: list[str]
    locks: list[str]
    log: str
    pid: int | None = None
    started: float = field(default_factory=time.time)
    ended: float | None = None
    rc: int | None = None

    @property
    def running(self) -> bool:
        return self.ended is None and self.pid is not None and alive(self.pid)

    @property
    def status(self) -> str:
        if self.running:
            return "running"
        if self.rc is None:
            return "ended (exit status unknown)"
        return "succeeded" if self.rc == 0 else f"failed (exit code {self.rc})"


# --- jobs ----------------------------------------------------------------------------------------

class JobManager:
    """Starts builds and follows them; one per project folder per server process (shared by sessions)."""

    def __init__(self, root: Path):
        self.root = root
        self._procs: dict[str, subprocess.Popen] = {}
        self._mutex = threading.Lock()

    @property
    def jobs_dir(self) -> Path:
        return self.root / ".workbench" / "jobs"

    def _save(self, job: Job) -> None:
        write_json(self.jobs_dir / f"{job.id}.json", asdict(job))

    def start(self, title: str, args: list[str], locks: list[str]) -> Job:
        """Start ``workbench ARGS`` in the background after taking ``locks``.

        Raises:
            WorkbenchError: one of the artifacts is already being built.
        """
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        log = self.jobs_dir / f"{job_id}.log"
        job = Job(job_id, title, list(args), list(locks), str(log))
        with self._mutex:
            lock_paths = acquire_locks(locks, job_id)
            try:
                env = dict(os.environ, PYTHONUNBUFFERED="1", WORKBENCH_HOME=str(self.root), **{JOB_ENV: job_id},
                           COLUMNS="120", TERM="dumb")
                with open(log, "wb") as out:
                    out.write(f"$ workbench {' '.join(args)}\n".encode())
                    out.flush()
                    proc = subprocess.Popen(CLI + list(args), cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
            except BaseException:
                release_locks(lock_paths)
                raise
            job.pid = proc.pid
            for lock in lock_paths:  # the lock now names the build's process
                lock.describe(job_id, proc.pid)
            self._procs[job_id] = proc
            self._save(job)
        threading.Thread(target=self._watch, args=(job, proc, lock_paths), daemon=True,
                         name=f"workbench-job-{job_id}").start()
        return job

    def _watch(self, job: Job, proc: subprocess.Popen, lock_paths: list[Lock]) -> None:
        rc = proc.wait()
        job.rc, job.ended = rc, time.time()
        release_locks(lock_paths)
        self._save(job)
        self._procs.pop(job.id, None)

    def jobs(self) -> list[Job]:
        """Every job started in this project (newest first), with up-to-date status."""
        out = []
        for p in sorted(self.jobs_dir.glob("*.json"), reverse=True) if self.jobs_dir.is_dir() else []:
            try:
                job = Job(**json.loads(p.read_text(encoding="utf-8")))
            except (OSError, ValueError, TypeError):
                continue
            out.append(job)
        return out

    def stop(self, job: Job) -> None:
        """Ask a running job's process group to stop (SIGTERM); its locks go when it exits."""
        if job.pid is not None and job.running:
            try:
                os.killpg(job.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self, job: Job, timeout: float | None = None) -> Job:
        """Block until ``job`` ends (tests and scripts); returns its final state."""
        proc = self._procs.get(job.id)
        if proc is not None:
            proc.wait(timeout=timeout)
        deadline = time.time() + (timeout or 60)
        while time.time() < deadline:
            cur = next((j for j in self.jobs() if j.id == job.id), job)
            if not cur.running and (cur.ended is not None or proc is None):
                return cur
            time.sleep(0.05)
        return next((j for j in self.jobs() if j.id == job.id), job)


@st.cache_resource
def _manager(root: str) -> JobManager:
    return JobManager(Path(root))


def manager() -> JobManager:
    """The job manager of the current project (shared by every session of this server)."""
    return _manager(str(paths.project_root()))


def log_tail(path: str | Path, max_bytes: int = LOG_TAIL_BYTES) -> str:
    """The end of a log, with progress-bar redraws (carriage returns) collapsed and colours removed."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            raw = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    raw = _ANSI.sub("", raw)
    lines = [line.split("\r")[-1] if line.split("\r")[-1].strip() else next(
        (s for s in reversed(line.split("\r")) if s.strip()), "") for line in raw.split("\n")]
    return "\n".join(lines)


def progress_of(text: str) -> tuple[float | None, str]:
    """The last progress-bar percentage in a log (0..1, or None) and its last non-empty line."""
    pct = None
    for m in _PERCENT.finditer(text):
        pct = min(100, int(m.group(1))) / 100
    last = next((line.strip() for line in reversed(text.splitlines()) if line.strip()), "")
    return pct, last


# --- what each button builds ---------------------------------------------------------------------

def index_job(corpus: str, name: str | None = None) -> tuple[str, list[str], list[str]]:
    """(title, CLI args, locks) for building the corpus's index."""

    art = artifacts.resolve("corpus", corpus)
    name = name or default_index_name(art.path)
    return (f"index {name} from corpora/{art.name}", ["index", str(art.path), "--name", name],
            [lock_name("index", name)])


def finetune_job(corpus: str, mode: str, preset: str = "quick") -> tuple[str, list[str], list[str]]:
    """(title, CLI args, locks) for fine-tuning an adapter (named ``<corpus>-<mode>``)."""

    art = artifacts.resolve("corpus", corpus)
    if mode not in ("sft", "cpt", "raft", "scratch"):
        raise WorkbenchError(f"unknown fine-tuning mode {mode!r}", "use sft, cpt, raft or scratch")
    name = default_adapter_name(art.path, mode)
    locks = [lock_name("adapter", name)] + ([lock_name("index", default_index_name(art.path))] if mode == "raft" else [])
    return (f"fine-tune {name} ({mode}, preset {preset})",
            ["finetune", str(art.path), "--mode", mode, "--name", name, "--preset", preset], locks)


def run_job(corpus: str, profile: str = "quick") -> tuple[str, list[str], list[str]]:
    """(title, CLI args, locks) for ``workbench run``: locks its index, adapters and run."""

    art = artifacts.resolve("corpus", corpus)
    modes = ["sft"]
    try:
        cfg = load_preset(profile)
        roles = {s.adapter for s in resolve_systems(cfg.eval.systems) if s.adapter}
        modes = sorted(set(adapter_plan(cfg, roles).values()))
    except WorkbenchError:
        raise
    except Exception:  # planning is best effort; sft is what the presets train
        pass
    locks = [lock_name("index", default_index_name(art.path))]
    locks += [lock_name("adapter", default_adapter_name(art.path, m)) for m in modes]
    return (f"full run on corpora/{art.name} (preset {profile})", ["run", str(art.path), "--preset", profile],
            locks + [lock_name("run", safe_name(art.name))])


def _start(spec: tuple[str, list[str], list[str]]) -> None:
    title, args, locks = spec
    try:
        job = manager().start(title, args, locks)
        st.session_state["build_notice"] = ("success", f"Started: {title} (job {job.id})")
    except WorkbenchError as e:
        st.session_state["build_notice"] = ("error", str(e))


# --- page ----------------------------------------------------------------------------------------

def _presets() -> list[str]:
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    return sorted(names, key=lambda n: n != "quick") or ["quick"]


def build_buttons(key: str = "build") -> None:
    """Corpus picker and the three build buttons."""
    corpora = artifacts.list_corpora()
    if not corpora:
        st.warning(f"No corpus found under {escape_markdown(str(artifacts.corpora_dir()))}. Put documents "
                   "(.md, .txt, .html, .rst) in corpora/NAME/, optionally with a qa.jsonl of gold questions.")
        return
    by_name = {c.name: c for c in corpora}
    corpus = st.selectbox("Corpus", list(by_name), key=f"{key}_corpus")
    st.caption(escape_markdown(by_name[corpus].describe()))
    presets = _presets()
    c1, c2, c3 = st.columns(3)
    with c1:
        st.markdown("**1. Index** (retrieval)")
        if st.button("Build index", key=f"{key}_index", help="workbench index CORPUS"):
            _start(index_job(corpus))
    with c2:
        st.markdown("**2. Fine-tune** (adapter)")
        mode = st.selectbox("Mode", ["sft", "cpt", "raft", "scratch"], key=f"{key}_mode")
        preset = st.selectbox("Preset", presets, key=f"{key}_preset")
        if st.button("Fine-tune", key=f"{key}_finetune", help="workbench finetune CORPUS --mode MODE"):
            _start(finetune_job(corpus, mode, preset))
        synth_sample_panel(corpus, preset, key)
    with c3:
        st.markdown("**3. Everything** (index, fine-tune, evaluate)")
        profile = st.selectbox("Preset", presets, key=f"{key}_profile")
        if st.button("Full run", key=f"{key}_run", type="primary", help="workbench run CORPUS --preset PRESET"):
            _start(run_job(corpus, profile))
    notice = st.session_state.pop("build_notice", None)
    if notice:
        (st.success if notice[0] == "success" else st.error)(notice[1])


@st.cache_data(show_spinner="Synthesizing questions…", max_entries=4)
def synth_sample(corpus: str, preset: str, n: int = 8) -> dict:
    """A seeded sample of the questions fine-tuning would synthesize from ``corpus`` with ``preset`` (what
    ``workbench synth`` writes), and the counts of the whole set."""
    cfg = load_preset(preset)
    made = synthesize_corpus(artifacts.resolve("corpus", corpus).path, cfg)
    rows = [{"question": s.question, "answer": s.answer, "from sentence": s.sentence}
            for s in made.sample(n, cfg.finetune.seed)]
    return {"summary": made.summary(), "rows": rows}


def synth_sample_panel(corpus: str, preset: str, key: str) -> None:
    """Before a fine-tune: a sample of the questions synthesized from the corpus (used when its question
    file has no train split; gold train questions are used where they exist)."""
    with st.expander("Synthesized training questions (sample)"):
        if not st.button("Show a sample", key=f"{key}_synth", help="workbench synth CORPUS --out FILE"):
            return
        try:
            sample = synth_sample(corpus, preset)
        except WorkbenchError as e:
            st.error(str(e))
            return
        info = sample["summary"]
        st.caption(f"{info['n_facts']} facts in {info['n_wordings']} questions ({info['backend']}, "
                   f"{info['pipeline']}); used when the question file has no train split.")
        st.dataframe(sample["rows"], hide_index=True)


def empty_project_guide() -> None:
    """What a fresh checkout shows: what to build, and the buttons to build it."""
    st.info(
        "**Nothing is built yet.** The workbench compares ways of giving a model your corpus's knowledge: "
        "**retrieval** needs an *index* (`workbench index corpora/demo`), **fine-tuning** needs an *adapter* "
        "(`workbench finetune corpora/demo --mode sft`), and the **results** need an evaluation run. "
        "`make demo` (`workbench run corpora/demo`) builds all three in one go (about 15 minutes on a laptop "
        "CPU). Or start them here; they appear in the selectors as soon as they finish. Meanwhile the base "
        "model alone can answer below.")
    build_buttons(key="guide")
    jobs_panel()


def _render_jobs() -> bool:
    jobs = manager().jobs()
    if not jobs:
        return False
    any_running = False
    for job in jobs[:8]:
        running = job.running
        any_running |= running
        elapsed = (time.time() if running else (job.ended or time.time())) - job.started
        with st.container(border=True):
            st.markdown(f"**{escape_markdown(job.title)}** — {job.status} · {elapsed:.0f} s")
            tail = log_tail(job.log)
            pct, last = progress_of(tail)
            if running:
                st.progress(pct or 0.0, text=escape_markdown(last[:150]) or "starting…")
                if st.button("Stop", key=f"stop_{job.id}"):
                    manager().stop(job)
            lines = tail.splitlines()[-40:]
            with st.expander("Log", expanded=running):
                st.code("\n".join(lines) or "(no output yet)", language=None)
    return any_running


@st.fragment(run_every=2.0)
def _live_jobs() -> None:
    running = _render_jobs()
    was = st.session_state.get("build_was_running", False)
    st.session_state["build_was_running"] = running
    if was and not running:  # a build just ended: rerun the whole page so selectors list its artifact
        st.rerun(scope="app")


def jobs_panel() -> None:
    """Builds of this project, live while any runs."""
    if any(j.running for j in manager().jobs()):
        st.session_state["build_was_running"] = True
        _live_jobs()
    else:
        _render_jobs()


def page() -> None:
    """The build page."""
    st.title("Build")
    st.markdown("Builds run as `workbench` commands in the background; their output appears below. Two "
                "builds of the same artifact cannot run at once.")
    build_buttons()
    held = held_locks()
    if held:
        st.caption("Being built now: " + ", ".join(escape_markdown(k) for k in held))
    st.subheader("Builds")
    jobs_panel()
    st.subheader("Built artifacts")
    for label, items in (("Indices", artifacts.list_indices()), ("Adapters", artifacts.list_adapters()),
                         ("Runs", artifacts.list_runs())):
        st.markdown(f"**{label}**: " + ("none yet" if not items else ""))
        for a in items:
            st.markdown(f"- `{a.name}` — {escape_markdown(a.describe())}")
