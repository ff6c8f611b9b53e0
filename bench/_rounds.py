"""Side-by-side timing on a shared machine: interleaved rounds, medians of per-round ratios.

Absolute times on a small machine shared with other work move by 2x from one minute to the
next; the load of one moment is shared by everything timed in that moment. So every
benchmark here times all its subjects in rounds, one batch of each per round, in an order
that rotates (and reverses every other round) so that no subject always runs first or
last. Each round gives each subject's ratio to the baseline's batch of the same round; a
subject's figure is the median of those ratios. A whole measurement is repeated (three
times by default) and every repeat is reported, so a claim must hold in each.

Standard library only: the peers' virtualenvs import this module too.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Repeats", "interleaved", "order", "paired", "ratio_cell", "summary"]

# {subject: [ratio to the baseline in round 1, round 2, ...]}
Ratios = dict[str, list[float]]
# One entry per repeat: {subject: median ratio}
Repeats = list[dict[str, float]]


def order(names: Sequence[str], round_: int) -> list[str]:
    """Return *names* rotated by *round_*, reversed on odd rounds."""
    names = list(names)
    shift = round_ % len(names)
    rotated = names[shift:] + names[:shift]
    return rotated[::-1] if round_ % 2 else rotated


def interleaved(
    subjects: Mapping[str, Callable[[], float]],
    baseline: str,
    rounds: int,
    *,
    times: dict[str, list[float]] | None = None,
) -> Ratios:
    """Run one batch of every subject per round; return each one's per-round ratios.

    Each callable runs one batch and returns its cost (seconds, or seconds per operation).
    A callable that raises is the subject's failure: it propagates. *times*, if given,
    collects the raw costs.
    """
    ratios: Ratios = {name: [] for name in subjects}
    for n in range(rounds):
        took = {name: subjects[name]() for name in order(list(subjects), n)}
        for name, cost in took.items():
            ratios[name].append(cost / took[baseline])
            if times is not None:
                times.setdefault(name, []).append(cost)
    return ratios


def summary(ratios: Ratios) -> dict[str, float]:
    """Return each subject's median ratio."""
    return {name: statistics.median(values) for name, values in ratios.items()}


def ratio_cell(value: float | None) -> str:
    """Format one ratio as ``1.02x``; None (failed or not applicable) as ``-``."""
    return "-" if value is None else f"{value:.2f}x"


def paired(times: Mapping[str, Sequence[float]], subject: str, baseline: str) -> float:
    """Return the median over rounds of *subject*'s cost divided by *baseline*'s."""
    return statistics.median(a / b for a, b in zip(times[subject], times[baseline], strict=True))
