"""Statistics of the path benchmark: quantiles, paired differences with a bootstrap 95 %
interval, the sign test, and the smallest effect a run can detect.  Pure Python,
deterministic (seeded bootstrap), so the report is reproducible from results.json."""
from __future__ import annotations

import math
import random
import statistics


def quantile(vals, q: float):
    """Nearest-rank quantile (q in [0, 1]) of vals, None when empty."""
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def summary(vals) -> dict:
    return {"n": len(vals), "p50": quantile(vals, 0.5), "p99": quantile(vals, 0.99),
            "p999": quantile(vals, 0.999), "mean": statistics.fmean(vals) if vals else None}


def bootstrap_ci(diffs, stat=statistics.median, n_boot: int = 4000, level: float = 0.95, seed: int = 13):
    """Percentile bootstrap interval of stat(diffs); (lo, hi), or (None, None) for < 2 values."""
    if len(diffs) < 2:
        return None, None
    rng = random.Random(seed)
    k = len(diffs)
    reps = sorted(stat([diffs[rng.randrange(k)] for _i in range(k)]) for _b in range(n_boot))
    a = (1 - level) / 2
    return reps[int(a * (n_boot - 1))], reps[int(math.ceil((1 - a) * (n_boot - 1)))]


def sign_test(diffs) -> dict:
    """Two-sided exact sign test (zeros dropped): {"pos", "neg", "p"}."""
    pos = sum(1 for d in diffs if d > 0)
    neg = sum(1 for d in diffs if d < 0)
    n = pos + neg
    if n == 0:
        return {"pos": 0, "neg": 0, "p": 1.0}
    k = min(pos, neg)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"pos": pos, "neg": neg, "p": p}


def min_detectable(diffs, alpha: float = 0.05, power: float = 0.8):
    """Smallest true mean difference these paired rounds detect with the given power:
    (z(1 - alpha/2) + z(power)) x sd / sqrt(n); None for < 2 rounds."""
    if len(diffs) < 2:
        return None
    nd = statistics.NormalDist()
    return (nd.inv_cdf(1 - alpha / 2) + nd.inv_cdf(power)) * statistics.stdev(diffs) / math.sqrt(len(diffs))


def sign_rounds_needed(alpha: float = 0.05) -> int:
    """Fewest rounds for which a unanimous sign can reach two-sided significance alpha."""
    n = 1
    while 2 / 2 ** n > alpha:
        n += 1
    return n


def paired(a_by_round: dict, b_by_round: dict) -> dict:
    """a - b over the rounds both have: per-round differences, their median, bootstrap 95 %
    interval of the median, sign test, and the smallest detectable mean difference."""
    rounds = sorted(set(a_by_round) & set(b_by_round))
    diffs = [a_by_round[r] - b_by_round[r] for r in rounds]
    lo, hi = bootstrap_ci(diffs)
    return {"rounds": rounds, "diffs": diffs, "median": statistics.median(diffs) if diffs else None,
            "ci95": [lo, hi], "sign": sign_test(diffs), "mde": min_detectable(diffs)}


def ecdf(vals, points: int = 200) -> tuple[list, list]:
    """Down-sampled empirical CDF (x sorted, y in (0, 1]) for plotting."""
    s = sorted(vals)
    if not s:
        return [], []
    step = max(1, len(s) // points)
    idx = list(range(0, len(s), step))
    if idx[-1] != len(s) - 1:
        idx.append(len(s) - 1)
    return [s[i] for i in idx], [(i + 1) / len(s) for i in idx]
