from calc import add, clamp, mean


def test_add():
    assert add(2, 3) == 5


def test_mean():
    assert mean([1, 2, 3, 6]) == 3


def test_clamp():
    assert clamp(7, 0, 5) == 5
    assert clamp(-1, 0, 5) == 0
