"""The package's shape: where it lives, the order of its layers, and a wheel that is complete.

The layers (``../shared/DESIGN.md``): each imports only the layers above it, and no module
imports itself back through others, lazily or not.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "distgan"

# Top-level modules or subpackages of distgan, by layer (1 is the top: it imports nothing else).
LAYERS = [
    # the JobSpec, and where a model of the user's is (user_models)
    {"errors", "fields", "job_rules", "search_space", "objectives", "user_models", "specs",
     "config"},
    {"models", "losses", "augment", "ada", "images", "dist", "progress"},  # plain PyTorch; bars
    # the adversarial step, the EMA, the learning rates and ADA's augmentation strength
    {"step", "ema", "schedule", "ada_tuner", "path_length"},
    {"storage", "data", "metrics", "loopback"},  # files of a run, data, scoring; Ray on 127.0.0.1
    {"train", "generators"},  # training, and generators read back from its checkpoints
    # consumers of the above
    {"tune", "submit", "jobs_api", "upload", "report", "export", "explore", "rate", "cli"},
]  # fmt: skip
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = REPO / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports_of(path: Path) -> set[str]:
    """The distgan modules ``path`` imports anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "distgan"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "distgan":
            for alias in node.names:  # `from distgan.train import checkpoint` names a module
                sub = f"{node.module}.{alias.name}"
                found.add(sub if is_module(sub) else node.module)
    return found


GRAPH = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def top(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_package_is_at_the_top_of_the_repository():
    assert (PACKAGE / "__init__.py").is_file() and not (REPO / "src").exists()
    for name in ("pyproject.toml", "README.md", "jobs", "tests", "cluster"):
        assert (REPO / name).exists(), name


def test_every_module_has_a_layer():
    assert {top(m) for m in GRAPH if top(m) and top(m) != "__main__"} <= set(LAYER)


def test_each_layer_imports_only_the_layers_above_it():
    wrong = [
        f"{m} (layer {LAYER[top(m)] + 1}) imports {i} (layer {LAYER[top(i)] + 1})"
        for m, deps in GRAPH.items()
        if top(m) in LAYER
        for i in deps
        if top(i) in LAYER and LAYER[top(i)] > LAYER[top(m)]
    ]
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    # config must not reach the search layer, even lazily (it used to, through tune.space).
    assert not {i for i in GRAPH["distgan.config"] if top(i) == "tune"}
    circles = []

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(GRAPH.get(module, ())):
            if dep in path:
                circles.append(" -> ".join(path[path.index(dep) :] + [dep]))
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(module)

    done: set[str] = set()
    for module in GRAPH:
        if module not in done:
            visit(module, [module])
    assert not circles, "\n".join(sorted(set(circles)))


# --- the wheel -------------------------------------------------------------------------------

PACKAGE_DATA = {  # files that are not Python but that distgan needs at run time
    "distgan/data/embedded/manifest.json",
    "distgan/data/embedded/shard-00000.parquet",
    "distgan/metrics/weights/fashion-mnist.pt",
    "distgan/metrics/weights/fashion-mnist.json",
    "distgan/metrics/weights/fashion-mnist-b.pt",
    "distgan/metrics/weights/fashion-mnist-b.json",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel .`` of a copy of the files git would commit (the checkout is not written)."""
    tmp = tmp_path_factory.mktemp("wheel")
    tracked = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard",
         "pyproject.toml", "README.md", "distgan"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(lambda rel: (REPO / rel).is_file(), tracked):
        (tmp / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / "src" / rel).write_bytes((REPO / rel).read_bytes())
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "dist"), str(tmp / "src")],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (found,) = (tmp / "dist").glob("distgan-*.whl")
    return found


def test_the_wheel_holds_the_package_data_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = PACKAGE_DATA - names
    assert not missing, f"package data missing from the wheel: {sorted(missing)}"
    modules = {p.relative_to(REPO).as_posix() for p in PACKAGE.rglob("*.py")}
    assert not modules - names, sorted(modules - names)
    assert not {n for n in names if n.startswith(("tests/", "jobs/", "benchmarks/", "src/"))}


def test_the_wheel_runs_in_a_fresh_environment_outside_the_checkout(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # distgan's dependencies (torch, Ray, ...) come from the test's environment, read as a plain
    # path: its .pth files (the editable distgan among them) are not run from there.
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    work = tmp_path / "elsewhere"
    (work / "jobs").mkdir(parents=True)
    (work / "jobs" / "quickstart.yaml").write_bytes(
        (REPO / "jobs" / "quickstart.yaml").read_bytes()
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env['PATH']}"

    def run(*argv: str, cwd: Path = work) -> str:
        done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout

    where = "import distgan; print(distgan.__file__)"
    assert run(str(python), "-c", where).startswith(site)  # the wheel's copy, not the checkout
    dry = run(str(env_dir / "bin" / "distgan"), "train", "jobs/quickstart.yaml", "--dry-run")
    assert "10,000 images" in dry or "embedded" in dry, dry
    assert "fit-features" in run(str(env_dir / "bin" / "distgan"), "eval", "fit-features", "--help")
    assert not (work / "runs").exists()  # a dry run writes nothing
    # From the checkout's root, Python puts the current folder first: its distgan/ is imported.
    assert run(str(python), "-c", where, cwd=REPO).startswith(str(PACKAGE))


def test_the_command_line_starts_without_torch():
    """``distgan --help``, a mistyped verb and the job verbs (``jobs``, ``status``, ``logs``,
    ``submit``) answer in a quarter of a second: building the parser imports no verb's heavy
    libraries, which each verb imports when it runs (2.4 s when the parser imported them)."""
    probe = (
        "import sys; from distgan.cli import build_parser; build_parser(); "
        "print(sorted({'torch', 'matplotlib', 'ray', 'PIL'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout == "[]\n", done.stdout
