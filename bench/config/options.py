"""The command-line options of ``pytest bench/``: declared once, parsed into one validated value.

Each option is declared with its allowed values and default so that ``pytest bench/ --help``,
the validation message and the README say the same thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from bench.config.hosts import Cluster
from bench.config.multinode_options import add_multinode_options, cluster_from_config, internode_gbps_from_config
from bench.hardware.devices import DEVICE_CHOICES, is_cuda
from bench.strategies import REGISTRY
from reference_model import PRECISIONS, PRESETS

SCALING_CHOICES = ("weak", "strong")
AUTO = "auto"

# Defaults chosen per device type so a plain `pytest bench/` is useful everywhere and quick on a CPU.
DEFAULT_PRESETS = {"cpu": ("small",), "cuda": ("small", "medium", "large")}
DEFAULT_PRECISIONS = {"cpu": ("fp32",), "cuda": ("fp32", "bf16")}
DEFAULT_MAX_CPU_WORLD_SIZE = 2
DEFAULT_BATCH_SIZE = 256  # per device
DEFAULT_STEPS_PER_ROUND = 10
DEFAULT_ROUNDS = 10
DEFAULT_WARMUP_ROUNDS = 2
# Time-sized rounds (bench/run/round_sizing.py). On a GPU a 10-step round lasts milliseconds: shorter than one NVML
# sample (100 ms) and Hopper's 1 s power averaging, and the controller's IPC becomes a tenth of it. A CPU
# round of the default preset already lasts long enough, so CPU keeps the plain step count.
DEFAULT_MIN_ROUND_S = {"cpu": 0.0, "cuda": 1.0}
DEFAULT_WARMUP_S = {"cpu": 0.0, "cuda": 3.0}  # clocks come up from idle in about that long
# An all-reduce between healthy devices answers in seconds; past this the interconnect is broken and
# every case of that world size is skipped (bench/run/controller.py interconnect_skip_reason).
DEFAULT_CEILING_TIMEOUT_S = 60.0
MAX_ROUND_SIZING_S = 3600.0  # upper end of --min-round-s / --warmup-s: an hour is surely a typo

# --quick: the smallest run that still exercises every strategy end to end.
QUICK = {"presets": ("tiny",), "per_device_batch_at_smallest_world": 64, "steps_per_round": 5, "rounds": 3, "warmup_rounds": 1}

# Bounds of every numeric option (inclusive), checked at parse time: a value outside them passes no
# type check yet fails every case (an infinite deadline, a seed torch cannot take). README says the same.
MAX_COUNT = 1_000_000  # batch size, steps per round, rounds, warm-up rounds
MAX_WORLD_SIZE = 4096
MAX_SEED = 2**32 - 1  # each rank's data seed is seed * 100_003 + rank, which must stay within torch's 64 bits
MIN_TIMEOUT_S, MAX_TIMEOUT_S = 0.001, 7 * 24 * 3600.0  # a week: any real launch or round is shorter
MAX_PRICE_PER_HOUR = 1e6  # no machine rents for more an hour; a larger number is a typo


def _strategy_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


@dataclass(frozen=True)
class BenchOptions:
    """What the user asked for, validated; ``auto`` values resolved by ``resolve``."""

    strategies: tuple[str, ...]
    world_sizes: tuple[int, ...] | None  # None: powers of two up to the devices available
    presets: tuple[str, ...] | None  # None: the device type's default
    precisions: tuple[str, ...] | None
    # --batch-size: the per-device batch at the smallest world size. Under weak scaling every case
    # trains it per device; under strong scaling it fixes the global batch (this x the smallest world
    # size), which larger world sizes split, so their per-device batch is smaller.
    per_device_batch_at_smallest_world: int
    steps_per_round: int
    rounds: int
    warmup_rounds: int
    device: str
    scaling: str
    quick: bool
    verify: bool
    seed: int
    results_dir: str
    launch_timeout_s: float
    round_timeout_s: float
    min_round_s: float | None = None  # None: DEFAULT_MIN_ROUND_S of the device type
    warmup_s: float | None = None  # None: DEFAULT_WARMUP_S of the device type
    ceiling_timeout_s: float = DEFAULT_CEILING_TIMEOUT_S
    plan: bool = False  # --plan: list and estimate, run nothing (bench/run/plan.py)
    price_per_hour: float | None = None  # --price-per-hour: the plan's cost
    cluster: Cluster | None = None  # --hosts/--hostfile; None: this machine only
    internode_gbps: tuple[float, ...] = ()  # the scaling projection's assumed inter-node link rates
    # One profiled round per case after the timed rounds (bench/run/step_profile.py). Off by default: it cost
    # 5.8-6.1% of the default CPU sweep's case wall time (README "Performance"), over the 5% bar.
    step_breakdown: bool = False

    def __post_init__(self) -> None:
        allowed_strategies = _strategy_names()
        _check_members("--strategies", self.strategies, allowed_strategies)
        _check_members("--presets", self.presets or (), tuple(PRESETS))
        _check_members("--precisions", self.precisions or (), PRECISIONS)
        _check_member("--device", self.device, DEVICE_CHOICES)
        _check_member("--scaling", self.scaling, SCALING_CHOICES)
        for option, name in (("--batch-size", "per_device_batch_at_smallest_world"), ("--steps-per-round", "steps_per_round"),
                             ("--rounds", "rounds")):
            _check_positive(option, getattr(self, name))
            _check_range(option, getattr(self, name), 1, MAX_COUNT)
        for size in self.world_sizes or ():
            _check_positive("--world-sizes", size)
            _check_range("--world-sizes", size, 1, MAX_WORLD_SIZE)
        if self.warmup_rounds < 0:
            raise ValueError(f"--warmup-rounds: {self.warmup_rounds!r} is negative; allowed: an integer >= 0")
        _check_range("--warmup-rounds", self.warmup_rounds, 0, MAX_COUNT)
        _check_range("--seed", self.seed, 0, MAX_SEED)
        for name in ("launch_timeout_s", "round_timeout_s", "ceiling_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name.replace('_', '-')}: {getattr(self, name)!r}; allowed: a number > 0")
            _check_range(f"--{name.replace('_', '-')}", getattr(self, name), MIN_TIMEOUT_S, MAX_TIMEOUT_S)
        if self.price_per_hour is not None and not (math.isfinite(self.price_per_hour)
                                                    and 0 <= self.price_per_hour <= MAX_PRICE_PER_HOUR):
            raise ValueError(f"--price-per-hour: {self.price_per_hour!r}; allowed: a number from 0 to {MAX_PRICE_PER_HOUR:g}")
        for name in ("min_round_s", "warmup_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and 0 <= value <= MAX_ROUND_SIZING_S):
                raise ValueError(f"--{name.replace('_', '-')}: {value!r}; allowed: a number of seconds from 0 "
                                 f"to {MAX_ROUND_SIZING_S:g}")

    def resolved_min_round_s(self, device_type: str) -> float:
        return DEFAULT_MIN_ROUND_S[device_type] if self.min_round_s is None else float(self.min_round_s)

    def resolved_warmup_s(self, device_type: str) -> float:
        return DEFAULT_WARMUP_S[device_type] if self.warmup_s is None else float(self.warmup_s)

    def resolved_presets(self, device_type: str) -> tuple[str, ...]:
        if self.presets:
            return self.presets
        return QUICK["presets"] if self.quick else DEFAULT_PRESETS[device_type]

    def resolved_precisions(self, device_type: str) -> tuple[str, ...]:
        return self.precisions or DEFAULT_PRECISIONS[device_type]

    def resolved_world_sizes(self, device_type: str, available: int) -> tuple[int, ...]:
        """Explicit sizes as given (too-large ones are skipped later, with the reason); else 1, 2, 4 ...
        up to the devices available (on CPU up to 2 worker processes)."""
        if self.world_sizes:
            return self.world_sizes
        limit = available if is_cuda(device_type) else min(available, DEFAULT_MAX_CPU_WORLD_SIZE)
        sizes, size = [], 1
        while size <= max(limit, 1):
            sizes.append(size)
            size *= 2
        return tuple(sizes)


def _check_member(option: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{option}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _check_members(option: str, values: tuple[str, ...], allowed: tuple[str, ...]) -> None:
    for value in values:
        _check_member(option, value, allowed)


def _check_positive(option: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{option}: {value!r} is not a positive integer; allowed: an integer >= 1")


def _check_range(option: str, value: float, lo: float, hi: float) -> None:
    """A finite value within [lo, hi], else a ValueError naming the option, the value and the range."""
    finite = not isinstance(value, float) or math.isfinite(value)  # an int of any size is finite
    if not (finite and lo <= value <= hi):
        raise ValueError(f"{option}: {value!r} is out of range; allowed: {lo} to {hi}")


def _split(raw: str | None) -> tuple[str, ...] | None:
    if raw is None or raw.strip() in ("", AUTO):
        return None
    # A value given twice is one case, not two under the same id: repeats are dropped, order kept.
    return tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))


def _to_int(option: str, raw: str, allowed: str = "an integer >= 1") -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        kind = "a positive integer" if allowed == "an integer >= 1" else "an integer"
        raise ValueError(f"{option}: {raw!r} is not {kind}; allowed: {allowed}") from None


def _to_float(option: str, raw: str) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{option}: {raw!r} is not a number; allowed: a number > 0") from None


# (option, dest, default, help). Defaults are strings, parsed like user input.
OPTION_TABLE = (
    ("--strategies", "gs_strategies", AUTO,
     "comma-separated strategies; allowed: single, dp, ddp, horovod, fsdp; default: all (unavailable ones are skipped with the reason)"),
    ("--world-sizes", "gs_world_sizes", AUTO,
     f"comma-separated device counts (GPUs, or worker processes on CPU), each 1 to {MAX_WORLD_SIZE}; repeats dropped; default: 1,2,4,... up to the visible GPUs (CPU: up to 2)"),
    ("--presets", "gs_presets", AUTO,
     f"comma-separated model sizes; allowed: {', '.join(PRESETS)}; default: small on CPU, small,medium,large on GPU (tiny with --quick)"),
    ("--precisions", "gs_precisions", AUTO,
     f"comma-separated precisions; allowed: {', '.join(PRECISIONS)}; default: fp32 on CPU, fp32,bf16 on GPU"),
    ("--batch-size", "gs_batch_size", AUTO,
     f"samples per device per step at the smallest world size (--scaling strong splits that global batch over larger ones; integer 1 to {MAX_COUNT}); default: {DEFAULT_BATCH_SIZE} ({QUICK['per_device_batch_at_smallest_world']} with --quick)"),
    ("--steps-per-round", "gs_steps_per_round", AUTO,
     f"training steps K in one timed round (integer 1 to {MAX_COUNT}); default: {DEFAULT_STEPS_PER_ROUND} ({QUICK['steps_per_round']} with --quick)"),
    ("--rounds", "gs_rounds", AUTO,
     f"measured rounds R per case (integer 1 to {MAX_COUNT}); default: {DEFAULT_ROUNDS} ({QUICK['rounds']} with --quick)"),
    ("--warmup-rounds", "gs_warmup_rounds", AUTO,
     f"unmeasured rounds W before them (integer 0 to {MAX_COUNT}); default: {DEFAULT_WARMUP_ROUNDS} ({QUICK['warmup_rounds']} with --quick)"),
    ("--device", "gs_device", AUTO, "allowed: auto, cpu, cuda; default: auto (cuda when a GPU is visible)"),
    ("--scaling", "gs_scaling", "weak",
     "allowed: weak (per-device batch fixed), strong (global batch = --batch-size x smallest world size, fixed); default: weak"),
    ("--min-round-s", "gs_min_round_s", AUTO,
     (f"seconds a timed round lasts at least: steps per round grow from --steps-per-round until one does "
      f"(0: no sizing; allowed: 0 to {MAX_ROUND_SIZING_S:g}); default: {DEFAULT_MIN_ROUND_S['cuda']:g} on GPU, "
      f"{DEFAULT_MIN_ROUND_S['cpu']:g} on CPU")),
    ("--warmup-s", "gs_warmup_s", AUTO,
     (f"seconds of unmeasured warm-up (and at least --warmup-rounds rounds; allowed: 0 to {MAX_ROUND_SIZING_S:g}); "
      f"default: {DEFAULT_WARMUP_S['cuda']:g} on GPU, {DEFAULT_WARMUP_S['cpu']:g} on CPU")),
    ("--seed", "gs_seed", "0", f"seed of the initial weights and the synthetic data (integer 0 to {MAX_SEED}); default: 0"),
    ("--results-dir", "gs_results_dir", "results",
     "folder for the result file <UTC time>_<host>.json (ignored with --benchmark-json); default: results"),
    ("--launch-timeout-s", "gs_launch_timeout_s", "120",
     f"seconds the workers of one case may take to start ({MIN_TIMEOUT_S} to {MAX_TIMEOUT_S:.0f}); default: 120"),
    ("--round-timeout-s", "gs_round_timeout_s", "600",
     f"seconds one round may take before the case fails ({MIN_TIMEOUT_S} to {MAX_TIMEOUT_S:.0f}); default: 600"),
    ("--ceiling-timeout-s", "gs_ceiling_timeout_s", f"{DEFAULT_CEILING_TIMEOUT_S:g}",
     (f"seconds the all-reduce ceiling at a world size may take; past it (or when it fails) every case of "
      f"that world size is skipped ({MIN_TIMEOUT_S} to {MAX_TIMEOUT_S:.0f}); default: {DEFAULT_CEILING_TIMEOUT_S:g}")),
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("gpusizer", "gpusizer benchmark matrix")
    for option, dest, default, help_text in OPTION_TABLE:
        group.addoption(option, dest=dest, default=default, metavar="VALUE", help=help_text)
    group.addoption("--quick", dest="gs_quick", action="store_true",
                    help="smoke run: preset tiny, batch 64, 5 steps x 3 rounds (each still overridable)")
    group.addoption("--plan", dest="gs_plan", action="store_true",
                    help="list the cases and skips with reasons and the estimated wall time; runs nothing, "
                         "writes no result file")
    group.addoption("--price-per-hour", dest="gs_price_per_hour", default=None, metavar="VALUE",
                    help="with --plan: the machine's price per hour (a number from 0 to 1e6), to estimate the cost")
    group.addoption("--step-breakdown", dest="gs_step_breakdown", action="store_true",
                    help="after each case's timed rounds, one more round under torch.profiler that splits the step "
                         "into compute, exposed and overlapped communication, other and idle (about one round's time)")
    group.addoption("--verify", dest="gs_verify", action="store_true",
                    help="before measuring, check each strategy reaches the same weights as single (fp32)")
    add_multinode_options(group)


def options_from_config(config: pytest.Config) -> BenchOptions:
    """Parse and validate; a bad value raises ValueError naming the option, the value and what is allowed."""
    get = config.getoption
    quick = bool(get("gs_quick"))

    def int_or(dest: str, option: str, default: int, allowed: str = "an integer >= 1") -> int:
        raw = get(dest)
        return default if raw == AUTO else _to_int(option, raw, allowed)

    world_sizes = _split(get("gs_world_sizes"))
    return BenchOptions(
        strategies=_split(get("gs_strategies")) or _strategy_names(),
        world_sizes=tuple(dict.fromkeys(_to_int("--world-sizes", w) for w in world_sizes)) if world_sizes else None,
        presets=_split(get("gs_presets")),
        precisions=_split(get("gs_precisions")),
        per_device_batch_at_smallest_world=int_or("gs_batch_size", "--batch-size", QUICK["per_device_batch_at_smallest_world"] if quick else DEFAULT_BATCH_SIZE),
        steps_per_round=int_or("gs_steps_per_round", "--steps-per-round",
                               QUICK["steps_per_round"] if quick else DEFAULT_STEPS_PER_ROUND),
        rounds=int_or("gs_rounds", "--rounds", QUICK["rounds"] if quick else DEFAULT_ROUNDS),
        warmup_rounds=int_or("gs_warmup_rounds", "--warmup-rounds",
                             QUICK["warmup_rounds"] if quick else DEFAULT_WARMUP_ROUNDS, "an integer >= 0"),
        device=get("gs_device"),
        scaling=get("gs_scaling"),
        quick=quick,
        verify=bool(get("gs_verify")),
        step_breakdown=bool(get("gs_step_breakdown")),
        seed=_to_int("--seed", get("gs_seed"), allowed=f"an integer 0 to {MAX_SEED}"),
        results_dir=get("gs_results_dir"),
        launch_timeout_s=_to_float("--launch-timeout-s", get("gs_launch_timeout_s")),
        round_timeout_s=_to_float("--round-timeout-s", get("gs_round_timeout_s")),
        ceiling_timeout_s=_to_float("--ceiling-timeout-s", get("gs_ceiling_timeout_s")),
        plan=bool(get("gs_plan")),
        price_per_hour=None if get("gs_price_per_hour") is None else _price(get("gs_price_per_hour")),
        min_round_s=_seconds_or_auto("--min-round-s", get("gs_min_round_s")),
        warmup_s=_seconds_or_auto("--warmup-s", get("gs_warmup_s")),
        cluster=cluster_from_config(get),
        internode_gbps=internode_gbps_from_config(get),
    )


def _price(raw: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"--price-per-hour: {raw!r} is not a number; allowed: a number from 0 to {MAX_PRICE_PER_HOUR:g}") from None
    return value


def _seconds_or_auto(option: str, raw: str) -> float | None:
    """A finite number of seconds (range checked by BenchOptions), or None for ``auto``."""
    if raw == AUTO:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = None
    if value is None or not math.isfinite(value):
        raise ValueError(f"{option}: {raw!r} is not a finite number; allowed: a number of seconds from 0 "
                         f"to {MAX_ROUND_SIZING_S:g}, or auto") from None
    return value
