"""bench/ablation.py end to end on a budget: runs append one JSON line each, a rerun resumes instead of
repeating them, and the report pairs every variant with ``dense`` seed by seed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ablation():
    spec = importlib.util.spec_from_file_location("ablation", ROOT / "bench" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["ablation"] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    del sys.modules["ablation"]


@pytest.mark.slow
def test_runs_resume_and_report_paired_differences(ablation, tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    # One held-out photo instead of the default two: scoring it is most of a run's time.
    budget = ["--results", str(results), "--steps", "2", "--warmup", "1", "--patch", "32", "--eval-every", "1",
              "--holdout", ablation.Settings().holdout[0], "--variants", "dense", "cpr", "--seeds", "0", "1"]
    ablation.main(["run", *budget])
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["variant"], r["seed"]) for r in records) == [("cpr", 0), ("cpr", 1), ("dense", 0), ("dense", 1)]
    assert all(len(r["curve"]) == 2 and set(r["per_task"]) == set(ablation.TASKS) for r in records)
    cpr = next(r for r in records if r["variant"] == "cpr")
    assert cpr["cpr"]["start_step"] == 1 and cpr["cpr"]["detach_negatives"]  # "half" of 2 steps

    capsys.readouterr()
    ablation.main(["run", *budget])  # everything is there: nothing runs again
    assert "4 of 4 runs already" in capsys.readouterr().out
    assert len(results.read_text().splitlines()) == 4

    ablation.main(["report", "--results", str(results), "--plot", str(tmp_path / "curve.png")])
    report = capsys.readouterr().out
    cpr_row = next(line for line in report.splitlines() if line.startswith("| cpr |"))
    by_seed = {r["seed"]: r for r in records if r["variant"] == "cpr"}
    dense = {r["seed"]: r for r in records if r["variant"] == "dense"}
    paired = [by_seed[s]["mean_psnr"] - dense[s]["mean_psnr"] for s in (0, 1)]
    assert f"{sum(paired) / 2:.2f} ± " in cpr_row.split("|")[-2]
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_an_unknown_variant_is_named(ablation, tmp_path):
    with pytest.raises(SystemExit, match="unknown variant 'sparce'"):
        ablation.main(["run", "--results", str(tmp_path / "r.jsonl"), "--variants", "sparce"])
