"""Do the strategies compute the same training? Each one against ``single`` on the same global data.

From the same initial weights (``build_model`` seeds them), a data-parallel run of N ranks on
per-rank batches must end where one device ends after training on the concatenated batches
(``reference_model.global_batches``), up to float rounding: the gradient of the mean loss over the
global batch is the mean of the ranks' gradients. Checked in fp32 only, where "the same" can be tight;
lower precisions round differently by design.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from bench.config.cases import BenchCase
from bench.hardware.devices import threads_per_rank, torch_device
from reference_model import Precision, TrainState, build_model, global_batches, make_optimizer, train_step

VERIFY_STEPS = 3
# Measured on CPU, 2 ranks, 3 steps: one device vs N ranks differ by 2e-9..7e-9 (summation order),
# the steps move parameters by 6e-4..1.5e-3, and a rank training on the wrong data lands 6e-4 away.
# 1e-6 sits orders of magnitude from both sides, with room for GPUs picking other kernels per batch size.
FP32_ABS_TOLERANCE = 1e-6


class VerifyError(AssertionError):
    """The strategy did not reach single's parameters: one line with the largest difference."""


@dataclass(frozen=True)
class VerifyResult:
    max_abs_difference: float
    max_abs_update: float  # how far single's parameters moved: the difference must be far below this
    steps: int

    @property
    def passed(self) -> bool:
        return self.max_abs_difference <= FP32_ABS_TOLERANCE


def reference_parameters(case: BenchCase, steps: int, device: torch.device) -> tuple[list, list]:
    """(initial, trained) parameters of ``single`` after ``steps`` steps on the case's global batches."""
    precision = Precision("fp32", device.type)
    with precision.matmul_mode():
        model = build_model(case.model_config, seed=case.seed, device=device)
        initial = [p.detach().cpu().clone() for p in model.parameters()]
        state = TrainState(model, make_optimizer(model), precision)
        batches = global_batches(case.model_config, case.per_device_batch_size, seed=case.seed,
                                 world_size=case.world_size, device=device)
        for step in range(steps):
            train_step(state, *batches[step % len(batches)])
        trained = [p.detach().float().cpu().clone() for p in model.parameters()]
    return initial, trained


def reference_in_rank(case: dict, steps: int) -> list[list[torch.Tensor]]:
    """In a probe rank process (bench/launch/probe.py): ``reference_parameters`` of the case given as its fields."""
    case = BenchCase(**case)
    return list(reference_parameters(case, steps, torch_device(case.device_type)))


def max_abs_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if [t.shape for t in a] != [t.shape for t in b]:
        raise VerifyError(f"parameter shapes differ: {[tuple(t.shape) for t in a]} vs {[tuple(t.shape) for t in b]}")
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def case_reference(case: BenchCase, steps: int = VERIFY_STEPS, *, timeout_s: float) -> tuple[list, list] | None:
    """``single``'s (initial, trained) parameters for --verify, or None where the check does not apply.

    Trained in a rank process of its own (the pytest process never trains), with a single rank's
    threads, before the case's workers start: the reference's model then never shares the device with
    the case's own memory, and is gone (its process ended) before the case's peak count starts.
    ``timeout_s``: the probe's deadline (bench.launch.probe.ProbeError past it).
    """
    if case.precision != "fp32":
        return None
    from bench.launch.probe import run_in_ranks  # late: the launch package imports the strategies

    (initial, trained), = run_in_ranks(f"{__name__}:reference_in_rank",
                                       [{"case": dataclasses.asdict(case), "steps": steps}],
                                       threads=threads_per_rank(case.device_type, 1), timeout_s=timeout_s,
                                       what=f"{case.case_id}: --verify's reference")
    return initial, trained


def verify_group(case: BenchCase, group, steps: int = VERIFY_STEPS,
                 reference: tuple[list, list] | None = None) -> VerifyResult:
    """Train the launched group ``steps`` steps (from its fresh weights) and compare with ``single``."""
    if reference is None:
        device = torch_device(case.device_type)
        reference = reference_parameters(case, steps, device)
    group.run_round(steps)
    trained = group.full_parameters()
    initial, expected = reference
    return VerifyResult(max_abs_difference(trained, expected), max_abs_difference(initial, expected), steps)


def check_case(case: BenchCase, group, reference: tuple[list, list] | None = None) -> VerifyResult | None:
    """--verify before measuring: raises VerifyError (one line) on a mismatch; None where not applicable.

    ``reference``: from ``case_reference``, computed before the group started (else computed now).
    Afterwards every rank's peak-memory count restarts, so the check's gathers and copies never
    count as the case's peak.
    """
    if case.precision != "fp32":
        return None
    result = verify_group(case, group, reference=reference)
    group.reset_peak_memory()
    if not result.passed:
        raise VerifyError(
            f"{case.case_id}: parameters after {result.steps} steps differ from single's on the same global "
            f"batch: max abs difference {result.max_abs_difference:.3g} > tolerance {FP32_ABS_TOLERANCE:g} "
            f"(the steps moved them by up to {result.max_abs_update:.3g})"
        )
    return result
