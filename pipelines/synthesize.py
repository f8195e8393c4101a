"""Regenerate a versioned, sharded degraded/clean dataset from clean images, with Ray Data.

    python pipelines/synthesize.py --source <folder|s3://...> --out <folder|s3://...> --name <dataset> \\
        [--seed N] [--recipes five_task|cdd11|noise25,haze...] [--patch N] [--crops-per-image N] \\
        [--config configs/x.yaml] [--set synthesis.val_fraction=0.1 ...] [--dry-run]
    python pipelines/synthesize.py --pack --source <folder|s3://...> --out <packed table uri>
    python pipelines/synthesize.py --clean --out <uri> --name <dataset>   # remove unpublished versions

Exit status 0 on success; otherwise one line on stderr naming the file, key or URI at fault.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/synthesize.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import storage  # noqa: E402
from pipelines.core.config import ConfigError, load_config  # noqa: E402
from pipelines.core.runtime import init_ray  # noqa: E402
from pipelines.data import job, sources, versions  # noqa: E402
from pipelines.data.job import SynthesizeConfig  # noqa: E402

_FLAGS = {"source": "source", "out": "output.uri", "name": "output.name", "seed": "synthesis.seed",
          "recipes": "synthesis.recipes", "patch": "synthesis.patch", "crops_per_image": "synthesis.crops_per_image"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/synthesize.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", help="clean images: a folder, an s3:// prefix, or a packed table")
    parser.add_argument("--out", help="where datasets live (folder or s3:// prefix); with --pack, the packed table")
    parser.add_argument("--name", help="dataset name: versions go to <out>/<name>/v=<version>/")
    parser.add_argument("--seed", type=int, help="dataset seed (default 0)")
    parser.add_argument("--recipes", help="comma-separated recipe or set names (default five_task)")
    parser.add_argument("--patch", type=int, help="patch side in pixels (default 128)")
    parser.add_argument("--crops-per-image", type=int, help="patches per source image (default 4)")
    parser.add_argument("--config", help="YAML config file (sections: source, output, synthesis, ray)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. synthesis.val_fraction=0.1 (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan; do nothing")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--pack", action="store_true", help="pack --source into a Parquet table at --out, then exit")
    mode.add_argument("--clean", action="store_true", help="delete unpublished versions of --out/--name, then exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.pack:
            if not args.source or not args.out:
                raise ConfigError("--pack needs --source and --out")
            summary = sources.pack(args.source, args.out)
            print(f"packed {summary['count']} images from {args.source} into {args.out}")
            return 0
        overrides = [f"{key}={json.dumps(getattr(args, flag))}" for flag, key in _FLAGS.items()
                     if getattr(args, flag) is not None] + args.set
        config = load_config(SynthesizeConfig, args.config, overrides)
        if args.clean:
            removed = versions.remove_unpublished(storage.join(config.output.uri, config.output.name))
            print(f"removed {len(removed)} unpublished version(s): {', '.join(removed) or '-'}")
            return 0
        if config.source is None:
            raise ConfigError("config error: source: required (--source or source: in the config)")
        resolved = config.model_dump(mode="json")
        the_plan = job.plan(config.source, config.synthesis)
        if args.dry_run:
            print(json.dumps({"config": resolved, "plan": the_plan,
                              "output": storage.join(config.output.uri, config.output.name, "v=<new>")}, indent=2))
            return 0
        storage.check_writable(storage.join(config.output.uri, config.output.name))  # before Ray starts
        return run(config, resolved, the_plan)
    except (ConfigError, ValueError, storage.StorageError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def run(config: SynthesizeConfig, resolved: dict, the_plan: dict) -> int:
    init_ray(config.ray)
    print(f"synthesizing {the_plan['expected_pairs']} pairs from {the_plan['sources']} sources "
          f"({'packed' if the_plan['packed'] else 'folder'}) with {len(the_plan['recipes'])} recipes")
    manifest = job.synthesize(config.source, config.output, config.synthesis, resolved)
    pairs = sum(sum(c.values()) for c in manifest["counts"].values())
    dataset_uri = storage.join(config.output.uri, config.output.name)
    print(f"published {storage.join(dataset_uri, 'v=' + manifest['version'])}")
    print(f"  pairs: {pairs} ({', '.join(f'{s}: {sum(c.values())}' for s, c in manifest['counts'].items())}), "
          f"{len(manifest['shards'])} shards, {pairs / max(manifest['seconds'], 1e-9):.0f} pairs/s")
    skipped = {reason: len(ids) for reason, ids in manifest["skipped"].items()}
    print(f"  skipped sources: {skipped or 'none'}; converted: "
          f"{ {kind: len(ids) for kind, ids in manifest['converted'].items()} or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
