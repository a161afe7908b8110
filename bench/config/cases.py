"""One benchmark case, and the function that makes the matrix of valid cases."""

from __future__ import annotations

from dataclasses import dataclass

from bench.config.hosts import Cluster, place, powers_of_two_upto
from bench.config.options import SCALING_CHOICES, BenchOptions
from bench.strategies import REGISTRY
from gpusizer_common.case_identity import CASE_IDENTITY
from reference_model import PRECISIONS, ModelConfig, preset


@dataclass(frozen=True)
class BenchCase:
    """Everything that identifies and configures one measured case."""

    strategy: str
    world_size: int
    preset: str
    precision: str
    device_type: str
    per_device_batch_size: int
    scaling: str
    steps_per_round: int
    rounds: int
    warmup_rounds: int
    seed: int = 0
    # Multi-node: "host:slots" of each host the ranks are placed on, in order; (): this machine only.
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "hosts", tuple(self.hosts))  # a list after a JSON round trip
        preset(self.preset)  # raises ValueError naming the allowed presets
        if self.precision not in PRECISIONS:
            raise ValueError(f"BenchCase.precision: {self.precision!r}; allowed: {', '.join(PRECISIONS)}")
        if self.device_type not in ("cpu", "cuda"):
            raise ValueError(f"BenchCase.device_type: {self.device_type!r}; allowed: cpu, cuda")
        if self.scaling not in SCALING_CHOICES:
            raise ValueError(f"BenchCase.scaling: {self.scaling!r}; allowed: {', '.join(SCALING_CHOICES)}")
        for name in ("world_size", "per_device_batch_size", "steps_per_round", "rounds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"BenchCase.{name}: {value!r}; allowed: an integer >= 1")
        if self.warmup_rounds < 0:
            raise ValueError(f"BenchCase.warmup_rounds: {self.warmup_rounds!r}; allowed: an integer >= 0")

    @property
    def model_config(self) -> ModelConfig:
        return preset(self.preset)

    @property
    def global_batch_size(self) -> int:
        return self.per_device_batch_size * self.world_size

    @property
    def case_id(self) -> str:
        suffix = "-strong" if self.scaling == "strong" else ""
        if len(self.hosts) > 1:
            suffix += f"-{len(self.hosts)}nodes"
        return f"{self.strategy}-{self.world_size}-{self.preset}-{self.precision}{suffix}"

    def identity(self) -> dict:
        """The keys that say which case this is (also written for skipped and failed cases)."""
        return {
            "case_id": self.case_id,
            **{name: getattr(self, name) for name in CASE_IDENTITY},
            "global_batch_size": self.global_batch_size,
            **({"nodes": len(self.hosts), "hosts": list(self.hosts),
                "slots_per_node": [int(spec.rsplit(":", 1)[1]) for spec in self.hosts]} if self.hosts else {}),
        }


def build_cases(options: BenchOptions, device_type: str, available_devices: int) -> list[BenchCase]:
    """The valid cases for these options, in a stable, readable order.

    Only well-formed cases are made: a strategy that runs one process on one device (``single``)
    appears at world size 1 only. Cases this machine cannot run are still made; they skip with
    the reason when they run, so the reason reaches the terminal and the result file.
    """
    cluster = options.cluster
    if cluster is not None and not options.world_sizes:
        world_sizes = powers_of_two_upto(cluster.total_slots)
    else:
        world_sizes = options.resolved_world_sizes(device_type, available_devices)
    # Strong scaling keeps the global batch fixed at what the smallest world size trains.
    strong_global_batch = options.per_device_batch_at_smallest_world * min(world_sizes)
    cases = []
    # Strategy and world size outermost: the cases one launched worker group serves (its presets and
    # precisions) run back to back, so the group is launched once for all of them (bench/run/group_pool.py).
    for strategy_name in options.strategies:
        strategy = REGISTRY[strategy_name]
        for world_size in world_sizes:
            if world_size > 1 and not strategy.multi_device:
                continue
            for preset_name in options.resolved_presets(device_type):
                for precision in options.resolved_precisions(device_type):
                    if options.scaling == "strong":
                        if strong_global_batch % world_size:
                            continue  # a global batch that does not split evenly is not a valid case
                        per_device = strong_global_batch // world_size
                    else:
                        per_device = options.per_device_batch_at_smallest_world
                    cases.append(
                        BenchCase(
                            strategy=strategy_name,
                            world_size=world_size,
                            preset=preset_name,
                            precision=precision,
                            device_type=device_type,
                            per_device_batch_size=per_device,
                            scaling=options.scaling,
                            steps_per_round=options.steps_per_round,
                            rounds=options.rounds,
                            warmup_rounds=options.warmup_rounds,
                            seed=options.seed,
                            hosts=placement(cluster, strategy, world_size),
                        )
                    )
    return cases


def placement(cluster: Cluster | None, strategy, world_size: int) -> tuple[str, ...]:
    """Where a multi-node strategy's ranks go on --hosts ("host:slots" each); () runs on this machine
    (no --hosts, a strategy that cannot span hosts, or more ranks than slots: skipped with the reason)."""
    if cluster is None or not strategy.multi_node or world_size < 2:
        return ()
    return tuple(host.spec() for host in place(cluster.hosts, world_size))
