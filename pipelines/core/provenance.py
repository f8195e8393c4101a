"""Which code made an artefact: ``<package version>+<digest>`` versions of the project's source.

The package version alone does not change between commits, and a job submitted with ``ray job submit``
runs from an uploaded working directory without ``.git``, so the versions digest the source files
themselves (and the versions of the libraries that shape the results).

- ``synthesis_code_version``: the code that decides a dataset pair's bytes. Recorded in every dataset
  manifest; the same version, config and source give the same bytes.
- ``code_version``: all of the project's code. Recorded by training runs and evaluation reports, whose
  results depend on the network, the training and evaluation code and the data code alike.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding the three packages


@functools.cache
def synthesis_code_version() -> str:
    """All of ``degradation_synth``, this package's decoding, cropping and shard writing, and the numpy
    and OpenCV versions."""
    files = _sources("degradation_synth") + [_ROOT / "pipelines" / "data" / name
                                             for name in ("sources.py", "synthesis.py", "shards.py")]
    return _version(files, "numpy", "cv2")


@functools.cache
def code_version() -> str:
    """All of ``cpl_model``, ``degradation_synth`` and ``pipelines``, and the torch, numpy and OpenCV
    versions."""
    return _version(_sources("cpl_model") + _sources("degradation_synth") + _sources("pipelines"),
                    "torch", "numpy", "cv2")


def _version(files: list[Path], *libraries: str) -> str:
    """``<package version>+<digest>`` of ``files`` and the versions of the named libraries."""
    extra = ", ".join(f"{name} {importlib.import_module(name).__version__}" for name in libraries)
    return f"{_package_version()}+{files_digest(files, extra=extra)}"


def files_digest(paths: list[Path], extra: str = "") -> str:
    """12 hex digits of SHA-256 over ``extra`` and each file's name and bytes, in the given order."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        content = path.read_bytes()
        digest.update(f"{path.name}:{len(content)}:".encode())
        digest.update(content)
    return digest.hexdigest()[:12]


def _sources(package: str) -> list[Path]:
    return sorted((_ROOT / package).rglob("*.py"))


def _package_version() -> str:
    try:
        return version("cpl-restore")
    except PackageNotFoundError:
        return "unknown"
