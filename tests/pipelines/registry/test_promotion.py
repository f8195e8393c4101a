"""The promotion gate: ``judge`` on reports, and promotions in process against a real ``mlflow server``
with models of known quality (the conftest brighteners: see test_promote.py).
"""

from __future__ import annotations

import pytest

from pipelines.registry import promotion
from pipelines.registry.config import Gate

from ..conftest import aliases, promote, promotion_tags, quick_choice


def test_judge_first_model_needs_a_gain_on_every_task():
    report = {"tasks": {"a": {"input": {"psnr": 20.0}, "model": {"psnr": 23.0}},
                        "b": {"input": {"psnr": 20.0}, "model": {"psnr": 20.0}}}}
    promote_it, reason, table, mean = promotion.judge(report, None, Gate())
    assert not promote_it and "b" in reason and mean == pytest.approx(1.5)
    report["tasks"]["b"]["model"]["psnr"] = 20.01
    assert promotion.judge(report, None, Gate())[0]


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
    promote_it, _, table, mean = promotion.judge(challenger, champion, Gate(margin_db=0.05, tolerance_db=0.1))
    assert promote_it is expected
    assert mean == pytest.approx(sum(deltas) / 2)
    assert table["a"]["champion"] == 20.0 and table["a"]["delta"] == pytest.approx(deltas[0])


def test_judge_refuses_reports_of_different_benchmarks():
    one = {"tasks": {"a": {"input": {"psnr": 1.0}, "model": {"psnr": 2.0}}}}
    other = {"tasks": {"b": {"input": {"psnr": 1.0}, "model": {"psnr": 2.0}}}}
    with pytest.raises(ValueError, match="different tasks"):
        promotion.judge(one, other, Gate())


@pytest.mark.slow
def test_a_margin_the_challenger_cannot_reach_refuses_it(registry, dim_data, tracked, tmp_path):
    name, (champion, better) = registry(0.5, 1.0)
    promote(name, champion, dim_data, tmp_path)
    decision = promote(name, better, dim_data, tmp_path, Gate(margin_db=100.0))
    assert not decision.promote and "below the margin" in decision.reason
    assert aliases(tracked, name) == {"champion": champion}


@pytest.mark.slow
def test_a_champion_that_moved_during_evaluation_is_not_replaced(registry, dim_data, tracked, tmp_path):
    name, (champion, one, other) = registry(0.5, 1.0, 1.0)
    promote(name, champion, dim_data, tmp_path)
    first = promotion.propose(f"models:/{name}/{one}", quick_choice(dim_data), Gate(), tmp_path / "a")
    second = promotion.propose(f"models:/{name}/{other}", quick_choice(dim_data), Gate(), tmp_path / "b")
    assert first.promote and second.promote and first.champion == second.champion == champion

    promotion.apply(first, tmp_path / "a")
    with pytest.raises(promotion.PromotionError, match=f"moved from v{champion} to v{one}"):
        promotion.apply(second, tmp_path / "b")
    assert aliases(tracked, name) == {"champion": one, "previous-champion": champion}
    assert promotion_tags(tracked, name, other)["decision"] == "refused"
