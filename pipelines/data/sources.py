"""Clean source images: listing, decoding with explicit conversions, and packing into Parquet.

Listing millions of small objects is slow in Ray Data, so ``pack`` turns a folder or prefix into
Parquet shards of (id, size, sha256, bytes) once; every later run reads the packed table.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image  # header parsing only; decoding is OpenCV's

from degradation_synth import as_rgb_uint8

from ..core import storage
from ..core.errors import SetupError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
PACKED_MARKER = "packed.json"
SOURCE_SCHEMA = pa.schema([("id", pa.string()), ("size", pa.int64()), ("sha256", pa.string()), ("bytes", pa.binary())])

# Skip reasons, as they appear in manifests.
EMPTY, UNDECODABLE = "empty_file", "not_an_image_or_corrupt"
TOO_LARGE, TOO_SMALL = "too_many_pixels", "smaller_than_patch"


@dataclass(frozen=True)
class Decoded:
    image: np.ndarray | None  # (H, W, 3) uint8 RGB, or None when skipped
    skip_reason: str | None = None
    converted_from: str | None = None  # "grayscale", "rgba", "16-bit"... when converted explicitly


def is_packed(uri: str) -> bool:
    return storage.exists(storage.join(uri, PACKED_MARKER))


def list_sources(uri: str) -> list[storage.FileInfo]:
    """Image files under a folder or prefix, sorted. Raises ``StorageError`` if unreadable or empty."""
    storage.check_readable(uri)
    files = storage.list_files(uri, IMAGE_SUFFIXES)
    if not files:
        raise storage.StorageError(f"{uri}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return files


def source_units(uri: str) -> list[str]:
    """The units a source is read in: its image files, or the Parquet files of a packed table."""
    return [unit for unit, _ in unit_sizes(uri)]


def unit_sizes(uri: str) -> list[tuple[str, int]]:
    """Each unit of the source with its number of images, in listing order.

    A packed table's marker records its files' row counts, so planning a job over millions of packed
    images reads one small object.
    """
    if not is_packed(uri):
        return [(f.uri, 1) for f in list_sources(uri)]
    marker = json.loads(storage.read_bytes(storage.join(uri, PACKED_MARKER)))
    if "files" not in marker:  # packed before the marker listed them: read each file's footer
        return [(f.uri, _rows_of(f.uri)) for f in storage.list_files(uri, (".parquet",))]
    return [(storage.join(uri, entry["path"]), entry["rows"]) for entry in marker["files"]]


def _rows_of(parquet_uri: str) -> int:
    with storage.open_input_file(parquet_uri) as stream:
        return pq.ParquetFile(stream).metadata.num_rows


def read_unit(root: str, unit: str, start: int = 0, stop: int | None = None) -> dict[str, list]:
    """Source rows ``{"id", "sha256", "bytes"}`` of one unit of ``source_units(root)``: its images
    ``start`` to ``stop`` (exclusive; all by default). Of a packed file, only the row groups holding
    them are read."""
    if not unit.endswith(".parquet"):  # image files never have that suffix
        data = storage.read_bytes(unit)
        return {"id": [source_id(root, unit)], "sha256": [hashlib.sha256(data).hexdigest()], "bytes": [data]}
    with storage.open_input_file(unit) as stream:
        packed = pq.ParquetFile(stream)
        stop = packed.metadata.num_rows if stop is None else stop
        groups, first_row, offset = [], None, 0
        for group in range(packed.num_row_groups):
            rows = packed.metadata.row_group(group).num_rows
            if offset < stop and offset + rows > start:
                groups.append(group)
                first_row = offset if first_row is None else first_row
            offset += rows
        table = packed.read_row_groups(groups, columns=["id", "sha256", "bytes"])
    return table.slice(start - (first_row or 0), stop - start).to_pydict()


def source_id(root: str, file_uri: str) -> str:
    """A stable id: the file's path relative to the source root (a URI, or a local path in any form)."""
    return storage.relative(file_uri, root)


def listing_hash(ids_and_hashes: list[tuple[str, str]]) -> str:
    """sha256 over the sorted (id, content hash) pairs: the identity of a source snapshot."""
    digest = hashlib.sha256()
    for identifier, content in sorted(ids_and_hashes):
        digest.update(f"{identifier}\t{content}\n".encode())
    return digest.hexdigest()


def _header_pixels(data: bytes) -> int | None:
    """Width x height from the file header without decoding, where OpenCV can tell (None otherwise)."""
    try:
        with Image.open(io.BytesIO(data)) as header:
            return header.width * header.height
    except Image.DecompressionBombError:  # beyond Pillow's own limit: certainly too large
        return sys.maxsize
    except Exception:  # noqa: BLE001 - any other failure just means "unknown", decoding decides
        return None


