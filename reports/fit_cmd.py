"""``gpusizer fit``: will the model fit, with what batch, on which GPU and with which strategy.

    gpusizer fit --preset xl [--gpus H100-80GB,L4] [--world-size 8] [--batch-size 256] [--json]

Predicted from a trace of the project's own train_step under FakeTensorMode (sizing/trace.py), with
the analytic formula beside it; no GPU needed, nothing measured.
"""

from __future__ import annotations

import argparse
import json
import math

from reports.errors import InputError

# reference_model (and so torch) is imported when `fit` runs, not when the gpusizer parser is built:
# `gpusizer report` and `compare` do not need torch.

DEFAULT_WORLD_SIZE = 8  # one typical GPU node
DEFAULT_BATCH_SIZE = 256  # per device, as pytest bench/ uses by default


def _positive_int(option: str):
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {raw!r} is not an integer; allowed: an integer >= 1") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"{option} {raw!r}; allowed: an integer >= 1")
        return value

    return parse


def _params(raw: str) -> float:
    from sizing.workload import MAX_PARAMS

    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--params {raw!r} is not a number; allowed: 1 to {MAX_PARAMS:.0e}") from None
    if not (math.isfinite(value) and 1 <= value <= MAX_PARAMS):
        raise argparse.ArgumentTypeError(f"--params {raw!r}; allowed: a number of parameters from 1 to {MAX_PARAMS:.0e}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_argument_group("the model (one of: --preset, --params, or all four of --input/--hidden/--depth/--output)")
    shape.add_argument("--preset", metavar="NAME", help="a benchmark preset: tiny, small, medium, large or xl "
                                                         "(README's Presets table)")
    shape.add_argument("--params", type=_params, metavar="N", help="the square MLP nearest N parameters (e.g. 7e9)")
    for name in ("input", "hidden", "depth", "output"):
        shape.add_argument(f"--{name}", type=_positive_int(f"--{name}"), metavar="N")
    from sizing.gpus import GPUS

    parser.add_argument("--gpus", metavar="NAMES",
                        help=f"comma-separated GPU names; known: {', '.join(GPUS)} (default: all)")
    parser.add_argument("--strategies", metavar="NAMES", help="comma-separated strategies (default: all)")
    parser.add_argument("--precisions", metavar="NAMES", help="comma-separated; allowed: fp32, tf32, bf16, fp16 "
                                                              "(default: all)")
    parser.add_argument("--world-size", type=_positive_int("--world-size"), default=DEFAULT_WORLD_SIZE, metavar="N",
                        help=f"devices of dp, ddp, horovod, fsdp (single is one); default {DEFAULT_WORLD_SIZE}")
    parser.add_argument("--batch-size", type=_positive_int("--batch-size"), default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"samples per device per step; default {DEFAULT_BATCH_SIZE}")
    parser.add_argument("--json", action="store_true", help="print the table as JSON instead of text")


def model_config(args: argparse.Namespace):
    from reference_model import PRESETS, ModelConfig
    from sizing.workload import config_for_params

    dims = [getattr(args, name) for name in ("input", "hidden", "depth", "output")]
    given = [args.preset is not None, args.params is not None, any(d is not None for d in dims)]
    if sum(given) != 1:
        raise InputError("the model: give exactly one of --preset, --params, or --input/--hidden/--depth/--output")
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise InputError(f"--preset: unknown value {args.preset!r}; allowed: {', '.join(PRESETS)}")
        return PRESETS[args.preset]
    if args.params is not None:
        return config_for_params(args.params)
    if any(d is None for d in dims):
        raise InputError("a custom shape needs all four of --input, --hidden, --depth and --output")
    return ModelConfig(*dims)


def _names(option: str, raw: str | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    if raw is None:
        return allowed
    names = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    unknown = [name for name in names if name not in allowed]
    if unknown or not names:
        raise InputError(f"{option}: unknown value {(unknown or [raw])[0]!r}; allowed: {', '.join(allowed)}")
    return names


def run(args: argparse.Namespace) -> int:
    from reference_model import PRECISIONS
    from sizing.fit import fit_rows, fsdp_rows
    from sizing.gpus import GPUS, parse_gpu_names
    from sizing.strategies import STRATEGY_MEMORY

    config = model_config(args)
    try:
        gpus = parse_gpu_names("--gpus", args.gpus) if args.gpus is not None else tuple(GPUS.values())
    except ValueError as error:
        raise InputError(str(error)) from None
    strategies = _names("--strategies", args.strategies, tuple(STRATEGY_MEMORY))
    precisions = _names("--precisions", args.precisions, PRECISIONS)
    rows = fit_rows(config, gpus, strategies, precisions, args.world_size, args.batch_size)
    fsdp = fsdp_rows(config, gpus, precisions, args.batch_size)
    if args.json:
        print(json.dumps({"model_config": config.as_dict(), "num_params": config.num_params,
                          "gpus": [vars(gpu) for gpu in gpus], "rows": rows, "fsdp_min_world_size": fsdp}, indent=1))
    else:
        print(render_text(config, gpus, rows, fsdp))
    return 0


def render_text(config, gpus, rows: list[dict], fsdp: list[dict]) -> str:
    from sizing.units import format_bytes

    title = (f"model {config.input_size} x {config.hidden_size} x {config.depth} x {config.output_size} "
             f"({config.num_params / 1e9:.3g} B parameters); peak per device from a trace of train_step "
             "(formula beside it); fits = under 85 % of memory; max batch = largest predicted within memory")
    header = (f"{'gpu':<14} {'memory':>9} {'strategy':<8} {'prec':<5} {'world':>5} {'batch':>6} {'peak':>10} "
              f"{'formula':>10}  {'verdict':<13} {'max batch':>9}")
    lines = [title, "", header]
    for row in rows:
        lines.append(
            f"{row['gpu']:<14} {format_bytes(row['gpu_memory_bytes']):>9} {row['strategy']:<8} {row['precision']:<5} "
            f"{row['world_size']:>5} {row['per_device_batch_size']:>6} {format_bytes(row['predicted_peak_bytes']):>10} "
            f"{format_bytes(row['formula_peak_bytes']):>10}  {row['verdict']:<13} {row['max_per_device_batch_size']:>9}")
    if fsdp:
        lines += ["", ("smallest FSDP world size that fits (per-device peak within memory; by the formula, which "
                       "agrees with the trace within 10 %):")]
        for row in fsdp:
            size = row["min_fsdp_world_size"]
            lines.append(f"  {row['gpu']:<14} {row['precision']:<5} {size if size is not None else 'over 4096'}")
    lines += ["", "GPU memory sources:"] + [f"  {gpu.name}: {gpu.source}" for gpu in gpus]
    return "\n".join(lines)
