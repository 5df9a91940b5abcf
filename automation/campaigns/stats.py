"""The tests that pick an A/B winner, each of the leader against the runner-up, with Wilson
confidence intervals per variant: a pooled two-proportion z-test, or the Bayesian
probability that one rate beats another under uniform Beta(1, 1) priors, computed exactly
(a finite sum, no sampling) so the same numbers always give the same decision."""

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
    if n <= 0:
        return 0.0, 0.0
    z = _z_for(confidence)
    p = min(max(successes, 0), n) / n  # see probability_to_beat: successes may exceed n
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


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def probability_to_beat(s1: int, n1: int, s2: int, n2: int) -> float:
    """P(rate 1 > rate 2) with posteriors Beta(1 + s, 1 + n - s): the closed form
    sum_{i<a1} B(a2 + i, b1 + b2) / ((b1 + i) B(1 + i, b1) B(a2, b2)) (Evan Miller),
    one term per success of arm 1, each in log space so large counts do not overflow."""
    # Successes are clamped to the trials: an open of a message counted as bounced, or
    # not yet marked sent, must not make a posterior parameter zero or negative.
    s1, s2 = min(max(s1, 0), max(n1, 0)), min(max(s2, 0), max(n2, 0))
    a1, b1 = 1 + s1, 1 + max(n1, 0) - s1
    a2, b2 = 1 + s2, 1 + max(n2, 0) - s2
    # The sum runs over the smaller of the two success counts, using the symmetry
    # P(x1 > x2) = 1 - P(x2 > x1) (ties have probability zero for continuous posteriors).
    if a1 > a2:
        return 1.0 - probability_to_beat(s2, n2, s1, n1)
    base = _log_beta(a2, b2)
    total = 0.0
    for i in range(a1):
        total += math.exp(
            _log_beta(a2 + i, b1 + b2) - math.log(b1 + i) - _log_beta(1 + i, b1) - base
        )
    return min(max(total, 0.0), 1.0)


@dataclass(frozen=True)
class Arm:
    variant_id: int
    name: str
    successes: int
    trials: int


def _rate(arm: Arm) -> float:
    return arm.successes / arm.trials if arm.trials else 0.0


def decide(
    arms: list[Arm], *, confidence: float, min_sample: int, method: str = "z_test"
) -> dict[str, Any]:
    """The leader, and whether it beats the runner-up significantly with enough sample:
    p < 1 - confidence (z-test) or P(leader beats runner-up) >= confidence (Bayesian).
    Both figures are stored whatever the method, with each variant's probability to beat
    the control (the first arm)."""
    ranked = sorted(arms, key=lambda a: (-_rate(a), a.name))
    leader, runner_up = ranked[0], ranked[1]
    z, p = two_proportion_p_value(
        leader.successes, leader.trials, runner_up.successes, runner_up.trials
    )
    probability = probability_to_beat(
        leader.successes, leader.trials, runner_up.successes, runner_up.trials
    )
    control = arms[0]
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
                "probability_to_beat_control": (
                    None
                    if arm is control
                    else probability_to_beat(
                        arm.successes, arm.trials, control.successes, control.trials
                    )
                ),
            }
        )
    enough = all(a.trials >= min_sample for a in arms)
    ahead = _rate(leader) > _rate(runner_up)
    passed = probability >= confidence if method == "bayesian" else p < 1 - confidence
    return {
        "variants": rows,
        "leader_id": leader.variant_id,
        "method": method,
        "z": z,
        "p_value": p,
        "probability_leader_beats_runner_up": probability,
        "confidence": confidence,
        "min_sample": min_sample,
        "enough_sample": enough,
        "significant": enough and passed and ahead,
    }
