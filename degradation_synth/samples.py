"""Clean sample photos that ship inside the scikit-image, matplotlib and scikit-learn wheels.

They need no download, so the preview, the quickstart and the tests can use real photographs on
machines with no internet. Install them with the ``samples`` extra. The files are located through
each package's import spec (nothing is imported) and decoded with OpenCV.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

# (package, path inside it, name). Natural colour photographs only; all are public domain, CC0 or
# CC-BY (scikit-learn's two Flickr photos) as their packages state.
_PHOTOS = (
    ("skimage", "data/astronaut.png", "astronaut"),
    ("skimage", "data/chelsea.png", "chelsea"),
    ("skimage", "data/coffee.png", "coffee"),
    ("skimage", "data/rocket.jpg", "rocket"),
    ("skimage", "data/motorcycle_left.png", "motorcycle"),
    ("skimage", "data/hubble_deep_field.jpg", "hubble"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg", "grace_hopper"),
    ("sklearn", "datasets/images/china.jpg", "china"),
    ("sklearn", "datasets/images/flower.jpg", "flower"),
)


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def sample_photo_paths() -> dict[str, Path]:
    """Name -> file of every sample photo whose package is installed."""
    found = {}
    for package, relative, name in _PHOTOS:
        root = _package_dir(package)
        if root is not None and (root / relative).is_file():
            found[name] = root / relative
    return found


def load_sample_photos() -> dict[str, np.ndarray]:
    """Name -> (H, W, 3) uint8 RGB photo.

    Raises:
        RuntimeError: when none of the packages is installed (install the ``samples`` extra).
    """
    paths = sample_photo_paths()
    if not paths:
        raise RuntimeError(
            "no sample photos found: install scikit-image, matplotlib or scikit-learn "
            "(pip install 'cpl-restore[samples]')"
        )
    return {name: cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for name, path in paths.items()}
