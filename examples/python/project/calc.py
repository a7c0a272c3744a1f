"""A tiny library with two bugs, for the refine-loop example to fix."""


def add(a: float, b: float) -> float:
    return a - b


def mean(xs: list) -> float:
    return sum(xs) / (len(xs) - 1)


def clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(x, hi))
