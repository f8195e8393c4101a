"""What ``synthesize.py`` does with a validated config: synthesize and publish a version, pack sources into a
table (``--pack``), or remove unpublished versions (``--clean``), and say what it did."""

from __future__ import annotations

from typing import Any

from ..core import storage
from ..core.config import ConfigError
from ..core.runtime import init_ray
from . import job, sources, versions
from .job import SynthesizeConfig

HELP = """\
Regenerate a versioned, sharded degraded/clean dataset from clean images, with Ray Data.

Versions go to <out>/<name>/v=<version>/ (shards, then manifest.json, then LATEST moves). --pack copies
the images under --source into a Parquet table at --out once, for sources of millions of small files;
--clean removes the versions of <out>/<name> that were never published (left by killed runs). Config
sections: source, output, synthesis, ray (see configs/synthesize_*.yaml).
"""


def _required_source(config: SynthesizeConfig, action: str | None) -> str:
    # A packed table is not a dataset: packing into the default datasets folder is a forgotten --out.
    if action == "pack" and (config.source is None or config.output.uri == job.OutputConfig().uri):
        raise ConfigError("--pack needs --source and --out")
    if config.source is None:
        raise ConfigError("config error: source (--source): required")
    return config.source


def plan(config: SynthesizeConfig, options: Any) -> dict[str, Any]:
    """What ``--dry-run`` shows beside the config; it lists the sources, it reads no image."""
    dataset = storage.join(config.output.uri, config.output.name)
    if options.action == "pack":
        return {"plan": {"pack": _required_source(config, "pack"), "into": config.output.uri}}
    if options.action == "clean":
        return {"plan": {"clean": dataset}}
    return {"plan": job.plan(_required_source(config, None), config.synthesis),
            "output": storage.join(dataset, "v=<new>")}


def run(config: SynthesizeConfig, action: str | None = None) -> int:
    """Synthesize and publish a new version (``action`` None), ``pack`` the sources, or ``clean`` the
    unpublished versions; print what was done.

    Returns:
        The exit status, 0.

    Raises:
        PipelineError: naming the key, URI or data at fault; nothing is published then.
    """
    dataset = storage.join(config.output.uri, config.output.name)
    if action == "pack":
        summary = sources.pack(_required_source(config, action), config.output.uri)
        print(f"packed {summary['count']} images from {config.source} into {config.output.uri}")
        return 0
    if action == "clean":
        removed = versions.remove_unpublished(dataset)
        print(f"removed {len(removed)} unpublished version(s): {', '.join(removed) or '-'}")
        return 0
    the_plan = job.plan(_required_source(config, action), config.synthesis)
    storage.check_writable(dataset)  # before Ray starts
    init_ray(config.ray, locations={"source": config.source, "output.uri": config.output.uri})
    print(f"synthesizing {the_plan['expected_pairs']} pairs from {the_plan['sources']} sources "
          f"({'packed' if the_plan['packed'] else 'folder'}) with {len(the_plan['recipes'])} recipes")
    manifest = job.synthesize(config.source, config.output, config.synthesis, config.model_dump(mode="json"))
    pairs = sum(sum(counts.values()) for counts in manifest["counts"].values())
    print(f"published {storage.join(dataset, 'v=' + manifest['version'])}")
    print(f"  pairs: {pairs} ({', '.join(f'{s}: {sum(c.values())}' for s, c in manifest['counts'].items())}), "
          f"{len(manifest['shards'])} shards, {pairs / max(manifest['seconds'], 1e-9):.0f} pairs/s")
    skipped = {reason: len(ids) for reason, ids in manifest["skipped"].items()}
    print(f"  skipped sources: {skipped or 'none'}; converted: "
          f"{ {kind: len(ids) for kind, ids in manifest['converted'].items()} or 'none'}")
    return 0
