"""``promote.py`` against a real ``mlflow server``, with models of known quality: the gate through the CLI,
rollback, concurrent promotions and the errors users see.

Models are the conftest brightener at output scales 0 (identity: no better than the input), 0.5 and
1 (each better than the last on the dim benchmark) and -1 (worse than the input). They are registered
once; each test copies the versions it needs into a registered model of its own, in a chosen order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cpl_model
from pipelines.core import storage
from pipelines.registry import promotion
from pipelines.registry.config import Gate

from .conftest import REPO_ROOT, aliases, free_port, promote, promotion_tags, quick_choice

pytestmark = pytest.mark.slow


def promote_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "pipelines" / "promote.py"), *args], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture
def promote_env(cli_env, mlflow_server) -> dict[str, str]:
    # One torch thread: on 2 cores shared with the MLflow and S3 servers, two threads spin against each other.
    return {**cli_env, "MLFLOW_TRACKING_URI": mlflow_server, "MLFLOW_DISABLE_TELEMETRY": "true",
            "OMP_NUM_THREADS": "1"}


def test_first_model_is_promoted_only_when_it_beats_the_input(registry, dim_data, promote_env, tracked):
    name, (identity, better) = registry(0.0, 0.5)
    refused = promote_cli(promote_env, "--model", f"models:/{name}/{identity}", "--data", dim_data)
    assert refused.returncode == 1, refused.stderr[-2000:]
    assert "REFUSE" in refused.stdout and "does not beat the degraded input" in refused.stdout
    assert aliases(tracked, name) == {}
    assert promotion_tags(tracked, name, identity)["decision"] == "refused"

    promoted = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--data", dim_data)
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert aliases(tracked, name) == {"champion": better}
    recorded = promotion_tags(tracked, name, better)
    assert recorded["decision"] == "promoted" and recorded["champion_before"] == ""
    assert recorded["data"] == dim_data and float(recorded["mean_gain_db"]) > 1.0
    description = tracked.get_model_version(name, better).description
    assert description.startswith("# cpl-restore") and "## Promotion gate" in description  # card, then decision

    audit = tracked.search_runs([tracked.get_experiment_by_name(promotion.EXPERIMENT).experiment_id],
                                filter_string=f"tags.`cpl.model_name` = '{name}'")
    assert sorted(run.info.run_name for run in audit) == [f"promote {name} v{better}", f"refuse {name} v{identity}"]
    decision = json.loads(Path(tracked.download_artifacts(audit[0].info.run_id, "decision.json")).read_text())
    assert set(decision["table"]) == {"dim", "dimmer"} and decision["evaluations"]["challenger"]


def test_the_gate_reads_a_benchmark_in_its_own_layout_and_a_suite(registry, dim_data, promote_env, tracked, tmp_path):
    """LOL's low/ and high/, made of the dim task's pairs: the brightener beats the input on low_light, alone
    and as the one column of a suite."""
    for kind, folder in (("input", "low"), ("target", "high")):
        shutil.copytree(Path(dim_data) / "dim" / kind, tmp_path / "LOL" / "eval15" / folder)
    name, (better,) = registry(1.0)
    dry = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--data", str(tmp_path / "LOL"),
                      "--benchmark", "lol", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "PROMOTE" in dry.stdout and "| low_light |" in dry.stdout and "| dim |" not in dry.stdout
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"title: Low light\nroots: {{lol: {tmp_path / 'LOL'}}}\n"
                     "columns:\n  - {label: LOL, benchmark: lol, task: low_light}\n")
    dry = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--suite", str(suite), "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "PROMOTE" in dry.stdout and "| lol/low_light |" in dry.stdout and "on suite suite:" in dry.stdout
    assert aliases(tracked, name) == {}


def test_better_challenger_replaces_the_champion_and_a_worse_one_never_does(registry, dim_data, promote_env, tracked,
                                                                           tmp_path):
    name, (champion, better, worse) = registry(0.5, 1.0, -1.0)
    promote(name, champion, dim_data, tmp_path)

    dry = promote_cli(promote_env, "--model", f"models:/{name}/{better}", "--data", dim_data, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "PROMOTE" in dry.stdout and "registry is unchanged" in dry.stdout
    assert aliases(tracked, name) == {"champion": champion} and "decision" not in promotion_tags(tracked, name, better)

    refused = promote(name, worse, dim_data, tmp_path)
    assert not refused.promote and "regresses" in refused.reason
    assert aliases(tracked, name) == {"champion": champion}
    assert promotion_tags(tracked, name, worse)["decision"] == "refused"

    promote(name, better, dim_data, tmp_path)
    assert aliases(tracked, name) == {"champion": better, "previous-champion": champion}
    assert promotion_tags(tracked, name, better)["champion_before"] == champion

    with pytest.raises(promotion.PromotionError, match="already champion"):
        promote(name, better, dim_data, tmp_path)


def test_rollback_walks_back_the_chain_of_champions(registry, dim_data, promote_env, tracked, tmp_path):
    name, (first, second, third) = registry(0.5, 1.0, 1.0)
    promote(name, first, dim_data, tmp_path)
    promote(name, second, dim_data, tmp_path)
    promote(name, third, dim_data, tmp_path, Gate(margin_db=0.0, tolerance_db=0.0))  # same weights
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
    replaced = {version: promotion_tags(tracked, name, version)["champion_before"] for version in winners}
    if len(winners) == 1:
        assert final == {"champion": winners[0], "previous-champion": champion}
        assert replaced[winners[0]] == champion
    else:  # serialised: the second measured itself against the first
        last = final["champion"]
        (first,) = set(winners) - {last}
        assert replaced == {first: champion, last: first}
        assert final == {"champion": last, "previous-champion": first}


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
        promotion.propose(str(tmp_path), quick_choice(dim_data), Gate(), tmp_path / "out")
    with pytest.raises(storage.StorageError, match="nowhere"):
        promotion.propose(f"models:/{name}/{version}", quick_choice(str(tmp_path / "nowhere")), Gate(),
                          tmp_path / "out")
    assert aliases(tracked, name) == {}
