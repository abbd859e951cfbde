"""``workbench mcp`` launched over stdio by the official MCP SDK client, on a tiny project: the tools are
listed and each is called; problems come back as tool errors."""
from __future__ import annotations

import asyncio
import json
import sys
from contextlib import asynccontextmanager

import pytest
from serve_project import REPO, build_project, env_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOOLS = {"search", "ask", "compare", "list_artifacts", "report"}


@pytest.fixture(scope="module")
def project(tmp_path_factory, app_lm_dir, tiny_st_dir):
    from app_project import write_run

    root = tmp_path_factory.mktemp("mcp")
    p = build_project(root / "proj", app_lm_dir, tiny_st_dir)
    write_run(p["root"])  # a scored run for the report tool
    return p


@asynccontextmanager
async def _client(project):
    """The official SDK client over stdio, launching ``workbench mcp`` from the source checkout (whose
    ``corpora/`` holds corpus folders that are not indices of the project)."""
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=sys.executable,
                                   args=["-m", "workbench.cli", "mcp", "--preset", str(project["preset"])],
                                   env=env_for(project["root"]), cwd=str(REPO))
    async with Client(params, read_timeout_seconds=300) as client:
        yield client


async def _session(project):
    async with _client(project) as client:
        tools = await client.list_tools()
        calls = {
            "search": await client.call_tool("search", {"query": "Tern-3 weight", "k": 2}),
            "ask": await client.call_tool("ask", {"question": "What does the Tern-3 weigh?", "system": "rag"}),
            "compare": await client.call_tool("compare", {"question": "Who leads Kestrelmark Instruments?"}),
            "list_artifacts": await client.call_tool("list_artifacts", {}),
            "report": await client.call_tool("report", {}),
            "bad_system": await client.call_tool("ask", {"question": "x", "system": "oracle"}),
            "bad_k": await client.call_tool("search", {"query": "x", "k": 51}),
            "bad_index": await client.call_tool("search", {"query": "x", "index": "nope"}),
            "bad_run": await client.call_tool("report", {"run": "../etc"}),
        }
        return tools, calls


def test_mcp_over_stdio_lists_and_runs_every_tool(project):
    tools, calls = asyncio.run(_session(project))
    listed = {t.name: t for t in tools.tools}
    assert set(listed) == TOOLS
    for t in listed.values():  # documented, with typed arguments
        assert t.description and t.input_schema["type"] == "object"
    k = listed["search"].input_schema["properties"]["k"]
    assert (k["type"], k["minimum"], k["maximum"]) == ("integer", 1, 50)
    assert listed["ask"].input_schema["required"] == ["question"]
    assert listed["ask"].input_schema["properties"]["system"]["enum"] == ["base", "rag", "ft", "ft_rag"]
    for t in listed.values():  # every tool only reads the project
        assert t.annotations.read_only_hint is True and t.annotations.open_world_hint is False, t.name

    def data(name):
        r = calls[name]
        assert not r.is_error, r.content
        return r.structured_content

    search = data("search")
    assert search["index"] == "tiny" and [p["n"] for p in search["passages"]] == [1, 2]
    assert search["passages"][0]["doc"] == "buoy.md"

    ask = data("ask")
    assert ask["system"] == "rag" and ask["model"] == "rag:tiny" and ask["sources"]
    assert isinstance(ask["answer"], str) and ask["latency_s"] >= 0

    compare = data("compare")
    assert [a["system"] for a in compare["answers"]] == ["base", "rag", "ft", "ft_rag"]
    assert [a["model"] for a in compare["answers"]] == ["base", "rag:tiny", "ft:tiny-sft", "ft_rag:tiny-sft:tiny"]
    assert all(bool(a["sources"]) == a["system"].endswith("rag") for a in compare["answers"])

    arts = data("list_artifacts")
    assert [i["name"] for i in arts["indices"]] == ["tiny"] and [a["name"] for a in arts["adapters"]] == ["tiny-sft"]
    assert arts["adapters"][0]["mode"] == "sft" and arts["runs"][0]["systems"] == ["base", "rag", "ft", "ft_rag"]

    report = data("report")
    assert report["run"] == arts["runs"][0]["name"] and "## Verdict" in report["report"]
    assert set(report["scores"]) == {"base", "rag", "ft", "ft_rag"} and report["scores"]["rag"]["f1"] is not None

    for name, needle in [("bad_system", "oracle"), ("bad_k", "less than or equal to 50"),
                         ("bad_index", "no index 'nope' is built in this project"), ("bad_run", "invalid run name")]:
        r = calls[name]
        assert r.is_error and needle in r.content[0].text, (name, r.content)


