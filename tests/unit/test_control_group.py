"""The control-group statistics on synthetic data with a known effect, and with none."""

from __future__ import annotations

import random
import statistics

import pytest

from engine.campaign_launch import split_holdout
from engine.control_group import (
    ArmStats,
    compare,
    diff_of_proportions,
    t_quantile,
    welch,
    wilson,
)


def synthetic(
    n: int, rate_called: float, rate_control: float, seed: int, revenue_lift: float = 0.0
) -> tuple[ArmStats, ArmStats, list[float], list[float]]:
    """n clients split half and half by the campaign's own draw; Bernoulli conversions and
    a revenue for each converted client (mean 1,000, plus ``revenue_lift`` when called)."""
    rng = random.Random(seed)
    called_ids, control_ids = split_holdout(list(range(n)), 0.5, seed)
    arms = []
    revenues = []
    plan = ((called_ids, rate_called, revenue_lift), (control_ids, rate_control, 0.0))
    for ids, rate, extra in plan:
        rev = [rng.gauss(1000 + extra, 200) if rng.random() < rate else 0.0 for _ in ids]
        arms.append(ArmStats(len(ids), sum(1 for r in rev if r), sum(rev), sum(r * r for r in rev)))
        revenues.append(rev)
    return arms[0], arms[1], revenues[0], revenues[1]


def test_known_effect_is_found():
    called, control, _, _ = synthetic(10_000, 0.08, 0.05, seed=2026)
    result = compare(called, control)
    diff = result.conversion_diff
    assert diff is not None
    assert diff.contains(0.03) and not diff.contains(0.0)
    assert result.significant
    assert 0.3 < result.lift < 0.9  # true lift 0.6  # type: ignore[operator]


def test_null_effect_is_not_claimed():
    called, control, _, _ = synthetic(10_000, 0.05, 0.05, seed=7)
    result = compare(called, control)
    assert result.conversion_diff is not None and result.conversion_diff.contains(0.0)
    assert not result.significant
    assert result.revenue_diff is not None and result.revenue_diff.contains(0.0)


def test_exact_counts():
    # 8 % of 5,000 against 5 % of 5,000: the point estimate is exactly 3 points.
    diff = diff_of_proportions(400, 5000, 250, 5000)
    assert diff.estimate == pytest.approx(0.03)
    assert 0.018 < diff.low < 0.022 and 0.038 < diff.high < 0.042
    assert diff_of_proportions(250, 5000, 250, 5000).contains(0.0)


def test_newcombe_and_wilson_match_published_values():
    # Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 vs 48/80.
    diff = diff_of_proportions(56, 70, 48, 80)
    assert diff.low == pytest.approx(0.0524, abs=1e-4)
    assert diff.high == pytest.approx(0.3339, abs=1e-4)
    low, high = wilson(0, 10)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.2775, abs=1e-4)


def test_t_quantile_matches_tables():
    for df, expected in [(5, 2.5706), (10, 2.2281), (30, 2.0423), (120, 1.9799)]:
        assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)


def test_welch_revenue_interval():
    called, control, rev_called, rev_control = synthetic(
        10_000, 0.3, 0.3, seed=11, revenue_lift=300
    )
    interval = welch(called, control)
    assert interval is not None
    # The sums reproduce the arms' own means and variances.
    assert called.revenue_mean == pytest.approx(statistics.fmean(rev_called))
    assert called.revenue_var == pytest.approx(statistics.variance(rev_called))
    se = (statistics.variance(rev_called) / len(rev_called)
          + statistics.variance(rev_control) / len(rev_control)) ** 0.5  # fmt: skip
    assert interval.high - interval.estimate == pytest.approx(1.96 * se, rel=1e-3)
    assert interval.contains(90.0)  # true difference: 0.3 × 300 per member
    assert not interval.contains(0.0)


def test_degenerate_arms():
    empty = ArmStats(0, 0)
    one = ArmStats(1, 1, 10.0, 100.0)
    result = compare(one, empty)
    assert result.conversion_diff is None and result.lift is None and not result.significant
    assert welch(one, ArmStats(5, 0)) is None
    flat = welch(ArmStats(4, 0), ArmStats(4, 0))
    assert flat is not None and (flat.low, flat.high) == (0.0, 0.0)