def decode(data: bytes, *, max_pixels: int, min_side: int) -> Decoded:
    """Decode an encoded image to RGB uint8, converting grayscale, RGBA and 16-bit explicitly.

    Skips (never raises) empty files, non-images and corrupt files, images above ``max_pixels`` (checked
    from the header before decoding, against decompression bombs) and images smaller than ``min_side``.
    """
    if not data:
        return Decoded(None, EMPTY)
    pixels = _header_pixels(data)
    if pixels is not None and pixels > max_pixels:
        return Decoded(None, TOO_LARGE)
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.size == 0:
        return Decoded(None, UNDECODABLE)
    if raw.shape[0] * raw.shape[1] > max_pixels:
        return Decoded(None, TOO_LARGE)
    converted = []
    if raw.dtype != np.uint8:
        converted.append(f"{raw.dtype.itemsize * 8}-bit" if raw.dtype.kind in "ui" else str(raw.dtype))
        if raw.dtype.kind == "f":
            raw = np.clip(raw, 0.0, 1.0)
        elif raw.dtype != np.uint16:
            raw = raw.astype(np.uint16)
    channels = 1 if raw.ndim == 2 else raw.shape[2]
    if channels == 1:
        converted.append("grayscale")
    elif channels == 4:
        converted.append("rgba")
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA)
    elif channels == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    else:
        return Decoded(None, UNDECODABLE)
    image = as_rgb_uint8(raw)
    if min(image.shape[:2]) < min_side:
        return Decoded(None, TOO_SMALL)
    return Decoded(image, None, "+".join(converted) or None)


def pack(source_uri: str, packed_uri: str, rows_per_file: int = 256, rows_per_group: int = 16) -> dict:
    """Pack every image under ``source_uri`` into Parquet files under ``packed_uri``.

    Small row groups let a synthesis task read just its images of a file. Writes ``packed.json``
    (count, listing hash, files with their row counts) last, create-only. Returns that summary.
    Raises ``StorageError`` for unreadable sources or an existing packed table.
    """
    files = list_sources(source_uri)
    storage.check_writable(packed_uri)
    if is_packed(packed_uri):
        raise storage.AlreadyExists(f"{packed_uri}: already holds a packed table")
    pairs, packed_files = [], []
    for index in range(0, len(files), rows_per_file):
        chunk = files[index:index + rows_per_file]
        rows = {"id": [], "size": [], "sha256": [], "bytes": []}
        for info in chunk:
            data = storage.read_bytes(info.uri)
            identifier, content = source_id(source_uri, info.uri), hashlib.sha256(data).hexdigest()
            rows["id"].append(identifier)
            rows["size"].append(len(data))
            rows["sha256"].append(content)
            rows["bytes"].append(data)
            pairs.append((identifier, content))
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(rows, schema=SOURCE_SCHEMA), buffer, row_group_size=rows_per_group)
        name = f"sources-{index // rows_per_file:05d}.parquet"
        storage.write_bytes(storage.join(packed_uri, name), buffer.getvalue().to_pybytes())
        packed_files.append({"path": name, "rows": len(chunk)})
    summary = {"source": source_uri, "count": len(pairs), "listing_sha256": listing_hash(pairs),
               "files": packed_files}
    storage.create_only(storage.join(packed_uri, PACKED_MARKER), json.dumps(summary, indent=2).encode())
    return summary


SAMPLES = "samples"  # as a source: the clean photos that ship inside the scikit-image/matplotlib/sklearn wheels
SAMPLE_FOLDER = "outputs/sample_photos"


def sample_photos(folder: str | Path = SAMPLE_FOLDER) -> str:
    """Copy the sample photos that ship inside the scikit-image/matplotlib/scikit-learn wheels into
    ``folder`` (once) and return it: the embedded default's clean images. Raises ``SetupError``
    when none of those packages is installed."""
    from degradation_synth.samples import sample_photo_paths

    paths = sample_photo_paths()
    if not paths:
        raise SetupError("no sample photos: install scikit-image, matplotlib or scikit-learn "
                           "(pip install 'cpl-restore[samples]'), or set data.source")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in sorted(paths.items()):
        target = folder / f"{name}{path.suffix}"
        if not target.exists():
            storage.write_bytes(str(target), path.read_bytes())  # atomic: a killed copy leaves no half file
    return str(folder.resolve())
