"""Source images: decoding with explicit conversions and skip reasons, listing, ids, and packing into Parquet."""

from __future__ import annotations

import hashlib
import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest

from pipelines.core import storage
from pipelines.data import sources
from pipelines.data.sources import EMPTY, TOO_LARGE, TOO_SMALL, UNDECODABLE

from ..conftest import photo_halves, write_photo_folder

LIMITS = {"max_pixels": 10_000_000, "min_side": 64}


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    """A real photo crop, 96x128 RGB."""
    bgr = next(iter(photo_halves(1, side=256).values()))
    return np.ascontiguousarray(bgr[:96, :128, ::-1])


def encode(suffix: str, image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(suffix, image, list(params))
    assert ok
    return buffer.tobytes()


def bgr(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def png_of_size(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of zeros, built row by row (never held in memory whole)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor, row, parts = zlib.compressobj(9), b"\0" * (width + 1), []  # filter byte + pixels
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


@pytest.fixture
def decode_calls(monkeypatch) -> list[int]:
    """Counts full decodes (``cv2.imdecode``) while still decoding."""
    calls: list[int] = []
    original = cv2.imdecode

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(cv2, "imdecode", counting)
    return calls


# --- decode ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".png", ".bmp", ".tiff", ".webp"])
def test_lossless_colour_images_decode_to_the_same_rgb_pixels(rgb, suffix):
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if suffix == ".webp" else ()
    decoded = sources.decode(encode(suffix, bgr(rgb), *params), **LIMITS)
    assert decoded.skip_reason is None and decoded.converted_from is None
    assert decoded.image.dtype == np.uint8 and decoded.image.flags.c_contiguous
    np.testing.assert_array_equal(decoded.image, rgb)


def test_jpeg_decodes_to_rgb_not_bgr(rgb):
    decoded = sources.decode(encode(".jpg", bgr(rgb), cv2.IMWRITE_JPEG_QUALITY, 98), **LIMITS)
    assert decoded.image.shape == rgb.shape and decoded.converted_from is None
    error = np.abs(decoded.image.astype(int) - rgb.astype(int)).mean()
    swapped = np.abs(decoded.image[..., ::-1].astype(int) - rgb.astype(int)).mean()
    assert error < 3 < swapped


def test_grayscale_is_converted_explicitly_to_three_equal_channels(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    decoded = sources.decode(encode(".png", gray), **LIMITS)
    assert decoded.converted_from == "grayscale"
    np.testing.assert_array_equal(decoded.image, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_is_converted_explicitly_by_compositing_over_white(rgb):
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :64] = 0  # left half fully transparent
    decoded = sources.decode(encode(".png", np.dstack([bgr(rgb), alpha])), **LIMITS)
    assert decoded.converted_from == "rgba"
    np.testing.assert_array_equal(decoded.image[:, 64:], rgb[:, 64:])  # opaque: the colours, in RGB order
    assert (decoded.image[:, :64] == 255).all()


def test_16_bit_is_converted_explicitly_by_scaling_to_8_bit(rgb):
    deep = bgr(rgb).astype(np.uint16) * 257  # exact 8 -> 16 bit expansion
    decoded = sources.decode(encode(".png", deep), **LIMITS)
    assert decoded.converted_from == "16-bit"
    np.testing.assert_array_equal(decoded.image, rgb)


def test_16_bit_grayscale_reports_both_conversions(rgb):
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
    decoded = sources.decode(encode(".png", gray), **LIMITS)
    assert set(decoded.converted_from.split("+")) == {"16-bit", "grayscale"}
    assert decoded.image.shape == rgb.shape


def test_empty_bytes_are_skipped_as_empty():
    assert sources.decode(b"", **LIMITS) == sources.Decoded(None, EMPTY)


@pytest.mark.parametrize("data", [b"hello, not an image\n" * 50, bytes(1000), b"\x89PNG\r\n\x1a\n" + bytes(100)],
                         ids=["text", "zeros", "png-signature-only"])
def test_bytes_that_are_not_an_image_are_skipped(data):
    assert sources.decode(data, **LIMITS) == sources.Decoded(None, UNDECODABLE)


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
@pytest.mark.parametrize("keep", [0.1, 0.5, 0.9])
def test_truncated_files_are_skipped(rgb, suffix, keep):
    data = encode(suffix, bgr(rgb))
    decoded = sources.decode(data[:int(len(data) * keep)], **LIMITS)
    assert decoded.image is None and decoded.skip_reason == UNDECODABLE


def test_images_smaller_than_the_patch_are_skipped(rgb):
    data = encode(".png", bgr(rgb))  # 96x128
    assert sources.decode(data, max_pixels=10**7, min_side=97).skip_reason == TOO_SMALL
    assert sources.decode(data, max_pixels=10**7, min_side=96).image.shape == (96, 128, 3)


def test_an_image_above_max_pixels_is_rejected_from_its_header_before_decoding(decode_calls):
    data = png_of_size(3000, 3000)
    assert len(data) < 100_000  # a small file that would decode to 9 megapixels
    decoded = sources.decode(data, max_pixels=1_000_000, min_side=64)
    assert decoded == sources.Decoded(None, TOO_LARGE)
    assert decode_calls == []


def test_an_image_at_max_pixels_is_accepted():
    decoded = sources.decode(png_of_size(1000, 1000), max_pixels=1_000_000, min_side=64)
    assert decoded.skip_reason is None and decoded.image.shape == (1000, 1000, 3)


def test_a_decompression_bomb_beyond_pillows_own_limit_is_still_rejected_before_decoding(monkeypatch):
    """400 megapixels: Pillow refuses to even open the header (DecompressionBombError), which must not
    send the file on to a full decode."""
    calls = []

    def refuse_to_decode(*args, **kwargs):  # decoding this file for real would allocate 400 MB
        calls.append(1)  # and returns None, as OpenCV does for what it cannot decode

    monkeypatch.setattr(cv2, "imdecode", refuse_to_decode)
    decoded = sources.decode(png_of_size(20_000, 20_000), max_pixels=1_000_000, min_side=64)
    assert calls == [], "the bomb was handed to cv2.imdecode"
    assert decoded == sources.Decoded(None, TOO_LARGE)


# --- listing and ids -----------------------------------------------------------------------------------

def test_list_sources_keeps_image_suffixes_in_any_case_and_sorts(tmp_path):
    for name in ("b.PNG", "a/c.jpeg", "d.webp", "e.txt", "f.json", "g.Tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    ids = [sources.source_id(str(tmp_path), f.uri) for f in sources.list_sources(str(tmp_path))]
    assert ids == ["a/c.jpeg", "b.PNG", "d.webp", "g.Tif"]


def test_list_sources_of_a_missing_folder_names_it(tmp_path):
    with pytest.raises(storage.StorageError, match="no-such"):
        sources.list_sources(str(tmp_path / "no-such"))


def test_source_ids_are_relative_to_the_root_with_or_without_a_trailing_slash():
    assert sources.source_id("s3://b/clean", "s3://b/clean/x/1.png") == "x/1.png"
    assert sources.source_id("s3://b/clean/", "s3://b/clean/x/1.png") == "x/1.png"
    assert sources.source_id("/data", "/data/1.png") == "1.png"


def test_the_listing_hash_ignores_order_and_sees_every_id_and_content():
    pairs = [("a.png", "1" * 64), ("b.png", "2" * 64)]
    assert sources.listing_hash(pairs) == sources.listing_hash(pairs[::-1])
    assert sources.listing_hash(pairs) != sources.listing_hash([("a.png", "1" * 64), ("c.png", "2" * 64)])
    assert sources.listing_hash(pairs) != sources.listing_hash([("a.png", "1" * 64), ("b.png", "3" * 64)])


# --- pack ----------------------------------------------------------------------------------------------

def read_packed(uri: str) -> list[dict]:
    rows = []
    for info in storage.list_files(uri, (".parquet",)):
        rows += pq.read_table(io.BytesIO(storage.read_bytes(info.uri))).to_pylist()
    return rows


def test_pack_writes_every_image_with_its_id_hash_and_bytes_then_the_marker(tmp_path):
    folder = tmp_path / "photos"
    names = write_photo_folder(folder, count=5)
    (folder / "notes.txt").write_text("not an image")
    packed = str(tmp_path / "packed")
    summary = sources.pack(str(folder), packed, rows_per_file=2)
    rows = read_packed(packed)
    assert [r["id"] for r in rows] == names
    for row in rows:
        data = (folder / row["id"]).read_bytes()
        assert row["bytes"] == data and row["size"] == len(data)
        assert row["sha256"] == hashlib.sha256(data).hexdigest()
    assert len(storage.list_files(packed, (".parquet",))) == 3  # 5 rows, 2 per file
    assert summary == {"source": str(folder), "count": 5,
                       "listing_sha256": sources.listing_hash([(r["id"], r["sha256"]) for r in rows]),
                       "files": [{"path": f"sources-0000{i}.parquet", "rows": n} for i, n in enumerate([2, 2, 1])]}
    assert json.loads(storage.read_bytes(storage.join(packed, sources.PACKED_MARKER))) == summary
    assert sources.is_packed(packed) and not sources.is_packed(str(folder))


def test_a_packed_unit_reads_any_slice_of_its_rows_across_row_groups(tmp_path):
    write_photo_folder(tmp_path / "photos", count=7)
    packed = str(tmp_path / "packed")
    sources.pack(str(tmp_path / "photos"), packed, rows_per_file=7, rows_per_group=3)
    [(unit, count)] = sources.unit_sizes(packed)
    whole = sources.read_unit(packed, unit)
    assert count == len(whole["id"]) == 7
    assert pq.read_metadata(unit).num_row_groups == 3
    for start, stop in [(0, 7), (0, 1), (2, 4), (3, 6), (5, 7), (6, 7)]:
        assert sources.read_unit(packed, unit, start, stop) == {k: v[start:stop] for k, v in whole.items()}


def test_unit_sizes_of_a_table_packed_without_file_counts_reads_the_footers(tmp_path):
    write_photo_folder(tmp_path / "photos", count=5)
    packed = str(tmp_path / "packed")
    summary = sources.pack(str(tmp_path / "photos"), packed, rows_per_file=2)
    expected = sources.unit_sizes(packed)
    del summary["files"]
    storage.write_bytes(storage.join(packed, sources.PACKED_MARKER), json.dumps(summary).encode())
    assert sources.unit_sizes(packed) == expected == [(storage.join(packed, f"sources-0000{i}.parquet"), n)
                                                      for i, n in enumerate([2, 2, 1])]


def test_pack_from_a_relative_path_stores_ids_relative_to_the_source(tmp_path, monkeypatch):
    names = write_photo_folder(tmp_path / "photos", count=2)
    monkeypatch.chdir(tmp_path)
    sources.pack("photos", "packed")
    assert [r["id"] for r in read_packed(str(tmp_path / "packed"))] == names


def test_pack_refuses_to_pack_twice_into_the_same_place(tmp_path):
    write_photo_folder(tmp_path / "photos", count=2)
    packed = str(tmp_path / "packed")
    first = sources.pack(str(tmp_path / "photos"), packed)
    before = {f.uri: storage.read_bytes(f.uri) for f in storage.list_files(packed)}
    (tmp_path / "photos" / "extra.png").write_bytes(min((tmp_path / "photos").iterdir()).read_bytes())
    with pytest.raises(storage.AlreadyExists, match="already holds a packed table"):
        sources.pack(str(tmp_path / "photos"), packed)
    assert {f.uri: storage.read_bytes(f.uri) for f in storage.list_files(packed)} == before
    assert json.loads(storage.read_bytes(storage.join(packed, sources.PACKED_MARKER))) == first


def test_pack_of_a_folder_without_images_fails_naming_it(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(storage.StorageError, match="empty: no images"):
        sources.pack(str(tmp_path / "empty"), str(tmp_path / "packed"))
    assert not (tmp_path / "packed").exists()


def test_pack_from_a_local_folder_into_s3_gives_the_same_ids_and_listing_hash(tmp_path, bucket):
    write_photo_folder(tmp_path / "photos", count=3)
    local = sources.pack(str(tmp_path / "photos"), str(tmp_path / "packed"))
    remote = sources.pack(str(tmp_path / "photos"), f"s3://{bucket}/packed")
    assert remote["listing_sha256"] == local["listing_sha256"]
    assert sources.is_packed(f"s3://{bucket}/packed")
    assert read_packed(f"s3://{bucket}/packed") == read_packed(str(tmp_path / "packed"))


def test_pack_from_s3_uses_ids_relative_to_the_prefix(tmp_path, bucket):
    names = write_photo_folder(tmp_path / "photos", count=2)
    for name in names:
        storage.write_bytes(f"s3://{bucket}/clean/sub/{name}", (tmp_path / "photos" / name).read_bytes())
    summary = sources.pack(f"s3://{bucket}/clean", f"s3://{bucket}/packed")
    assert summary["count"] == 2
    assert [r["id"] for r in read_packed(f"s3://{bucket}/packed")] == [f"sub/{name}" for name in names]


def test_pack_into_a_missing_bucket_fails_naming_it(tmp_path, s3_endpoint):
    write_photo_folder(tmp_path / "photos", count=1)
    with pytest.raises(storage.StorageError, match="s3://bucket-does-not-exist-0/packed: no such bucket"):
        sources.pack(str(tmp_path / "photos"), "s3://bucket-does-not-exist-0/packed")


def test_read_unit_of_a_folder_gives_one_row_per_file_with_its_relative_id_and_content_hash(few_photos):
    units = sources.source_units(str(few_photos))
    assert len(units) == 4
    for unit in units:
        read = sources.read_unit(str(few_photos), unit)
        data = Path(unit).read_bytes()
        assert read == {"id": [Path(unit).name], "sha256": [hashlib.sha256(data).hexdigest()], "bytes": [data]}
