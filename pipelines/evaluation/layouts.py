"""The literature's benchmarks in the layouts they are downloaded in, paired without renaming a file.

``pair_layout(name, root)`` lists ``root`` (a folder or ``s3://`` prefix) and pairs each degraded image
with its reference by the rule of benchmark ``name``:

- ``rain100l``: PReNet's ``rain-NNN.png`` beside ``norain-NNN.png`` (in any one folder), or ``rain/`` and
  ``norain/`` folders, or PromptIR's ``input/`` and ``target/``; pairs by ``NNN``. Task ``rain``.
- ``cbsd68``: a folder of clean images (at the root, or under ``original_png/``), noised at each sigma
  of ``sigmas`` when read (``test_noise``). One task per sigma: ``noise_15``, ``noise_25``, ``noise_50``.
- ``sots-outdoor``, ``sots-indoor``: RESIDE SOTS, ``hazy/NNNN_beta_A.ext`` (indoor: ``NNNN_k.ext``) against
  ``gt/`` (or ``clear/``) ``NNNN.ext``; every hazy version of a scene is a pair. Task ``haze``. Indoor's
  clear images carry a 10-pixel white frame that the hazy ones lack; it is cropped off when read.
- ``gopro``: the GoPro test set, ``<scene>/blur/`` against ``<scene>/sharp/``, or ``input/`` and
  ``target/``. Task ``blur``.
- ``lol``: LOL v1, ``low/`` against ``high/``, at the root or under ``eval15/``. Task ``low_light``.
- ``cdd11``: OneRestore's CDD-11 test set: each class folder present (``haze``, ``low_haze_rain``, ...) against
  ``clear/``, by file name. One task per class.
- ``weatherbench``: CPLIR's WeatherBench test set, ``<task>/input/`` against ``<task>/target/`` for each of
  ``rain``, ``haze`` and ``snow`` present.

Pairing is by names only; images are decoded when scored. A degraded image without a reference (or the
reverse) is skipped and reported by name. A root that has none of the layout's folders or names is one
error naming what was expected and what is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath
from typing import Callable

import numpy as np

from degradation_synth import rng_for

from ..core import storage
from ..core.errors import DataError
from ..data import sources

# Skip reasons, as in report.json: a degraded image without its reference, and the reverse.
NO_TARGET, NO_INPUT = "no_target", "no_input"

SIGMAS = (15, 25, 50)  # CBSD68's noise levels in the literature's tables
TEST_NOISE_SEED = 0  # as PromptIR's test.py
SOTS_INDOOR_FRAME = 10  # pixels of white frame on each side of SOTS indoor's clear images
WEATHERBENCH_TASKS = ("rain", "haze", "snow")

CDD11_CLASSES = ("haze", "haze_rain", "haze_snow", "low", "low_haze", "low_haze_rain", "low_haze_snow",
                 "low_rain", "low_snow", "rain", "snow")


@dataclass
class Pairing:
    """What a layout found: ``units`` for ``benchmarks._read_pair`` and what could not be paired."""

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


def _rain_key(path: PurePosixPath, prefix: str) -> str:
    """``rain-001`` and ``norain-001`` share key ``001``, in one folder or in sibling rain/ and norain/."""
    parent = path.parent.parent if path.parent.name in ("rain", "norain") else path.parent
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


def test_noise(clean: np.ndarray, sigma: int, name: str) -> np.ndarray:
    """PromptIR's test noise: ``clip(clean + sigma * N(0, 1), 0, 255)`` truncated to uint8, as its test set
    does. Its draws come from numpy's global state in file order; ours from a generator seeded by
    (``TEST_NOISE_SEED``, sigma, image name), so any subset or order of images gets the same noise."""
    noise = rng_for(TEST_NOISE_SEED, "cbsd68", sigma, name).standard_normal(clean.shape)
    return np.clip(clean + noise * sigma, 0, 255).astype(np.uint8)


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


def _sots(files: _Files, frame: int = 0) -> Pairing:
    root = PurePosixPath(".")
    clean = next((root / name for name in ("gt", "clear", "GT") if files.has_folder(root / name)), None)
    if not files.has_folder(root / "hazy") or clean is None:
        raise _expected("SOTS", files, "hazy/NNNN_beta_A.ext and gt/ (or clear/) NNNN.ext")
    pairing = Pairing()
    targets = files.under(clean)
    used = set()
    for stem, path in sorted(files.under(root / "hazy").items()):
        scene = stem.split("_", 1)[0]
        if scene in targets:
            used.add(scene)
            unit = {"task": "haze", "stem": stem, "input": files.uri(path), "target": files.uri(targets[scene])}
            pairing.units.append(unit | ({"frame": str(frame)} if frame else {}))
        else:
            pairing.skipped.setdefault(NO_TARGET, []).append(str(path))
    for scene in sorted(set(targets) - used):
        pairing.skipped.setdefault(NO_INPUT, []).append(str(targets[scene]))
    return pairing


def _gopro(files: _Files) -> Pairing:
    pairing = Pairing()
    flat = _input_target(files, PurePosixPath("."))
    if flat:
        _match(pairing, files, "blur", *flat)
        return pairing
    scenes = sorted({path.parts[0] for path in files.paths if len(path.parts) == 3 and path.parts[1] == "blur"})
    if not scenes:
        raise _expected("gopro", files, "<scene>/blur/ and <scene>/sharp/, or input/ and target/")
    for scene in scenes:
        inputs = {f"{scene}/{k}": v for k, v in files.under(PurePosixPath(scene, "blur")).items()}
        targets = {f"{scene}/{k}": v for k, v in files.under(PurePosixPath(scene, "sharp")).items()}
        _match(pairing, files, "blur", inputs, targets)
    return pairing


def _lol(files: _Files) -> Pairing:
    for base in (PurePosixPath("."), PurePosixPath("eval15")):
        if files.has_folder(base / "low") and files.has_folder(base / "high"):
            pairing = Pairing()
            _match(pairing, files, "low_light", files.under(base / "low"), files.under(base / "high"))
            return pairing
    raise _expected("lol", files, "low/ and high/, at the root or under eval15/")


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


LAYOUTS: dict[str, Callable[..., Pairing]] = {
    "cbsd68": _cbsd68, "rain100l": _rain100l, "sots-outdoor": _sots,
    "sots-indoor": partial(_sots, frame=SOTS_INDOOR_FRAME), "gopro": _gopro, "lol": _lol, "cdd11": _cdd11,
    "weatherbench": _weatherbench}


def pair_layout(name: str, root: str, sigmas: tuple[int, ...] = SIGMAS) -> Pairing:
    """Pair the benchmark ``name`` found under ``root`` (``sigmas``: CBSD68's noise levels); see the module
    docstring.

    Raises:
        StorageError: ``root`` cannot be read.
        DataError: ``root`` does not hold ``name``'s layout (the message says what was expected and found).
    """
    if name not in LAYOUTS:
        raise DataError(f"unknown benchmark layout {name!r}; known: {', '.join(LAYOUTS)}")
    files = _Files(root)
    return _cbsd68(files, tuple(sigmas)) if name == "cbsd68" else LAYOUTS[name](files)
