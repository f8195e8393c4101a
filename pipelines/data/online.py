"""Online synthesis: fresh pairs streamed from clean images into training, nothing written."""

from __future__ import annotations

import json

import numpy as np

from . import sources
from .shards import shard_plan, sources_per_shard
from .synthesis import SynthesisConfig, Synthesize, read_slices

ONLINE_PAIRS_PER_TASK = 512  # train pairs, as a shard: enough work per task that Ray Data's cost per task stays small


def online_dataset(source_uri: str, config: SynthesisConfig, split: str = "train", passes: int = 1,
                   first_pass: int = 0):
    """Fresh pairs streamed from clean images, with the same rows as ``open_dataset``, nothing written.

    The stream makes ``passes`` passes over the sources, ``config.crops_per_image`` new crops per
    source each (pass-major, so every stretch of the stream mixes all sources). ``first_pass`` starts
    later in the same stream, e.g. where a resumed training run left off. Each task takes a run of
    consecutive sources worth about ``ONLINE_PAIRS_PER_TASK`` train pairs (a slice of a packed file, or a
    few image files) and synthesizes only those in ``split``.
    """
    import ray.data
    from ray.data.expressions import col

    tasks = shard_plan(sources.unit_sizes(source_uri),
                       sources_per_shard(ONLINE_PAIRS_PER_TASK, config))
    work = [{"slices": json.dumps(slices), "pass": p}
            for p in range(first_pass, first_pass + passes) for slices in tasks]
    # One block per task, as in ``synthesize``: Ray Data then runs tasks, not runs of them, on free CPUs.
    return ray.data.from_items(work, override_num_blocks=len(work)).map_batches(
        _synthesize_slices, fn_kwargs={"source_uri": source_uri, "config": config, "split": split},
        batch_size=1, batch_format="numpy", num_cpus=1).filter(
        expr=col("skip_reason") == "").drop_columns(["skip_reason", "converted_from"])


def _synthesize_slices(batch: dict[str, np.ndarray], source_uri: str, config: SynthesisConfig,
                       split: str) -> dict[str, list]:
    (slices,), (pass_,) = batch["slices"], batch["pass"]
    rows = read_slices(source_uri, json.loads(slices))
    return Synthesize(config, split)({**rows, "pass": np.full(len(rows["id"]), int(pass_))})
