"""The significance test that picks an A/B winner: a pooled two-proportion z-test of the
leader against the runner-up, with Wilson confidence intervals per variant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


def _z_for(confidence: float) -> float:
    """The two-sided critical value (1.96 for 95 %), by bisection on erfc."""
    alpha = 1 - confidence
    lo, hi = 0.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if math.erfc(mid / math.sqrt(2)) > alpha:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    z = _z_for(confidence)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_p_value(s1: int, n1: int, s2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p) of H0: the two rates are equal (pooled standard error)."""
    if n1 == 0 or n2 == 0:
        return 0.0, 1.0
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 0.0, 1.0
    z = (s1 / n1 - s2 / n2) / se
    return z, math.erfc(abs(z) / math.sqrt(2))


@dataclass(frozen=True)
class Arm:
    variant_id: int
    name: str
    successes: int
    trials: int


def _rate(arm: Arm) -> float:
    return arm.successes / arm.trials if arm.trials else 0.0


def decide(arms: list[Arm], *, confidence: float, min_sample: int) -> dict[str, Any]:
    """The leader, and whether it beats the runner-up significantly with enough sample."""
    ranked = sorted(arms, key=lambda a: (-_rate(a), a.name))
    leader, runner_up = ranked[0], ranked[1]
    z, p = two_proportion_p_value(
        leader.successes, leader.trials, runner_up.successes, runner_up.trials
    )
    rows = []
    for arm in arms:
        low, high = wilson_interval(arm.successes, arm.trials, confidence)
        _, p_vs_leader = (
            (0.0, 1.0)
            if arm is leader
            else two_proportion_p_value(leader.successes, leader.trials, arm.successes, arm.trials)
        )
        rows.append(
            {
                "variant_id": arm.variant_id,
                "name": arm.name,
                "successes": arm.successes,
                "trials": arm.trials,
                "rate": _rate(arm),
                "ci_low": low,
                "ci_high": high,
                "p_value_vs_leader": p_vs_leader,
            }
        )
    enough = all(a.trials >= min_sample for a in arms)
    return {
        "variants": rows,
        "leader_id": leader.variant_id,
        "z": z,
        "p_value": p,
        "confidence": confidence,
        "min_sample": min_sample,
        "enough_sample": enough,
        "significant": enough and p < 1 - confidence and _rate(leader) > _rate(runner_up),
    }
