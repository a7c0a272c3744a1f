"""A small ledger used by cordon's refine-iteration benchmark: real code on real PyPI packages."""

from datetime import datetime

import attrs
from dateutil import parser as dateparser
from tabulate import tabulate


@attrs.define
class Entry:
    when: datetime
    amount: int
    note: str = ""


@attrs.define
class Ledger:
    entries: list = attrs.field(factory=list)

    def add(self, when: str, amount: int, note: str = "") -> Entry:
        entry = Entry(dateparser.parse(when), amount, note)
        self.entries.append(entry)
        return entry

    def balance(self) -> int:
        return sum(e.amount for e in self.entries)

    def between(self, start: str, end: str) -> list:
        lo, hi = dateparser.parse(start), dateparser.parse(end)
        return [e for e in self.entries if lo <= e.when <= hi]

    def table(self) -> str:
        rows = [(e.when.date().isoformat(), e.amount, e.note) for e in self.entries]
        return tabulate(rows, headers=["date", "amount", "note"])
