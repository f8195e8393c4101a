"""Published dataset versions: atomic publishing, listing, resolving LATEST, and reading back.

Layout of a dataset ``<out>/<name>/``::

    v=<version>/part-<split>-<NNNNN>.parquet   one row per pair, rows sorted by sample id
    v=<version>/manifest.json                  written last, create-only: the version exists from then on
    LATEST                                     the newest published version, moved by compare-and-swap
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from ..core import storage
from ..core.config import ConfigError
from ..core.errors import DataError
from .synthesis import SPLITS

MANIFEST, LATEST, MANIFEST_FORMAT = "manifest.json", "LATEST", 1


def publish(dataset_uri: str, version: str, manifest: dict[str, Any]) -> None:
    """Write the manifest (create-only), then move LATEST forward to ``version``."""
    storage.create_only(storage.join(dataset_uri, f"v={version}", MANIFEST),
                        json.dumps(manifest, indent=2, sort_keys=True).encode())
    storage.advance_pointer(storage.join(dataset_uri, LATEST), version)


def published_versions(dataset_uri: str) -> list[str]:
    """Versions with a manifest, oldest first."""
    names = [f.uri for f in storage.list_files(dataset_uri) if f.uri.endswith("/" + MANIFEST)]
    return sorted(uri.rsplit("/", 2)[-2].removeprefix("v=") for uri in names)


def resolve_version(dataset_uri: str, version: str = "LATEST") -> str:
    if version == LATEST:
        try:
            return storage.read_bytes(storage.join(dataset_uri, LATEST)).decode().strip()
        except storage.StorageError:
            raise storage.StorageError(f"{dataset_uri}: no published version (no {LATEST})") from None
    return version.removeprefix("v=")


def read_manifest(dataset_uri: str, version: str = "LATEST", verify: bool = True) -> dict[str, Any]:
    """The manifest of a published version; with ``verify``, every shard's checksum is checked.

    Raises:
        StorageError: for an unpublished version (no manifest) or an unreadable one.
        DataError: for a malformed manifest or a shard whose checksum does not match.
    """
    version = resolve_version(dataset_uri, version)
    version_uri = storage.join(dataset_uri, f"v={version}")
    try:
        manifest = json.loads(storage.read_bytes(storage.join(version_uri, MANIFEST)))
    except storage.StorageError:
        raise storage.StorageError(f"{version_uri}: not a published version (no {MANIFEST})") from None
    missing = [key for key in ("version", "counts", "skipped", "shards") if key not in manifest]
    if missing or manifest.get("version") != version:
        raise DataError(f"{version_uri}/{MANIFEST} is malformed ({', '.join(missing) or 'version mismatch'})")
    if verify:
        for shard in manifest["shards"]:
            uri = storage.join(version_uri, shard["path"])
            if hashlib.sha256(storage.read_bytes(uri)).hexdigest() != shard["sha256"]:
                raise DataError(f"{uri}: checksum mismatch; the version was altered after publishing")
    return manifest


def open_dataset(dataset_uri: str, split: str = "train", version: str = "LATEST", verify: bool = True):
    """A published version's split as a Ray Dataset of pair rows (see ``SHARD_SCHEMA``)."""
    import ray.data

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    manifest = read_manifest(dataset_uri, version, verify)
    version_uri = storage.join(dataset_uri, f"v={manifest['version']}")
    paths = [storage.filesystem(storage.join(version_uri, s["path"]))[1] for s in manifest["shards"]
             if s["split"] == split]
    if not paths:
        raise DataError(f"{version_uri}: no {split} pairs")
    fs, _ = storage.filesystem(version_uri)
    return ray.data.read_parquet(paths, filesystem=fs, partitioning=None)  # "v=<version>" is not a column


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 of a manifest's canonical JSON: the identity of a published version's contents."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def remove_unpublished(dataset_uri: str) -> list[str]:
    """Delete version folders that have no manifest (left by failed or killed runs); return their names.

    Only call this when no run is writing to the dataset: an in-progress version has no manifest either.
    """
    published = set(published_versions(dataset_uri))
    versions = {uri.split("/v=", 1)[1].split("/", 1)[0] for uri in (f.uri for f in storage.list_files(dataset_uri))
                if "/v=" in uri}
    removed = sorted(versions - published)
    for version in removed:
        storage.delete_tree(storage.join(dataset_uri, f"v={version}"))
    return removed
