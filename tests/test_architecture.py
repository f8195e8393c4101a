"""Who may import whom (docs/architecture.md), read from every import statement, including those inside
functions: the stages of ``pipelines`` import one way, and the two libraries know nothing of the pipelines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("synthesize", "ingest", "train", "evaluate", "promote", "restore", "import_weights")

# The rooms of pipelines/ and the rooms each may import (itself always).
ROOMS = {
    "core": set(),
    "data": {"core"},
    "evaluation": {"core", "data"},
    "registry": {"core", "data", "evaluation"},
    "training": {"core", "data", "registry"},
    "serving": {"core", "data"},  # data: decoding and listing images
}
# Third-party packages a library must not import.
FORBIDDEN = {
    "degradation_synth": {"torch", "ray", "deepspeed", "mlflow", "boto3", "pyarrow", "pipelines", "cpl_model"},
    "cpl_model": {"ray", "deepspeed", "mlflow", "boto3", "pyarrow", "pipelines"},
}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved against its package)."""
    package = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)  # `from pipelines import data`
    return names


def room_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "pipelines" and parts[1] in ROOMS else None


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_a_room_of_pipelines_imports_only_the_rooms_below_it(room):
    bad = []
    for path in sorted((REPO_ROOT / "pipelines" / room).rglob("*.py")):
        for module in imported_modules(path):
            other = room_of(module)
            if other and other != room and other not in ROOMS[room]:
                bad.append(f"{path.relative_to(REPO_ROOT)} imports {module}")
            if module.split(".")[:2] in (["pipelines", name] for name in ENTRY_POINTS):
                bad.append(f"{path.relative_to(REPO_ROOT)} imports the entry point {module}")
    assert not bad, "\n".join(bad)


def test_pipelines_holds_the_entry_points_and_its_rooms_only():
    files = {path.name for path in (REPO_ROOT / "pipelines").glob("*.py")}
    folders = {path.name for path in (REPO_ROOT / "pipelines").iterdir()
               if path.is_dir() and path.name != "__pycache__"}
    assert files == {"__init__.py"} | {f"{name}.py" for name in ENTRY_POINTS}
    assert folders == set(ROOMS)


@pytest.mark.parametrize("library", sorted(FORBIDDEN))
def test_the_libraries_import_no_pipeline_machinery(library):
    bad = [f"{path.relative_to(REPO_ROOT)} imports {module}"
           for path in sorted((REPO_ROOT / library).rglob("*.py"))
           for module in imported_modules(path) if module.split(".")[0] in FORBIDDEN[library]]
    assert not bad, "\n".join(bad)


def test_the_import_reader_resolves_relative_imports():
    modules = imported_modules(REPO_ROOT / "pipelines" / "training" / "driver.py")  # `from ..core import storage`
    assert {"pipelines.core", "pipelines.core.storage"} <= modules
