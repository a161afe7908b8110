"""The prices the user pays, from a CSV they write: what a price matches, per hour, per GPU or per instance.

Columns (a header row, any order, extra columns ignored):

    match            what the price is for: a cloud instance type (``p4d.24xlarge``, as the result
                     file's inventory records it), a machine name (hostname), or a GPU/CPU model name
                     (``H100 80GB``); case-insensitive
    price_per_hour   a number >= 0, in ``currency``
    per              ``gpu`` (paid per device used) or ``instance`` (the whole machine, however many
                     of its devices a setup uses)
    source           where the price comes from (a URL, a quote number)
    date             when it was read (YYYY-MM-DD); prices change
    currency         optional, default USD; one currency per file, since costs are compared

A setup is priced by the row whose ``match`` equals its instance type; failing that, its machine name;
failing that, the longest ``match`` contained in its device name (so ``H100 80GB`` wins over ``H100``).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from reports.errors import InputError

REQUIRED_COLUMNS = ("match", "price_per_hour", "per", "source", "date")
PER_CHOICES = ("gpu", "instance")
DEFAULT_CURRENCY = "USD"


@dataclass(frozen=True)
class Price:
    match: str
    price_per_hour: float
    per: str
    source: str
    date: str
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        if not self.match.strip():
            raise ValueError("match: empty; allowed: a machine name or a GPU/CPU model name")
        if not (math.isfinite(self.price_per_hour) and self.price_per_hour >= 0):
            raise ValueError(f"price_per_hour: {self.price_per_hour!r}; allowed: a number >= 0")
        if self.per not in PER_CHOICES:
            raise ValueError(f"per: {self.per!r}; allowed: {', '.join(PER_CHOICES)}")

    def hourly_cost(self, compute_devices: int) -> float:
        """What a setup using ``compute_devices`` of this machine pays per hour."""
        return self.price_per_hour * (compute_devices if self.per == "gpu" else 1)


@dataclass(frozen=True)
class PriceTable:
    path: str
    prices: tuple[Price, ...]
    currency: str

    def find(self, machine: str, device_name: str, instance_type: str | None = None) -> Price | None:
        for name in (instance_type, machine):
            for price in self.prices if name else ():
                if price.match.casefold() == name.casefold():
                    return price
        device_key = device_name.casefold()
        contained = [price for price in self.prices if price.match.casefold() in device_key]
        return max(contained, key=lambda price: len(price.match)) if contained else None


def load_prices(path: str) -> PriceTable:
    """Read and check the prices CSV; InputError naming the file, the row and what is wrong."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"prices file {path}: does not exist or is not a file")
    try:
        text = file.read_text(encoding="utf-8-sig")  # -sig: spreadsheets often write a BOM
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"prices file {path}: cannot be read as UTF-8 text ({error})") from None
    # Comments and blank lines are skipped, but errors name the line of the file as an editor shows it.
    numbered = [(number, line) for number, line in enumerate(text.splitlines(), start=1)
                if line.strip() and not line.lstrip().startswith("#")]
    lines = [line for _, line in numbered]
    if not lines:
        raise InputError(f"prices file {path}: is empty; expected a header with {', '.join(REQUIRED_COLUMNS)}")
    reader = csv.DictReader(lines)
    header = [name.strip() for name in reader.fieldnames or []]
    missing = [column for column in REQUIRED_COLUMNS if column not in header]
    if missing:
        raise InputError(f"prices file {path}: missing column {', '.join(missing)}; required: "
                         f"{', '.join(REQUIRED_COLUMNS)} (optional: currency)")
    prices = []
    for raw in reader:
        number = numbered[reader.line_num - 1][0]  # line_num: lines read so far, so this row's (last) line
        row = {(key or "").strip(): (value or "").strip() for key, value in raw.items() if key is not None}
        prices.append(_price(path, number, row))
    if not prices:
        raise InputError(f"prices file {path}: has a header but no prices")
    currencies = sorted({price.currency for price in prices})
    if len(currencies) > 1:
        raise InputError(f"prices file {path}: mixes currencies {', '.join(currencies)}; allowed: one currency "
                         f"per file, so that costs can be compared")
    return PriceTable(path=path, prices=tuple(prices), currency=currencies[0])


def _price(path: str, number: int, row: dict) -> Price:
    where = f"prices file {path}: line {number}"
    raw_price = row.get("price_per_hour", "")
    try:
        price_per_hour = float(raw_price)
    except ValueError:
        raise InputError(f"{where}: price_per_hour {raw_price!r} is not a number; allowed: a number >= 0") from None
    if not math.isfinite(price_per_hour) or price_per_hour < 0:
        raise InputError(f"{where}: price_per_hour {raw_price!r} is negative or not finite; allowed: a number >= 0")
    raw_date = row.get("date", "")
    try:
        date.fromisoformat(raw_date)
    except ValueError:
        raise InputError(f"{where}: date {raw_date!r} is not a date; allowed: YYYY-MM-DD") from None
    if not row.get("source"):
        raise InputError(f"{where}: source is empty; say where the price comes from")
    try:
        return Price(match=row.get("match", ""), price_per_hour=price_per_hour, per=row.get("per", "").lower(),
                     source=row["source"], date=raw_date, currency=(row.get("currency") or DEFAULT_CURRENCY).upper())
    except ValueError as error:
        raise InputError(f"{where}: {error}") from None
