"""Gated promotion and rollback against a real ``mlflow server``, with models of known quality.

Models are the conftest brightener at output scales 0 (identity: no better than the input), 0.5 and
1 (each better than the last on the dim benchmark) and -1 (worse than the input). They are registered
once; each test copies the versions it needs into a registered model of its own, in a chosen order.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

import cpl_model
from pipelines.core import storage
from pipelines.evaluation import scoring
from pipelines.registry import lock, promotion

from .conftest import REPO_ROOT, free_port, write_dim_benchmark

pytestmark = pytest.mark.slow

FAST = scoring.EvalSettings(grid_cases=1)


@pytest.fixture
def registry(registered_model):
    """``registry(*scales) -> (name, [versions])``: a fresh registered model holding those brighteners."""
    return lambda *scales: registered_model(*scales, prefix="promote")


@pytest.fixture(scope="module")
def dim_data(tmp_path_factory) -> str:
    return str(write_dim_benchmark(tmp_path_factory.mktemp("dim")))


@pytest.fixture
def tracked(monkeypatch, mlflow_server) -> MlflowClient:
    """In-process promotions against the session's server, on one torch thread (see ``promote_env``)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield MlflowClient(mlflow_server)
    torch.set_num_threads(threads)


def promote_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "promote.py"), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def promote_env(cli_env, mlflow_server) -> dict[str, str]:
    # One torch thread: on 2 cores shared with the MLflow and S3 servers, two threads spin against each other.
    return {**cli_env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": "1"}


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    return {alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()}


def tags(client: MlflowClient, name: str, version: str) -> dict[str, str]:
    found = client.get_model_version(name, version).tags
    return {key.removeprefix(promotion.TAG): value for key, value in found.items() if key.startswith(promotion.TAG)}


DEFAULT_GATE = promotion.Gate()


def promote(name: str, version: str, data: str, tmp_path: Path, gate: promotion.Gate = DEFAULT_GATE):
    decision = promotion.propose(f"models:/{name}/{version}", data, gate, FAST, tmp_path / uuid.uuid4().hex)
    promotion.apply(decision, tmp_path / uuid.uuid4().hex)
    return decision


# --- the gate ----------------------------------------------------------------------------------------

def test_judge_first_model_needs_a_gain_on_every_task():
    report = {"tasks": {"a": {"input": {"psnr": 20.0}, "model": {"psnr": 23.0}},
                        "b": {"input": {"psnr": 20.0}, "model": {"psnr": 20.0}}}}
    promote_it, reason, table, mean = promotion.judge(report, None, promotion.Gate())
    assert not promote_it and "b" in reason and mean == pytest.approx(1.5)
    report["tasks"]["b"]["model"]["psnr"] = 20.01
    assert promotion.judge(report, None, promotion.Gate())[0]


@pytest.mark.parametrize(("deltas", "expected"), [
    ((0.3, 0.3), True),
    ((0.3, -0.09), True),  # a small loss on one task is tolerated when the mean gain is there
    ((0.6, -0.2), False),  # a loss beyond the tolerance is not, whatever the mean
    ((0.04, 0.04), False),  # below the margin
])
def test_judge_against_a_champion(deltas, expected):
    champion = {"tasks": {t: {"input": {"psnr": 10.0}, "model": {"psnr": 20.0}} for t in ("a", "b")}}
    challenger = {"tasks": {t: {"input": {"psnr": 10.0}, "model": {"psnr": 20.0 + d}}
                            for t, d in zip(("a", "b"), deltas, strict=True)}}
    promote_it, _, table, mean = promotion.judge(challenger, champion, promotion.Gate(margin_db=0.05, tolerance_db=0.1))
    assert promote_it is expected
    assert mean == pytest.approx(sum(deltas) / 2)
    assert table["a"]["champion"] == 20.0 and table["a"]["delta"] == pytest.approx(deltas[0])


def test_judge_refuses_reports_of_different_benchmarks():
    one = {"tasks": {"a": {"input": {"psnr": 1.0}, "model": {"psnr": 2.0}}}}
    other = {"tasks": {"b": {"input": {"psnr": 1.0}, "model": {"psnr": 2.0}}}}
    with pytest.raises(ValueError, match="different tasks"):
        promotion.judge(one, other, promotion.Gate())


# --- promotion through the CLI -------------------------------------------------------------------------

def test_first_model_is_promoted_only_when_it_beats_the_input(registry, dim_data, promote_env, tracked):
    name, (identity, better) = registry(0.0, 0.5)
    refused = promote_cli(promote_env, "--model", f"models:/{name}/{identity}", "--data", dim_data)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "REFUSE" in refused.stdout and "does not beat the degraded input" in refused.stdout
    assert aliases(tracked, name) == {}
    assert tags(tracked, name, identity)["decision"] == "refused"

    promoted = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--data", dim_data)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert aliases(tracked, name) == {"champion": better}
    recorded = tags(tracked, name, better)
    assert recorded["decision"] == "promoted" and recorded["champion_before"] == ""
    assert recorded["data"] == dim_data and float(recorded["mean_gain_db"]) > 1.0
    description = tracked.get_model_version(name, better).description
    assert description.startswith("# cpl-restore") and "## Promotion gate" in description  # card, then decision

    audit = tracked.search_runs([tracked.get_experiment_by_name(promotion.EXPERIMENT).experiment_id],
                                filter_string=f"tags.`cpl.model_name` = '{name}'")
    assert sorted(run.info.run_name for run in audit) == [f"promote {name} v{better}", f"refuse {name} v{identity}"]
    decision = json.loads(Path(tracked.download_artifacts(audit[0].info.run_id, "decision.json")).read_text())
    assert set(decision["table"]) == {"dim", "dimmer"} and decision["evaluations"]["challenger"]


def test_better_challenger_replaces_the_champion_and_a_worse_one_never_does(registry, dim_data, promote_env, tracked,
                                                                           tmp_path):
    name, (champion, better, worse) = registry(0.5, 1.0, -1.0)
    promote(name, champion, dim_data, tmp_path)

    dry = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--data", dim_data, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "PROMOTE" in dry.stdout and "registry is unchanged" in dry.stdout
    assert aliases(tracked, name) == {"champion": champion} and "decision" not in tags(tracked, name, better)

    refused = promote(name, worse, dim_data, tmp_path)
    assert not refused.promote and "regresses" in refused.reason
    assert aliases(tracked, name) == {"champion": champion}
    assert tags(tracked, name, worse)["decision"] == "refused"

    promote(name, better, dim_data, tmp_path)
    assert aliases(tracked, name) == {"champion": better, "previous-champion": champion}
    assert tags(tracked, name, better)["champion_before"] == champion

    with pytest.raises(promotion.PromotionError, match="already champion"):
        promote(name, better, dim_data, tmp_path)


def test_a_margin_the_challenger_cannot_reach_refuses_it(registry, dim_data, tracked, tmp_path):
    name, (champion, better) = registry(0.5, 1.0)
    promote(name, champion, dim_data, tmp_path)
    decision = promote(name, better, dim_data, tmp_path, promotion.Gate(margin_db=100.0))
    assert not decision.promote and "below the margin" in decision.reason
    assert aliases(tracked, name) == {"champion": champion}


def test_rollback_walks_back_the_chain_of_champions(registry, dim_data, promote_env, tracked, tmp_path):
    name, (first, second, third) = registry(0.5, 1.0, 1.0)
    promote(name, first, dim_data, tmp_path)
    promote(name, second, dim_data, tmp_path)
    promote(name, third, dim_data, tmp_path, promotion.Gate(margin_db=0.0, tolerance_db=0.0))  # same weights
    assert aliases(tracked, name) == {"champion": third, "previous-champion": second}

    back = promote_cli(promote_env, "--rollback", "--name", name, "--reason", "halos on faces")
    assert back.returncode == 0, back.stderr[-2000:]
    assert aliases(tracked, name) == {"champion": second, "previous-champion": first}
    demoted = tracked.get_model_version(name, third).tags
    assert demoted["cpl.rollback.reason"] == "halos on faces"

    promotion.rollback(name, "again", tmp_path / "r2")
    assert aliases(tracked, name) == {"champion": first}  # first replaced nobody: no previous-champion left

    with pytest.raises(promotion.PromotionError, match="nothing to roll back"):
        promotion.rollback(name, "once more", tmp_path / "r3")
    assert aliases(tracked, name) == {"champion": first}


# --- concurrency -------------------------------------------------------------------------------------------

def test_a_champion_that_moved_during_evaluation_is_not_replaced(registry, dim_data, tracked, tmp_path):
    name, (champion, one, other) = registry(0.5, 1.0, 1.0)
    promote(name, champion, dim_data, tmp_path)
    first = promotion.propose(f"models:/{name}/{one}", dim_data, promotion.Gate(), FAST, tmp_path / "a")
    second = promotion.propose(f"models:/{name}/{other}", dim_data, promotion.Gate(), FAST, tmp_path / "b")
    assert first.promote and second.promote and first.champion == second.champion == champion

    promotion.apply(first, tmp_path / "a")
    with pytest.raises(promotion.PromotionError, match=f"moved from v{champion} to v{one}"):
        promotion.apply(second, tmp_path / "b")
    assert aliases(tracked, name) == {"champion": one, "previous-champion": champion}
    assert tags(tracked, name, other)["decision"] == "refused"


def test_concurrent_promotions_never_lose_an_update(registry, dim_data, promote_env, tracked, tmp_path):
    name, (champion, one, other) = registry(0.5, 1.0, 1.0)
    promote(name, champion, dim_data, tmp_path)
    gate = ["--margin", "0", "--tolerance", "0"]  # one and other have the same weights: either may follow the other
    processes = [subprocess.Popen([sys.executable, str(REPO_ROOT / "pipelines" / "promote.py"), "--model",
                                   f"models:/{name}/{version}", "--data", dim_data, *gate], cwd=REPO_ROOT,
                                  env=promote_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for version in (one, other)]
    results = [process.communicate(timeout=300) + (process.returncode,) for process in processes]
    winners = [version for version, (_, _, code) in zip((one, other), results, strict=True) if code == 0]
    assert winners, results
    for _, stderr, code in results:
        assert code == 0 or "moved from" in stderr, stderr[-2000:]
    # Each successful promotion replaced the champion current when its aliases moved: a chain, no lost update.
    final = aliases(tracked, name)
    replaced = {version: tags(tracked, name, version)["champion_before"] for version in winners}
    if len(winners) == 1:
        assert final == {"champion": winners[0], "previous-champion": champion}
        assert replaced[winners[0]] == champion
    else:  # serialised: the second measured itself against the first
        last = final["champion"]
        (first,) = set(winners) - {last}
        assert replaced == {first: champion, last: first}
        assert final == {"champion": last, "previous-champion": first}


def test_the_registry_lock_admits_one_holder_at_a_time(tracked):
    name = f"lock-{uuid.uuid4().hex[:8]}"
    inside, most, guard = [0], [0], threading.Lock()

    def hold():
        with lock.registry_lock(tracked, name):
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.3)
            with guard:
                inside[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1
    assert not tracked.search_registered_models(f"name = '{name}{lock.LOCK_SUFFIX}'")  # released


def test_a_held_lock_times_out_with_its_holder_named(tracked):
    name = f"lock-{uuid.uuid4().hex[:8]}"
    tracked.create_registered_model(name + lock.LOCK_SUFFIX, description="held by someone@elsewhere pid 1")
    with pytest.raises(promotion.PromotionError, match="someone@elsewhere"):
        with lock.registry_lock(tracked, name, wait_s=0.5):
            pass


# --- clear errors ------------------------------------------------------------------------------------------

def test_errors_name_what_is_wrong(registry, dim_data, promote_env, tracked, tmp_path):
    name, (version,) = registry(0.5)
    no_alias = promote_cli(promote_env, "--model", f"models:/{name}@staging", "--data", dim_data)
    assert no_alias.returncode == 2
    assert no_alias.stderr.strip().splitlines() == [f"error: models:/{name}@staging: registered model {name!r} "
                                                    "has no alias 'staging'"]
    down = f"http://127.0.0.1:{free_port()}"
    unreachable = promote_cli({**promote_env, "MLFLOW_TRACKING_URI": down}, "--model", f"models:/{name}/{version}")
    assert unreachable.returncode == 2 and down in unreachable.stderr
    bad_flag = promote_cli(promote_env, "--model", f"models:/{name}/{version}", "--margin", "-1")
    assert bad_flag.returncode == 2 and "--margin" in bad_flag.stderr

    cpl_model.save_checkpoint(cpl_model.build_model("tiny"), tmp_path / "model.pt")
    with pytest.raises(promotion.PromotionError, match="only a registered model version"):
        promotion.propose(str(tmp_path), dim_data, promotion.Gate(), FAST, tmp_path / "out")
    with pytest.raises(storage.StorageError, match="nowhere"):
        promotion.propose(f"models:/{name}/{version}", str(tmp_path / "nowhere"), promotion.Gate(), FAST,
                          tmp_path / "out")
    assert aliases(tracked, name) == {}
