"""Paired image sets in the layouts they are downloaded in, paired without renaming a file.

``pair_layout(name, root)`` lists ``root`` (a folder or ``s3://`` prefix) and pairs each degraded image
with its reference by the rule of layout ``name``. Benchmarks (``evaluate.py --benchmark``) and training
sets (``ingest.py --layout``) share the rules:

- ``rain100l`` (test and train): PReNet's ``rain-NNN.png`` beside ``norain-NNN.png`` (in one folder, or in
  sibling ``rain/``|``rainy/``|``input/`` and ``norain/``|``gt/``|``target/`` folders, as PromptIR's
  RainTrainL), or ``rain/`` and ``norain/``, or ``input/`` and ``target/``; pairs by ``NNN``. Task ``rain``.
- ``cbsd68``: a folder of clean images (at the root, or under ``original_png/``), noised at each sigma
  of ``sigmas`` when read (``test_noise``). One task per sigma: ``noise_15``, ``noise_25``, ``noise_50``.
- ``sots-outdoor``, ``sots-indoor``, ``ots``, ``its``: RESIDE. A hazy image ``<scene>_<beta>_<A>.ext`` (indoor:
  ``<scene>_<k>[_<beta>].ext``), in any folder, against the clear ``<scene>.ext`` in a folder named ``gt/``,
  ``clear/`` or ``original/`` (PromptIR's OTS: ``synthetic/part*/`` and ``original/``); every hazy version of
  a scene is a pair. Task ``haze``. Indoor clear images may carry a 10-pixel white frame that the hazy ones
  lack; it is cropped off when read.
- ``gopro``: ``<scene>/blur/`` against ``<scene>/sharp/`` at any depth (AdaIR's flat ``blur/`` and ``sharp/``
  too), or ``input/`` and ``target/``. Task ``blur``.
- ``lol``: LOL v1, ``low/`` against ``high/`` (AdaIR's ``gt/``), at the root or under ``eval15/`` or
  ``our485/``. Task ``low_light``.
- ``cdd11``: OneRestore's CDD-11: each class folder present (``haze``, ``low_haze_rain``, ...) against
  ``clear/``, by file name. One task per class.
- ``weatherbench``: CPLIR's WeatherBench test set, ``<task>/input/`` against ``<task>/target/`` for each of
  ``rain``, ``haze`` and ``snow`` present.
- ``paired``: ``<task>/input/`` against ``<task>/target/`` (also ``lq/``|``degraded/`` and ``gt/``|``clean/``),
  or ``input/`` and ``target/`` at the root for one task named after it; by relative path without extension.
- ``clean``: clean images only (BSD400 + WED for PromptIR's denoising), at any depth, noised in training.
  Task ``noise``.

Pairing is by names only; ``read_pair`` decodes a unit. A degraded image without a reference (or the
reverse) is skipped and reported by name. A root that has none of the layout's folders or names is one
error naming what was expected and what is there.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Callable

import numpy as np

from degradation_synth import rng_for

from ..core import storage
from ..core.errors import DataError
from . import sources

# Skip reasons, as in manifests and report.json: a degraded image without its reference and the reverse, a
# pair of different sizes, and a second file under one name (a.png beside a.jpg: which pairs would be a guess).
NO_TARGET, NO_INPUT, SIZE_MISMATCH, SAME_NAME = "no_target", "no_input", "size_mismatch", "same_name_as_another"

SIGMAS = (15, 25, 50)  # CBSD68's noise levels in the literature's tables
TEST_NOISE_SEED = 0  # as PromptIR's test.py
RESIDE_INDOOR_FRAME = 10  # pixels of white frame on each side of RESIDE indoor's clear images
WEATHERBENCH_TASKS = ("rain", "haze", "snow")
INPUT_FOLDERS = ("input", "lq", "degraded")
TARGET_FOLDERS = ("target", "gt", "clean")

CDD11_CLASSES = ("haze", "haze_rain", "haze_snow", "low", "low_haze", "low_haze_rain", "low_haze_snow",
                 "low_rain", "low_snow", "rain", "snow")


@dataclass
class Pairing:
    """What a layout found: units (``task``, ``stem``, ``input`` and ``target`` URIs; ``sigma`` and ``frame``
    where the layout needs them; no ``input`` for clean images) and what could not be paired."""

    units: list[dict[str, str]] = field(default_factory=list)
    skipped: dict[str, list[str]] = field(default_factory=dict)


class _Files:
    """The image files under a root, as POSIX paths relative to it."""

    def __init__(self, root: str) -> None:
        storage.check_readable(root)
        self.root = root
        self.paths = [PurePosixPath(storage.relative(info.uri, root).replace("\\", "/"))
                      for info in storage.list_files(root, sources.IMAGE_SUFFIXES)]

    def folders(self) -> list[str]:
        """Top-level entries, for errors that say what was found."""
        return sorted({path.parts[0] + ("/" if len(path.parts) > 1 else "") for path in self.paths})[:12]

    def under(self, folder: PurePosixPath) -> dict[str, PurePosixPath]:
        """Files directly in ``folder``, by name without extension."""
        return {path.stem: path for path in self.paths if path.parent == folder}

    def has_folder(self, folder: PurePosixPath) -> bool:
        return any(path.parent == folder for path in self.paths)

    def uri(self, path: PurePosixPath) -> str:
        return storage.join(self.root, *path.parts)


def _expected(name: str, files: _Files, what: str) -> DataError:
    found = ", ".join(files.folders()) or "no images"
    return DataError(f"{files.root}: not a {name} layout: expected {what}; found {found}")


def _match(pairing: Pairing, files: _Files, task: str, inputs: dict[str, PurePosixPath],
           targets: dict[str, PurePosixPath], shared_targets: bool = False) -> None:
    """Pair ``inputs`` with ``targets`` by key; the unmatched go to ``skipped`` (targets only when each belongs
    to one input, not when several classes share one ``clear/``)."""
    for key in sorted(inputs):
        if key in targets:
            pairing.units.append({"task": task, "stem": key, "input": files.uri(inputs[key]),
                                  "target": files.uri(targets[key])})
        else:
            pairing.skipped.setdefault(NO_TARGET, []).append(str(inputs[key]))
    if not shared_targets:
        for key in sorted(set(targets) - set(inputs)):
            pairing.skipped.setdefault(NO_INPUT, []).append(str(targets[key]))


def _input_target(files: _Files, base: PurePosixPath) -> tuple[dict, dict] | None:
    if files.has_folder(base / "input") and files.has_folder(base / "target"):
        return files.under(base / "input"), files.under(base / "target")
    return None


# Folders that hold one side of Rain100L's pairs: PReNet's rain/norain, PromptIR's rainy/gt, and input/target.
_RAIN_SIDES = ("rain", "norain", "rainy", "gt", "input", "target")


def _rain_key(path: PurePosixPath, prefix: str) -> str:
    """``rain-001`` and ``norain-001`` share key ``001``, in one folder or in sibling side folders."""
    parent = path.parent.parent if path.parent.name in _RAIN_SIDES else path.parent
    number = path.stem[len(prefix):]
    return number if str(parent) == "." else f"{parent}/{number}"


def _rain100l(files: _Files) -> Pairing:
    pairing = Pairing()
    inputs = {_rain_key(p, "rain-"): p for p in files.paths if p.stem.startswith("rain-")}
    targets = {_rain_key(p, "norain-"): p for p in files.paths if p.stem.startswith("norain-")}
    if inputs or targets:  # PReNet's names
        _match(pairing, files, "rain", inputs, targets)
        return pairing
    root = PurePosixPath(".")
    for degraded, clean in (("rain", "norain"), ("input", "target")):
        if files.has_folder(root / degraded) and files.has_folder(root / clean):
            _match(pairing, files, "rain", files.under(root / degraded), files.under(root / clean))
            return pairing
    raise _expected("rain100l", files, "rain-NNN.png beside norain-NNN.png, rain/ and norain/, or input/ and target/")


def gaussian_noise(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """PromptIR's noise, in training and in its test set: ``clip(clean + sigma * N(0, 1), 0, 255)`` truncated
    to uint8."""
    return np.clip(clean + rng.standard_normal(clean.shape) * sigma, 0, 255).astype(np.uint8)


def test_noise(clean: np.ndarray, sigma: int, name: str) -> np.ndarray:
    """CBSD68's test noise. PromptIR draws it from numpy's global state in file order; we from a generator
    seeded by (``TEST_NOISE_SEED``, sigma, image name), so any subset or order of images gets the same noise."""
    return gaussian_noise(clean, sigma, rng_for(TEST_NOISE_SEED, "cbsd68", sigma, name))


def _cbsd68(files: _Files, sigmas: tuple[int, ...]) -> Pairing:
    clean = next((files.under(folder) for folder in (PurePosixPath("."), PurePosixPath("original_png"))
                  if files.has_folder(folder)), None)
    if not clean:
        raise _expected("cbsd68", files, "clean images at the root or under original_png/")
    pairing = Pairing()
    for sigma in sigmas:
        pairing.units += [{"task": f"noise_{sigma}", "stem": stem, "target": files.uri(path), "sigma": str(sigma)}
                          for stem, path in sorted(clean.items())]
    return pairing


def _clean(files: _Files) -> Pairing:
    if not files.paths:
        raise _expected("clean", files, "clean images")
    return Pairing([{"task": "noise", "stem": str(path.with_suffix("")), "target": files.uri(path)}
                    for path in sorted(files.paths)])


_CLEAR_FOLDERS = ("gt", "GT", "clear", "original")
_HAZY_NAME = re.compile(r"^(\d+)_[\d.]+(_[\d.]+)*$")  # <scene>_<beta>_<A> (outdoor), <scene>_<k>_<beta> (indoor)


def _reside(files: _Files, name: str, frame: int = 0) -> Pairing:
    targets = {path.stem: path for path in files.paths if path.parent.name in _CLEAR_FOLDERS}
    hazy = sorted(path for path in files.paths if path.parent.name not in _CLEAR_FOLDERS
                  and _HAZY_NAME.match(path.stem))
    if not targets or not hazy:
        raise _expected(name, files, "hazy <scene>_<beta>_<A>.ext images and gt/, clear/ or original/ <scene>.ext")
    pairing = Pairing()
    used = set()
    for path in hazy:
        scene = _HAZY_NAME.match(path.stem).group(1)
        if scene in targets:
            used.add(scene)
            unit = {"task": "haze", "stem": path.stem, "input": files.uri(path),
                    "target": files.uri(targets[scene])}
            pairing.units.append(unit | ({"frame": str(frame)} if frame else {}))
        else:
            pairing.skipped.setdefault(NO_TARGET, []).append(str(path))
    for scene in sorted(set(targets) - used):
        pairing.skipped.setdefault(NO_INPUT, []).append(str(targets[scene]))
    return pairing


def _scene_key(path: PurePosixPath) -> str:
    """``<scene>/blur/<name>`` and ``<scene>/sharp/<name>`` share key ``<scene>/<name>``."""
    scene = path.parent.parent
    return path.stem if str(scene) == "." else f"{scene}/{path.stem}"


def _gopro(files: _Files) -> Pairing:
    pairing = Pairing()
    flat = _input_target(files, PurePosixPath("."))
    if flat:
        _match(pairing, files, "blur", *flat)
        return pairing
    inputs = {_scene_key(p): p for p in files.paths if p.parent.name == "blur"}
    targets = {_scene_key(p): p for p in files.paths if p.parent.name == "sharp"}
    if not inputs:
        raise _expected("gopro", files, "<scene>/blur/ and <scene>/sharp/, or input/ and target/")
    _match(pairing, files, "blur", inputs, targets)
    return pairing


def _lol(files: _Files) -> Pairing:
    for base in (PurePosixPath("."), PurePosixPath("eval15"), PurePosixPath("our485")):
        for clean in ("high", "gt"):
            if files.has_folder(base / "low") and files.has_folder(base / clean):
                pairing = Pairing()
                _match(pairing, files, "low_light", files.under(base / "low"), files.under(base / clean))
                return pairing
    raise _expected("lol", files, "low/ and high/ (or gt/), at the root or under eval15/ or our485/")


def _cdd11(files: _Files) -> Pairing:
    root = PurePosixPath(".")
    classes = [name for name in CDD11_CLASSES if files.has_folder(root / name)]
    if not files.has_folder(root / "clear") or not classes:
        raise _expected("cdd11", files, f"clear/ beside one or more of {', '.join(c + '/' for c in CDD11_CLASSES)}")
    pairing = Pairing()
    targets = files.under(root / "clear")
    for name in classes:
        _match(pairing, files, name, files.under(root / name), targets, shared_targets=True)
    return pairing


def _weatherbench(files: _Files) -> Pairing:
    tasks = [task for task in WEATHERBENCH_TASKS if _input_target(files, PurePosixPath(task))]
    if not tasks:
        raise _expected("weatherbench", files, "rain/, haze/ or snow/, each with input/ and target/")
    pairing = Pairing()
    for task in tasks:
        _match(pairing, files, task, *_input_target(files, PurePosixPath(task)))
    return pairing


def _paired(files: _Files) -> Pairing:
    # (task, side, stem) -> path; a task folder is the parent of input/ or target/, or the root itself.
    found: dict[tuple[str, str, str], PurePosixPath] = {}
    duplicates = []
    for path in files.paths:
        for depth, part in enumerate(path.parts[:min(2, len(path.parts) - 1)]):
            side = "input" if part in INPUT_FOLDERS else "target" if part in TARGET_FOLDERS else None
            if side:
                task = path.parts[0] if depth == 1 else PurePosixPath(files.root.rstrip("/")).name
                stem = str(PurePosixPath(*path.parts[depth + 1:]).with_suffix(""))
                if (task, side, stem) in found:
                    duplicates.append(str(path))
                else:
                    found[(task, side, stem)] = path
                break
    if not found:
        raise _expected("paired", files, "<task>/input/ and <task>/target/ folders, or input/ and target/")
    pairing = Pairing(skipped={SAME_NAME: duplicates} if duplicates else {})
    for task in sorted({task for task, _, _ in found}):
        sides = [{stem: path for (t, s, stem), path in found.items() if t == task and s == side}
                 for side in ("input", "target")]
        _match(pairing, files, task, *sides)
    return pairing


LAYOUTS: dict[str, Callable[[_Files], Pairing]] = {
    "cbsd68": partial(_cbsd68, sigmas=SIGMAS), "rain100l": _rain100l,
    "sots-outdoor": partial(_reside, name="sots-outdoor"),
    "sots-indoor": partial(_reside, name="sots-indoor", frame=RESIDE_INDOOR_FRAME),
    "ots": partial(_reside, name="ots"), "its": partial(_reside, name="its", frame=RESIDE_INDOOR_FRAME),
    "gopro": _gopro, "lol": _lol, "cdd11": _cdd11, "weatherbench": _weatherbench, "paired": _paired,
    "clean": _clean}
BENCHMARK_LAYOUTS = ("cbsd68", "rain100l", "sots-outdoor", "sots-indoor", "gopro", "lol", "cdd11", "weatherbench")
TRAINING_LAYOUTS = ("rain100l", "ots", "its", "gopro", "lol", "cdd11", "clean", "paired")


def pair_layout(name: str, root: str, sigmas: tuple[int, ...] = SIGMAS) -> Pairing:
    """Pair the set ``name`` found under ``root`` (``sigmas``: CBSD68's noise levels); see the module docstring.

    Raises:
        StorageError: ``root`` cannot be read.
        DataError: ``root`` does not hold ``name``'s layout (the message says what was expected and found).
    """
    if name not in LAYOUTS:
        raise DataError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    files = _Files(root)
    return _cbsd68(files, tuple(sigmas)) if name == "cbsd68" else LAYOUTS[name](files)


@dataclass(frozen=True)
class ReadPair:
    """A unit read: its images, or why it gave none and the file at fault. ``degraded`` is None for a clean
    image without test noise (the ``clean`` layout, noised in training)."""

    degraded: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    clean: np.ndarray | None = None
    skip_reason: str | None = None
    file: str | None = None  # the URI at fault
    converted_from: str | None = None
    target_sha256: str = ""  # of the reference file's bytes: the content that a pair's split is decided by


def read_pair(unit: dict[str, str], *, max_pixels: int, min_side: int) -> ReadPair:
    """Decode a unit of ``pair_layout``: noise a CBSD68 image, crop an indoor frame, refuse a size mismatch."""
    images, converted, digest = {}, [], ""
    for key in ("input", "target"):
        if key not in unit:
            continue
        data = storage.read_bytes(unit[key])
        if key == "target":
            digest = hashlib.sha256(data).hexdigest()
        decoded = sources.decode(data, max_pixels=max_pixels, min_side=min_side)
        if decoded.image is None:
            return ReadPair(skip_reason=decoded.skip_reason, file=unit[key])
        images[key] = decoded.image
        converted += [decoded.converted_from] if decoded.converted_from else []
    clean, degraded = images["target"], images.get("input")
    if "sigma" in unit:
        degraded = test_noise(clean, int(unit["sigma"]), unit["stem"])
    frame = int(unit.get("frame", 0))
    if degraded is not None and frame and clean.shape[:2] == (degraded.shape[0] + 2 * frame,
                                                               degraded.shape[1] + 2 * frame):
        clean = clean[frame:-frame, frame:-frame]  # RESIDE indoor's white frame
    if degraded is not None and degraded.shape != clean.shape:
        return ReadPair(skip_reason=SIZE_MISMATCH, file=unit.get("input", unit["target"]))
    return ReadPair(degraded, clean, converted_from="+".join(converted) or None, target_sha256=digest)
