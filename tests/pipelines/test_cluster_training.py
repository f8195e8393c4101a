"""Across nodes, for real: a training run on a Ray cluster of a head and two worker nodes (``ray_nodes``, a
cluster of this file's own) that loses the nodes of its ranks continues from its last checkpoint in the same
MLflow run, fails in one line when no node comes back in time, and resumes when submitted again.
"""

from __future__ import annotations

import re
import subprocess
import time
from types import SimpleNamespace

import pytest

from .conftest import RayNodes, another_ray_instance, new_bucket
from .train_runs import (
    FAST,
    finish,
    kill_run,
    logged_steps,
    runs_named,
    start_train,
    wait_for_checkpoint,
    wait_for_line,
)

pytestmark = pytest.mark.slow

# A run of two ranks, one on each worker node, checkpointing every 3 steps: long enough for three losses.
LOST_NODE_STEPS = 36
# The run waits this long for a node that never comes; a node that joins is found within seconds.
CAPACITY_WAIT_S = 30
FAILED = r"worker group failed \(rank (\d)[^)]*\); restarted from the checkpoint at step (\d+)$"
PLACEMENT = r"placement: (.*)$"


def wait_for_placement(process: subprocess.Popen) -> tuple[dict[int, str], list[str]]:
    """Read the run's output up to the line that says where a worker group's ranks went (ranks follow the
    order in which the group's workers were placed, not node ids); return each rank's node id prefix."""
    found, seen = wait_for_line(process, PLACEMENT)
    placement = {}
    for ranks, node in re.findall(r"ranks? ([\d,-]+) on \S+ \(node ([0-9a-f]+)\)", found[1]):
        for part in ranks.split(","):
            first, _, last = part.partition("-")
            placement.update(dict.fromkeys(range(int(first), int(last or first) + 1), node))
    return placement, seen


def node_holding(nodes: RayNodes, prefix: str):
    (node,) = [node for node in nodes.workers if node.node_id.startswith(prefix)]
    return node


@pytest.fixture(scope="module")
def lost_nodes(ray_nodes, train_env, s3_dataset, mlflow_server) -> SimpleNamespace:
    """One training run across the two worker nodes, checkpoints in S3 and metrics on the MLflow server, that
    loses a node three times: rank 1's and then rank 0's, each replaced by a new node; then a node that no new
    node replaces within run.capacity_wait_s, so the run fails. Once a node is back, the same command resumes it.

    Meanwhile another Ray instance starts on the machine. Ray Train's placement-group cleaner took it for the
    run's cluster, found no controller there and removed the run's workers; the run must not notice it.
    """
    storage_uri = f"s3://{new_bucket()}/runs"
    env = {**train_env, "RAY_ADDRESS": ray_nodes.env["RAY_ADDRESS"]}
    args = ["--name", "lost-nodes", "--set", f"data.dataset={s3_dataset.uri}", "--set", f"run.storage={storage_uri}",
            "--set", "scaling.workers=2", "--set", "scaling.cpus_per_worker=2", "--set", "run.max_failures=3",
            "--set", f"run.capacity_wait_s={CAPACITY_WAIT_S}", "--set", f"optim.max_steps={LOST_NODE_STEPS}",
            "--set", "optim.warmup_steps=1", *[f"--set={item}" for item in FAST], "--set", "checkpoint.every=3",
            "--set", "data.batch_size=1"]  # the shared dataset's few train pairs, split over two ranks
    first = start_train(env, *args)
    placement, lines = wait_for_placement(first)
    assert set(placement) == {0, 1} and placement[0] != placement[1], "".join(lines)
    failures = []
    with another_ray_instance():
        for rank in (1, 0):
            _, seen = wait_for_checkpoint(first)
            lines += seen
            ray_nodes.kill(node_holding(ray_nodes, placement[rank]))
            ray_nodes.add_worker()
            failed, seen = wait_for_line(first, FAILED)
            lines += seen
            failures.append((rank, int(failed[1]), int(failed[2])))
            placement, seen = wait_for_placement(first)
            lines += seen
    _, seen = wait_for_checkpoint(first)
    lines += seen
    ray_nodes.kill(node_holding(ray_nodes, placement[0]))
    started = time.monotonic()
    try:
        output, _ = first.communicate(timeout=CAPACITY_WAIT_S + 240)
    except subprocess.TimeoutExpired:
        kill_run(first)
        pytest.fail("the run did not fail without capacity:\n" + "".join(lines)[-4000:])
    waited = time.monotonic() - started
    ray_nodes.add_worker()

    resubmitted = start_train(env, *args)
    return SimpleNamespace(storage=storage_uri, failures=failures, output="".join(lines) + output,
                           returncode=first.returncode, waited=waited, resumed=finish(resubmitted, timeout=600))


def test_a_lost_node_of_any_rank_costs_only_the_steps_since_the_last_checkpoint(lost_nodes, mlflow_server):
    assert [(rank, failed_rank) for rank, failed_rank, _ in lost_nodes.failures] == [(1, 1), (0, 0)], \
        lost_nodes.output[-4000:]
    restarted_from = [step for _, _, step in lost_nodes.failures]
    assert all(step > 0 and step % 3 == 0 for step in restarted_from) and restarted_from == sorted(restarted_from)
    (run,) = runs_named(mlflow_server, "lost-nodes")
    assert run.info.status == "FINISHED"
    assert logged_steps(mlflow_server, run.info.run_id) == list(range(1, LOST_NODE_STEPS + 1))


def test_without_capacity_the_run_fails_in_one_line_and_resumes_when_submitted_again(lost_nodes):
    assert lost_nodes.returncode == 2, lost_nodes.output[-4000:]
    error = lost_nodes.output.strip().splitlines()[-1]
    stopped = re.fullmatch(r"error: the Ray cluster had no room for 2 worker\(s\) x \{'CPU': 2\.0\} within "
                           rf"run\.capacity_wait_s \({CAPACITY_WAIT_S} s\); the last checkpoint is at step (\d+): "
                           r"submit again with --name lost-nodes to resume", error)
    assert stopped, error
    assert lost_nodes.waited >= CAPACITY_WAIT_S
    resumed = re.search(r"^resuming from the checkpoint at step (\d+)$", lost_nodes.resumed, re.MULTILINE)
    assert resumed and resumed[1] == stopped[1], lost_nodes.resumed[-3000:]
