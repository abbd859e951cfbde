"""The package as a user installs it: declared requirements match what is imported and what was tested, and a
wheel installed outside the checkout runs its defaults (presets included)."""
import ast
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [Requirement(r) for r in PROJECT["dependencies"]]
# imported only where installed (checked with find_spec), so never required
OPTIONAL_IMPORTS = {"pypdf", "umap"}


def _imported_modules() -> set[str]:
    """Top-level names of the third-party modules the package and the app entry import."""
    names = set()
    for path in [*(REPO / "workbench").rglob("*.py"), REPO / "streamlit_app.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "workbench"}


def test_every_imported_library_is_a_declared_requirement():
    declared = {canonicalize_name(r.name) for r in REQUIREMENTS}
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module in sorted(_imported_modules() - OPTIONAL_IMPORTS):
        dists = {canonicalize_name(d) for d in distributions.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not in pyproject dependencies: {undeclared}"


def test_constraints_pin_every_requirement_within_its_range():
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    extras = [Requirement(r) for r in PROJECT["optional-dependencies"]["dev"]]
    for req in REQUIREMENTS + extras:
        if req.name == "torch":  # installed from TORCH_SPEC (CPU or CUDA build), never pinned
            continue
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is required but constraints.txt does not pin it"
        assert req.specifier.contains(pin, prereleases=True), f"constraints.txt pins {req.name}=={pin}, outside {req}"


def _build_wheel(dest: Path) -> Path:
    """Build the wheel from a copy of the sources, so the checkout gets no build/ or egg-info folder."""
    src = dest / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "workbench", src / "workbench", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(dest / "dist"), str(src)], check=True, capture_output=True)
    (wheel,) = (dest / "dist").glob("workbench-*.whl")
    return wheel


def _venv_beside_project_packages(root: Path) -> Path:
    """A fresh venv that also sees this environment's installed libraries (a .pth line), but not its workbench."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    # a path added by a .pth file does not run that folder's own .pth files: the editable workbench stays out
    Path(purelib, "project_libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_wheel_installed_outside_the_checkout_runs_its_defaults(tmp_path):
    wheel = _build_wheel(tmp_path)
    python = _venv_beside_project_packages(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    from workbench import __version__

    assert run(str(python.parent / "workbench"), "--version").strip() == f"workbench {__version__}"
    out = run(str(python), "-c", "import workbench; from workbench.core.config import CONFIG_DIR, load_preset; "
              "print(workbench.__file__); print(sorted(p.stem for p in CONFIG_DIR.glob('*.yaml'))); "
              "print(load_preset('quick').model.base_model)")
    where, presets, base = out.splitlines()
    assert Path(where).is_relative_to(tmp_path / "venv")  # the installed wheel, not the checkout
    assert ast.literal_eval(presets) == sorted(p.stem for p in (REPO / "workbench" / "core" / "presets").glob("*.yaml"))
    assert base == "SmolLM2-135M-Instruct"
