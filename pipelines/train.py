"""Train CPL with Ray Train + DeepSpeed, track it in MLflow, and register the model.

    python pipelines/train.py                       # the embedded default: local Ray, sample photos,
                                                    # tiny preset, local MLflow store; a few minutes on CPU
    python pipelines/train.py --smoke               # the same path, a few steps (CI, first checks)
    python pipelines/train.py --config configs/train_five_task.yaml [--set optim.lr=1e-4 ...] [--name RUN]
    ray job submit --working-dir . --runtime-env configs/runtime_env.yaml -- \\
        python pipelines/train.py --config configs/train_five_task.yaml

Locations come from config or the environment: RAY_ADDRESS, MLFLOW_TRACKING_URI (wins over
tracking.uri), run.storage and data.dataset/data.source as folders or s3:// URIs (endpoint and
credentials from the standard AWS variables). Re-running with the same run name resumes it.

Exit status 0 on success; otherwise one line on stderr naming the file, key or URI at fault.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as `python pipelines/train.py` (how `ray job submit` runs it)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core import storage  # noqa: E402
from pipelines.core.config import ConfigError, load_config  # noqa: E402
from pipelines.training.config import TrainConfig  # noqa: E402

# --smoke: the whole path (data, DeepSpeed, checkpoint, validation, registration) on a budget of steps.
SMOKE = ["optim.max_steps=4", "optim.warmup_steps=1", "checkpoint.every=2", "loss.cpr.start_step=2",
         "scaling.workers=1", "scaling.use_gpu=false", "validation.crops_per_recipe=1"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python pipelines/train.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (sections: run, model, loss, optim, data, validation, "
                                         "checkpoint, scaling, tracking, ray); see configs/")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. optim.lr=1e-4 (repeatable; applied last)")
    parser.add_argument("--name", help="run name (run.name); reusing one resumes that run")
    parser.add_argument("--smoke", action="store_true", help="a few steps on one CPU worker, same code path")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and the plan; do nothing")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        overrides = (SMOKE if args.smoke else []) + (
            [f"run.name={json.dumps(args.name)}"] if args.name else []) + args.set
        config = load_config(TrainConfig, args.config, overrides)
        from pipelines.training import driver as training  # torch, Ray and MLflow load only past the config check

        if args.dry_run:
            print(json.dumps({"config": config.model_dump(mode="json"), "plan": training.plan(config)}, indent=2))
            return 0
        summary = training.train(config)
    except (ConfigError, ValueError, ConnectionError, RuntimeError, storage.StorageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(summary.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
