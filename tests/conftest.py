"""Suite-wide hooks: the sample photos must be there, tests marked ``gpu`` skip where no CUDA device is, and
the files that take minutes start first."""

import importlib.util
import os

import pytest

# One intra-op thread for torch (and OpenMP/BLAS) here, in Ray workers and in CLI subprocesses, which all
# inherit this environment. Set before anything imports torch. On 2 cores shared with Ray, the S3 and
# MLflow servers, two threads spin-wait on each other at every op: a forward pass of the tiny model took
# 2.6 s instead of 0.04 s, and tests/cpl_model took over 30 minutes instead of about one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from degradation_synth.samples import sample_photo_paths


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_sessionstart(session):
    # Most pipeline tests run on real photos; without them the suite would prove little, so it stops here.
    if not sample_photo_paths():
        raise pytest.UsageError("no sample photos: the test suite needs the samples extra "
                                "(scikit-image, matplotlib, scikit-learn): pip install -e '.[dev]'")


# The files that take minutes (training runs, the local stack), slowest first. Under ``make test``'s workers
# (pytest-xdist, a file per worker at a time) a file collected last would run alone at the end; started first,
# they overlap with everything else.
LONGEST_FILES = ("tests/pipelines/test_train_resume.py", "tests/pipelines/test_cluster_training.py",
                 "tests/pipelines/test_train.py", "tests/pipelines/test_cluster.py", "tests/infra/test_local_stack.py",
                 "tests/bench/test_ablation.py")


def pytest_collection_modifyitems(config, items):
    rank = {path: index for index, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest keep order
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in gpu_items:
            item.add_marker(skip)