def _listing(*folders) -> dict[str, list[str]]:
    return {str(f): sorted(p.name for p in f.iterdir()) if f.is_dir() else [] for f in folders}


async def _hostile_calls(project, names: list[str]) -> dict:
    """Every tool argument that names an index or adapter, given each of ``names``."""
    calls = {}
    async with _client(project) as client:
        for name in names:
            calls["search", name] = await client.call_tool("search", {"query": "passwd", "index": name})
            calls["ask rag", name] = await client.call_tool("ask", {"question": "x", "system": "rag", "index": name})
            calls["ask ft", name] = await client.call_tool("ask", {"question": "x", "system": "ft", "adapter": name})
            calls["compare index", name] = await client.call_tool("compare", {"question": "x", "index": name})
            calls["compare adapter", name] = await client.call_tool("compare", {"question": "x", "adapter": name})
    return calls


def test_mcp_tools_take_names_of_built_artifacts_only(project):
    """A prompt-injected agent cannot read or index files outside the project: paths, ``..`` and names of
    folders that are not built artifacts are one tool error each, and nothing is created."""
    root = project["root"]
    watched = [root, root / "indices", root / "adapters", REPO / "indices", REPO / "adapters"]
    before = _listing(*watched)
    paths = ["../../etc", "/etc", str(project["corpus"]), "..", "tiny/../tiny", "~"]
    unbuilt = ["corpora", "etc", "nope"]  # corpora/ exists in the working folder and the project: not an index
    calls = asyncio.run(_hostile_calls(project, paths + unbuilt))
    for (tool, name), r in calls.items():
        assert r.is_error, (tool, name, r.structured_content)
        text = r.content[0].text
        kind = "adapter" if "adapter" in tool or tool == "ask ft" else "index"
        want = f"invalid {kind} name" if name in paths else f"no {kind} {name!r} is built in this project"
        assert want in text and "Traceback" not in text, (tool, name, text)
    assert _listing(*watched) == before
    assert not (root / "indices" / "etc").exists() and not (root / "indices" / "corpora").exists()


def test_mcp_answers_are_the_served_ones(project, monkeypatch):
    """The ask tool and ``rag:INDEX`` of workbench serve answer through the same function."""
    from workbench.core.config import load_preset
    from workbench.serving.mcp_server import Tools
    from workbench.serving.pool import ModelPool, Route

    monkeypatch.setenv("WORKBENCH_HOME", str(project["root"]))
    cfg = load_preset(project["preset"])
    got = Tools(cfg).ask("What does the Tern-3 weigh?", "ft_rag")
    want = ModelPool(cfg, ["tiny"], ["tiny-sft"]).answer("What does the Tern-3 weigh?", Route("tiny-sft", "tiny"))
    assert got.answer == want.text and [p.chunk_id for p in got.sources] == [h.chunk.id for h in want.hits]
    assert json.loads(got.model_dump_json())["model"] == "ft_rag:tiny-sft:tiny"


def test_no_project_artifacts_is_a_tool_error_not_a_crash(tmp_path, monkeypatch, project):
    from workbench.core.config import load_preset
    from workbench.core.errors import WorkbenchError
    from workbench.serving.mcp_server import Tools

    monkeypatch.setenv("WORKBENCH_HOME", str(tmp_path))
    tools = Tools(load_preset(project["preset"]))
    with pytest.raises(WorkbenchError, match="no index is built"):
        tools.search("x")
    with pytest.raises(WorkbenchError, match="no run in this project"):
        tools.report()
    assert tools.list_artifacts().indices == []


def test_bad_transport_or_port_in_use_is_one_line(project, monkeypatch):
    import socket

    from serve_project import one_error_line
    from typer.testing import CliRunner

    from workbench.cli import app

    monkeypatch.setenv("WORKBENCH_HOME", str(project["root"]))
    preset = ["--preset", str(project["preset"])]
    assert "unknown transport 'sse'" in one_error_line(CliRunner().invoke(app, ["mcp", "--transport", "sse", *preset]))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        result = CliRunner().invoke(app, ["mcp", "--transport", "http", "--port", str(port), *preset])
    assert f"port {port} on 127.0.0.1 is already in use" in one_error_line(result)
