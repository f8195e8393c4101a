"""What restoring runs with: the settings of ``restoring.restore_images`` and the config of ``restore.py``,
validated before torch or MLflow load."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ..core.config import Frozen, Tile
from ..core.tracking import resolve_tracking_uri

DEFAULT_MODEL = "models:/cpl-restore@champion"

HELP = """\
Restore images with a registered model (default: the champion) or any model reference.

--input is a file, a folder or an s3:// prefix (JPEG, PNG, WebP, BMP, TIFF; subfolders kept); --output is a
folder or prefix, or a file name for a single input. Large images are restored in overlapping tiles.
Outputs are written atomically; ones already there are kept unless --overwrite, so re-running a killed
job continues it. A corrupt input in a folder is reported and skipped. Tracking (for models:/ references):
MLFLOW_TRACKING_URI, else outputs/mlflow.db.

Exit status 0 when every readable image was restored (skips are listed on stderr); 2 with one line on
stderr when nothing could be done: unknown model or alias, unreadable input, or a single bad file.
"""


class RestoreSettings(Frozen):
    """How images are restored and written."""

    tile: Tile = 512  # larger images are restored in overlapping tiles of this side; 0: whole images
    format: Literal["png", "jpg", "webp", "tif"] = "png"  # the encoding of outputs named by their input
    overwrite: bool = False  # restore again images whose output exists
    workers: int = Field(0, ge=0)  # Ray actors; 0: in this process
    use_gpu: bool = False
    progress: bool = True  # a progress bar over the files


class RestoreConfig(Frozen):
    """``restore.py``: which model, which images, where the results go."""

    model: str = DEFAULT_MODEL
    input: str  # an image file, a folder or an s3:// prefix
    output: str  # a folder or s3:// prefix, or a file name for a single input
    restore: RestoreSettings = RestoreSettings()


def plan(config: RestoreConfig, options: Any = None) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config: the tracking store a models:/ reference resolves in."""
    return {"plan": {"tracking_uri": resolve_tracking_uri()}}
