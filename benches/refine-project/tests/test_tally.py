import pytest

from tally import Ledger


@pytest.fixture
def ledger():
    led = Ledger()
    led.add("2024-01-05", 100, "salary")
    led.add("Feb 3 2024", -30, "books")
    led.add("2024-03-01T10:00", -20, "lunch")
    return led


def test_balance(ledger):
    assert ledger.balance() == 50


def test_between(ledger):
    assert [e.note for e in ledger.between("2024-01-01", "2024-02-28")] == ["salary", "books"]


def test_table(ledger):
    out = ledger.table()
    assert "salary" in out and "amount" in out


@pytest.mark.parametrize("n", range(20))
def test_many(n):
    led = Ledger()
    for i in range(n):
        led.add(f"2024-01-{i % 28 + 1:02d}", i)
    assert led.balance() == sum(range(n))
