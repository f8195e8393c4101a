"""Code versions: which edits change which version, on a copy of the project's source."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from pipelines.core import provenance

from ..conftest import REPO_ROOT

PACKAGES = ("cpl_model", "degradation_synth", "pipelines")


@pytest.fixture
def source_copy(tmp_path, monkeypatch) -> Path:
    """The three packages' Python files copied under ``tmp_path``, which the versions then digest."""
    for package in PACKAGES:
        for path in (REPO_ROOT / package).rglob("*.py"):
            target = tmp_path / path.relative_to(REPO_ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    monkeypatch.setattr(provenance, "_ROOT", tmp_path)
    versions = (provenance.code_version, provenance.synthesis_code_version)
    for version in versions:
        version.cache_clear()
    yield tmp_path
    for version in versions:
        version.cache_clear()


def versions() -> tuple[str, str]:
    provenance.code_version.cache_clear()
    provenance.synthesis_code_version.cache_clear()
    return provenance.code_version(), provenance.synthesis_code_version()


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_versions_are_the_package_version_and_a_digest():
    for version in (provenance.code_version(), provenance.synthesis_code_version()):
        assert re.fullmatch(r".+\+[0-9a-f]{12}", version)
    assert provenance.code_version() != provenance.synthesis_code_version()


def test_a_copy_of_the_same_source_has_the_same_versions(source_copy, monkeypatch):
    copied = versions()
    monkeypatch.setattr(provenance, "_ROOT", REPO_ROOT)
    assert versions() == copied


def test_network_and_training_code_change_only_the_code_version(source_copy):
    code, synthesis = versions()
    append(source_copy / "cpl_model" / "blocks.py", "# an edit\n")
    assert versions()[0] != code and versions()[1] == synthesis
    code = versions()[0]
    append(source_copy / "pipelines" / "training" / "driver.py", "# an edit\n")
    assert versions()[0] != code and versions()[1] == synthesis


@pytest.mark.parametrize("edited", ["degradation_synth/ops/haze.py", "pipelines/data/synthesis.py",
                                    "pipelines/data/shards.py", "pipelines/data/sources.py"])
def test_data_code_changes_both_versions(source_copy, edited):
    code, synthesis = versions()
    append(source_copy / edited, "# an edit\n")
    assert versions()[0] != code and versions()[1] != synthesis


def test_a_new_file_changes_the_version_of_its_package(source_copy):
    code, synthesis = versions()
    (source_copy / "degradation_synth" / "extra.py").write_text("x = 1\n")
    assert versions()[0] != code and versions()[1] != synthesis


def test_the_digest_changes_with_any_byte_of_the_files_or_the_library_versions(tmp_path):
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    files[0].write_text("x = 1\n")
    files[1].write_text("y = 2\n")
    digest = provenance.files_digest(files, extra="opencv 5.0")
    assert provenance.files_digest(files, extra="opencv 5.0") == digest
    assert provenance.files_digest(files, extra="opencv 5.1") != digest
    files[1].write_text("y = 3\n")
    assert provenance.files_digest(files, extra="opencv 5.0") != digest
