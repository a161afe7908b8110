"""The end of a session: probe the matmul peaks again, re-judge every record's ``unstable`` flag with
both peaks (bench/record/flags.py), and say in one line when the session was unstable."""

from __future__ import annotations

from dataclasses import dataclass

from bench.record.flags import apply_stability


@dataclass(frozen=True)
class PeakPair:
    device: str
    precision: str
    start_flops_per_s: float
    end_flops_per_s: float

    def __post_init__(self) -> None:
        if not (self.start_flops_per_s > 0 and self.end_flops_per_s >= 0):
            raise ValueError(f"PeakPair: peaks {self.start_flops_per_s!r}, {self.end_flops_per_s!r}; "
                             f"allowed: start > 0, end >= 0")

    @property
    def ratio(self) -> float:
        return self.end_flops_per_s / self.start_flops_per_s


def close_session(records: list[dict]) -> list[PeakPair]:
    """Measure the peaks again and update ``records`` (the benchmarks' extra_info dicts) in place."""
    from bench.hardware.peak import measure_end_of_session, peak_key_of, session_peaks  # late: imports torch

    if not records:
        return []
    ends = measure_end_of_session()
    for record in records:
        key = peak_key_of(record.get("device_type", ""), record.get("precision", ""), record.get("peak_flops_per_s"))
        if key is not None and key in ends:
            apply_stability(record, peak_end_flops_per_s=ends[key])
    starts = {key: start for key, (start, _) in session_peaks().items()}
    return [PeakPair(device=key[0], precision=key[1], start_flops_per_s=starts[key], end_flops_per_s=end)
            for key, end in ends.items()]


def unstable_line(records: list[dict], peaks: list[PeakPair]) -> str | None:
    """``None`` when no case was unstable; else one line naming the cases and the two peaks."""
    unstable = [record["case_id"] for record in records if "unstable" in record.get("flags", [])]
    if not unstable:
        return None
    shown = ", ".join(unstable[:5]) + (f" and {len(unstable) - 5} more" if len(unstable) > 5 else "")
    peak_text = "; ".join(f"{pair.device} {pair.precision} {pair.start_flops_per_s / 1e9:.4g} GFLOP/s at the start, "
                          f"{pair.end_flops_per_s / 1e9:.4g} at the end ({pair.ratio:.2f}x)" for pair in peaks)
    return (f"gpusizer: UNSTABLE machine: {len(unstable)} case(s) flagged unstable ({shown}); matmul peak "
            f"{peak_text or 'not measured again (run cut short)'}; each record's unstable_reasons says why")
