"""--internode-gbps, parsed the same way by `pytest bench/` and `gpusizer report`: the inter-node link
rates (Gbit/s of all-reduce bus bandwidth) the scaling projection is made for."""

from __future__ import annotations

# Today's fastest links are 800 Gbit/s; 100 Tbit/s leaves room and stops typos.
MAX_INTERNODE_GBPS = 100_000.0
ALLOWED = "comma-separated numbers > 0 (Gbit/s), e.g. 100,400"


def parse_internode_gbps(raw: str | None) -> tuple[float, ...]:
    """The rates in the order given, repeats dropped (one projection row per rate); () for none.
    Raises ValueError with the one-line usage message."""
    raw = (raw or "").strip()
    if not raw:
        return ()
    rates: list[float] = []
    for part in raw.split(","):
        try:
            rate = float(part)
        except ValueError:
            rate = float("nan")
        if not 0 < rate <= MAX_INTERNODE_GBPS:
            raise ValueError(f"--internode-gbps: {part.strip()!r} is not a positive number up to "
                             f"{MAX_INTERNODE_GBPS:g}; allowed: {ALLOWED}")
        if rate not in rates:
            rates.append(rate)
    return tuple(rates)
