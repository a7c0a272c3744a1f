import pytest

import calc


def test_add():
    assert calc.add(2, 3) == 5


def test_divide():
    assert calc.divide(9, 3) == 3


def test_divide_by_zero():
    with pytest.raises(ZeroDivisionError):
        calc.divide(1, 0)


def test_mean():
    assert calc.mean([1, 2, 3]) == 2
