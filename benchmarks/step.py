"""Time one segment-everything train step of the real MobileSAM (vit_t, 1024x1024) per grid size.

    python -m benchmarks.step                          # grids 4 8 16, 3 runs each
    python -m benchmarks.step --grids 4 16 --runs 2 --json step.json

For every grid it runs four variants on one coco-mini image, each in its own process so that
the peak memory it reports belongs to that variant alone. The variants take turns, one step
each per round, so that a changing background load reaches all of them alike:

- ``chunked``: ``trainable.step.train_image`` with ``--chunk-size`` prompts per decoder batch,
  in the schedule it picks for the image (the matched re-decode when the ground-truth masks are
  at most 0.4 of the prompts, two passes otherwise).
- ``two_pass``: the same with the two-pass schedule forced, to weigh the schedules.
- ``straightforward``: ``benchmarks.straightforward``, every prompt in one decoder batch. It is
  skipped where its memory, extrapolated from the smaller grids of the same run, would pass the
  memory limit.
- ``subset``: ``train_image`` on a random ``--prompt-subset`` fraction of the grid prompts, as
  ``train.prompt_subset`` does.

A step is the image's forward and backward pass followed by gradient clipping and an AdamW
step, as in ``TrainingRun``. Each variant reports the lower median of its ``--runs`` step times
with that step's stages, the largest peak memory of its steps and the loss of its first step,
which the chunked and straightforward variants must share. Runs on CPU, and on CUDA (with
bf16 autocast, as training does there) when it is available.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import inspect
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "coco-mini"
VARIANTS = ("chunked", "two_pass", "straightforward", "subset")
STAGES = ("encoder_forward", "decoder_pass1", "matching", "decoder_pass2", "losses",
          "decoder_backward", "encoder_backward", "optimiser")
# Two loss values count as equal within this relative difference: the two implementations sum
# the same float32 numbers in different orders.
LOSS_RTOL = 1e-4
# Marks the worker's replies on its standard output, which libraries may also print to.
REPLY_PREFIX = "BENCHMARK-REPLY "
# Default memory limit of one variant's process, as a fraction of the memory available when the
# benchmark starts. The fraction leaves room for the baseline memory of the idle variants.
MEMORY_LIMIT_FRACTION = 0.7
# A run stops when the machine's available memory falls below this, whatever its own size.
MEMORY_FLOOR_GIB = 1.5


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.step",
        description="Time one segment-everything train step of MobileSAM vit_t per grid size, "
                    "beside a straightforward implementation of the same step.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="coco-mini folder with train/ and val/ splits (default: %(default)s)")
    parser.add_argument("--image", help="image id to train on (default: the image with the most "
                                        "object masks in either split)")
    parser.add_argument("--gt-masks", type=int, default=10,
                        help="ground-truth masks per step: the image's masks, then mirrored "
                             "copies of them until there are this many; 0 keeps the image's "
                             "own (default: %(default)s)")

    parser.add_argument("--grids", type=int, nargs="+", default=[4, 8, 16],
                        help="grid_points values to run, prompts per side (default: 4 8 16)")
    parser.add_argument("--runs", type=int, default=3,
                        help="measured steps per variant; the median is reported "
                             "(default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=8,
                        help="prompts per decoder batch of the chunked variants "
                             "(default: %(default)s)")
    parser.add_argument("--prompt-subset", type=float, default=0.25,
                        help="fraction of the grid prompts of the subset variant "
                             "(default: %(default)s)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="variants to run (default: all)")

    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"),
                        help="devices to run on (default: cpu, and cuda when available)")
    parser.add_argument("--no-bf16", action="store_true",
                        help="on CUDA, run in float32 instead of the bf16 autocast that "
                             "training uses there by default")
    parser.add_argument("--threads", type=int,
                        help="torch.set_num_threads in every run (default: torch's own choice)")
    parser.add_argument("--checkpoint", help="official mobile_sam.pt to start from (default: "
                                             "random weights)")
    parser.add_argument("--match-iou-threshold", type=float, default=0.0,
                        help="IoU a matched pair needs to be foreground; the default 0 makes "
                             "every matched pair foreground, the most loss work per step "
                             "(default: %(default)s)")

    parser.add_argument("--memory-limit-gib", type=float,
                        help="stop a run whose resident memory passes this many GiB (default: "
                             f"{100 * MEMORY_LIMIT_FRACTION:.0f}%% of the memory available at "
                             "start)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the model's random weights")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)

    args = parser.parse_args(argv)
    if args.runs < 1 or args.chunk_size < 1 or min(args.grids) < 1:
        parser.error("--runs, --chunk-size and every --grids value must be at least 1")
    if not 0.0 < args.prompt_subset <= 1.0:
        parser.error(f"--prompt-subset must lie in (0, 1], got {args.prompt_subset}")
    return args


# The parent process: one subprocess per (device, grid, variant), then the report.

def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return serve_worker(json.loads(args.worker))

    import torch

    from benchmarks.measure import GIB, available_bytes

    image_path, mask_dir = choose_image(args.data, args.image)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    limit_bytes = int(args.memory_limit_gib * GIB if args.memory_limit_gib
                      else MEMORY_LIMIT_FRACTION * available_bytes())
    print(f"image {image_path.name} ({len(list(mask_dir.glob('*.png')))} masks), "
          f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads, "
          "memory limit "
          f"{limit_bytes / GIB:.1f} GiB", flush=True)

    results = []
    for device in devices:
        for grid in args.grids:
            specs, skipped = [], []
            for variant in args.variants:
                spec = {"variant": variant, "grid": grid, "device": device,
                        "image_path": str(image_path), "mask_dir": str(mask_dir),
                        "gt_masks": args.gt_masks, "chunk_size": args.chunk_size,
                        "prompt_subset": args.prompt_subset, "threads": args.threads,
                        "checkpoint": args.checkpoint, "threshold": args.match_iou_threshold,
                        "seed": args.seed, "memory_limit_bytes": limit_bytes,
                        "bf16": not args.no_bf16}
                estimate = _straightforward_estimate(results, device, grid)
                if variant == "straightforward" and estimate and estimate > limit_bytes:
                    skipped.append({**spec, "skipped": f"needs about {estimate / GIB:.0f} GiB "
                                                       "(extrapolated)"})
                else:
                    specs.append(spec)
            for result in [*run_interleaved(specs, args.runs), *skipped]:
                results.append(result)
                print(_progress_line(result), flush=True)

    print()
    print(format_report(results, args, image_path))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def choose_image(data: Path, image_id: str | None) -> tuple[Path, Path]:
    """Return (image file, mask folder) of ``image_id``, or of the image with the most masks."""
    from trainable.data import list_images

    pairs = [pair for split in ("train", "val") if (data / split).is_dir()
             for pair in list_images(data / split)]
    if not pairs:
        raise SystemExit(f"error: no train/ or val/ split found in {data}; pass --data")
    if image_id is not None:
        chosen = [pair for pair in pairs if pair[0].stem == image_id]
        if not chosen:
            raise SystemExit(f"error: image {image_id} not found in {data}")
        return chosen[0]
    return max(pairs, key=lambda pair: (len(list(pair[1].glob("*.png"))), pair[0].stem))


class Worker:
    """A fresh Python process that runs one variant's steps when asked, so that its peak memory
    is its own while the variants of a grid take turns."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.failure: str | None = None
        self._stderr = tempfile.TemporaryFile(mode="w+")
        command = [sys.executable, "-m", "benchmarks.step", "--worker", json.dumps(spec)]
        self._process = subprocess.Popen(command, cwd=REPO_ROOT, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, text=True)
        self._reply()  # sent once the image and the model are loaded

    def request(self, command: str) -> dict[str, Any] | None:
        """Send ``step`` or ``finish`` and return the worker's reply, None once it failed."""
        if self.failure is not None:
            return None
        try:
            self._process.stdin.write(command + "\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # the worker has exited, and _reply records why
        return self._reply()

    def _reply(self) -> dict[str, Any] | None:
        for line in self._process.stdout:
            if line.startswith(REPLY_PREFIX):
                return json.loads(line[len(REPLY_PREFIX):])
        self._process.wait()
        self._stderr.seek(0)
        tail = " | ".join(self._stderr.read().strip().splitlines()[-3:])
        from benchmarks.measure import MemoryGuard

        if self._process.returncode == MemoryGuard.EXIT_CODE:
            self.failure = f"stopped by the memory guard: {tail}"
        else:
            self.failure = f"failed with exit code {self._process.returncode}: {tail}"
        return None

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.stdin.close()
            self._process.wait()
        self._stderr.close()


def run_interleaved(specs: list[dict[str, Any]], runs: int) -> list[dict[str, Any]]:
    """Run the variants of one grid in turns, one step each per round, and return their figures.

    Taking turns exposes every variant to the same background load, so that their ratios hold
    on a machine shared with other work.
    """
    workers = [Worker(spec) for spec in specs]
    try:
        for run in range(runs):
            for worker in workers:
                reply = worker.request("step")
                if reply is not None:
                    print(f"  {worker.spec['device']} grid {worker.spec['grid']} "
                          f"{worker.spec['variant']} step {run + 1}/{runs}: "
                          f"{reply['step_s']:.1f} s", flush=True)
        results = []
        for worker in workers:
            summary = worker.request("finish")
            if summary is None:
                results.append({**worker.spec, "skipped": worker.failure})
            else:
                results.append({**worker.spec, **summary})
        return results
    finally:
        for worker in workers:
            worker.close()


def _straightforward_estimate(results: list[dict[str, Any]], device: str,
                              grid: int) -> float | None:
    """Extrapolate the straightforward variant's peak memory at ``grid`` from this run's steps
    that keep the graph of every prompt.

    Those are the straightforward steps and the chunked or subset steps whose prompts fit one
    chunk. The estimate is a straight line in the number of prompts through the two of them
    furthest apart, or None with fewer than two.
    """
    single_pass = {}
    for result in results:
        if result["device"] != device or "peak_bytes_max" not in result:
            continue
        if result["variant"] == "straightforward" or result["prompts"] <= result["chunk_size"]:
            single_pass[result["prompts"]] = result["peak_bytes_max"]
    if len(single_pass) < 2:
        return None
    low, high = min(single_pass), max(single_pass)
    per_prompt = (single_pass[high] - single_pass[low]) / (high - low)
    return single_pass[high] + per_prompt * (grid * grid - high)


def _progress_line(result: dict[str, Any]) -> str:
    label = f"{result['device']} grid {result['grid']:>3} {result['variant']:<15}"
    if "skipped" in result:
        return f"{label} skipped: {result['skipped']}"
    return (f"{label} step {result['step_s']:.2f} s, peak {result['peak_gib']:.2f} GiB, "
            f"loss {result['total']:.6g}")


# The report.

def format_report(results: list[dict[str, Any]], args: argparse.Namespace, image_path: Path) -> str:
    """Return the tables, the side-by-side ratios and the targets as Markdown."""
    lines = []
    for device in dict.fromkeys(r["device"] for r in results):
        rows = [r for r in results if r["device"] == device]
        lines += [f"### {device}: median of {args.runs} steps, seconds; chunk size "
                  f"{args.chunk_size}; image {image_path.stem}", ""]
        lines += _stage_table(rows)
        lines += [""] + _ratio_lines(rows, args) + [""]
    return "\n".join(lines)


def _stage_table(rows: list[dict[str, Any]]) -> list[str]:
    header = ["grid", "prompts", "variant", "step", *STAGES, "peak GiB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if "skipped" in row:
            cells = [str(row["grid"]), str(row["grid"] ** 2), row["variant"],
                     f"skipped: {row['skipped']}"] + [""] * (len(header) - 4)
        else:
            cells = [str(row["grid"]), str(row["prompts"]), row["variant"], f"{row['step_s']:.2f}",
                     *(f"{row['stages'].get(stage, 0.0):.2f}" for stage in STAGES),
                     f"{row['peak_gib']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio_lines(rows: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    measured = {(r["grid"], r["variant"]): r for r in rows if "skipped" not in r}
    lines = []
    for grid in args.grids:
        chunked = measured.get((grid, "chunked"))
        if chunked is None:
            continue
        lines.append(f"- grid {grid}: " + "; ".join(_grid_ratios(grid, chunked, measured)) + ".")
    lines += ["", "Targets:"] + [f"- {line}" for line in _target_lines(measured, args)]
    return lines


def _grid_ratios(grid: int, chunked: dict[str, Any],
                 measured: dict[tuple[int, str], dict[str, Any]]) -> list[str]:
    parts = []
    reference = measured.get((grid, "straightforward"))
    if reference is not None:
        parts.append(f"chunked / straightforward: time {chunked['step_s'] / reference['step_s']:.2f}x, "
                     f"peak memory {chunked['peak_bytes_max'] / reference['peak_bytes_max']:.2f}x, "
                     f"loss values {'equal' if _losses_equal(chunked, reference) else 'DIFFERENT'} "
                     f"(max relative difference {_loss_difference(chunked, reference):.1e})")
    two_pass = measured.get((grid, "two_pass"))
    if two_pass is not None:
        parts.append(f"chunked / two_pass: time {chunked['step_s'] / two_pass['step_s']:.2f}x, "
                     f"loss values {'equal' if _losses_equal(chunked, two_pass) else 'DIFFERENT'}")
    subset = measured.get((grid, "subset"))
    if subset is not None:
        parts.append(f"subset of {subset['prompts']} prompts / full grid: time "
                     f"{subset['step_s'] / chunked['step_s']:.2f}x")
    parts.append(f"IoU rows + matching + losses {100 * _matching_losses_share(chunked):.1f}% "
                 f"of the step ({chunked['num_gt']} ground-truth masks)")
    validation = chunked.get("validation_matching_s")
    if validation:
        parts.append(f"validation matching at 256x256 {validation['low_res']:.2f} s vs at the "
                     f"original size {validation['full_res']:.2f} s")
    parts.append(f"data: first decode {chunked['first_decode_s']:.3f} s, later access "
                 f"{1000 * chunked['later_access_s']:.2f} ms "
                 f"({100 * chunked['later_access_s'] / chunked['step_s']:.3f}% of the step)")
    return parts


def _target_lines(measured: dict[tuple[int, str], dict[str, Any]],
                  args: argparse.Namespace) -> list[str]:
    lines = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    low, high = measured.get((4, "chunked")), measured.get((16, "chunked"))
    if low and high:
        ratio = high["peak_bytes_max"] / low["peak_bytes_max"]
        lines.append(f"peak memory grid 16 / grid 4 at chunk size {args.chunk_size}: "
                     f"{ratio:.2f}x (at most 1.5x): {verdict(ratio <= 1.5)}")
    big = measured.get((32, "chunked"))
    if big:
        fits = big["peak_bytes_max"] <= 24 * 1024 ** 3
        lines.append(f"grid 32 peak memory {big['peak_gib']:.2f} GiB (at most 24 GiB): "
                     f"{verdict(fits)}")
    chunked, reference = measured.get((8, "chunked")), measured.get((8, "straightforward"))
    if chunked and reference:
        memory = chunked["peak_bytes_max"] / reference["peak_bytes_max"]
        duration = chunked["step_s"] / reference["step_s"]
        equal = _losses_equal(chunked, reference)
        lines.append(f"grid 8 vs straightforward: memory {memory:.2f}x (at most 0.5x), time "
                     f"{duration:.2f}x (at most 1.25x), loss values "
                     f"{'equal' if equal else 'different'}: "
                     f"{verdict(memory <= 0.5 and duration <= 1.25 and equal)}")
    chunked = measured.get((16, "chunked"))
    if chunked:
        share = _matching_losses_share(chunked)
        lines.append(f"grid 16 matching + losses with {chunked['num_gt']} masks: "
                     f"{100 * share:.1f}% of the step (under 5%): {verdict(share < 0.05)}")
    for grid in args.grids:
        chunked = measured.get((grid, "chunked"))
        if chunked:
            share = chunked["later_access_s"] / chunked["step_s"]
            lines.append(f"grid {grid} data access after the first epoch: {100 * share:.3f}% of "
                         f"the step (under 5%): {verdict(share < 0.05)}")
        subset = measured.get((grid, "subset"))
        if chunked and subset and abs(args.prompt_subset - 0.25) < 1e-9:
            ratio = subset["step_s"] / chunked["step_s"]
            lines.append(f"grid {grid} prompt subset 0.25: {ratio:.2f}x the full-grid step "
                         f"(at most 0.35x): {verdict(ratio <= 0.35)}")
    return lines


def _matching_losses_share(row: dict[str, Any]) -> float:
    stages = row["stages"]
    return (row["iou_rows_s"] + stages.get("matching", 0.0) + stages.get("losses", 0.0)) / row["step_s"]


def _loss_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    values = [(a["total"], b["total"])] + [(a["terms"][k], b["terms"][k]) for k in a["terms"]]
    return max(abs(x - y) / max(abs(y), 1e-12) for x, y in values)


def _losses_equal(a: dict[str, Any], b: dict[str, Any]) -> bool:
    values = [(a["total"], b["total"])] + [(a["terms"][k], b["terms"][k]) for k in a["terms"]]
    return all(abs(x - y) <= LOSS_RTOL * abs(y) + 1e-7 for x, y in values)


# The worker process: one variant at one grid size.

def serve_worker(spec: dict[str, Any]) -> int:
    """Load the image and the model, then run the ``step`` and ``finish`` commands read from
    stdin, writing each result to stdout."""
    benchmark = VariantBenchmark(spec)
    _reply({"ready": True})
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            _reply(benchmark.timed_step())
        elif command == "finish":
            _reply(benchmark.summary())
            return 0
        else:
            raise ValueError(f"unknown worker command {command!r}; expected step or finish")
    return 0


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(REPLY_PREFIX + json.dumps(message) + "\n")
    sys.stdout.flush()


class VariantBenchmark:
    """One variant at one grid size: the image, the model, its optimiser and its steps."""

    def __init__(self, spec: dict[str, Any]):
        import torch

        from benchmarks.measure import GIB, MemoryGuard
        from trainable.data import load_record
        from trainable.model import build_model
        from trainable.step import train_image

        if "lap" not in inspect.signature(train_image).parameters:
            raise SystemExit("trainable.step.train_image has no lap parameter, which the stage "
                             "timings need; restore it from version control")
        if spec["threads"]:
            torch.set_num_threads(spec["threads"])
        self.spec = spec
        self.device = torch.device(spec["device"])
        self.guard = None
        if self.device.type == "cpu":
            self.guard = MemoryGuard(spec["memory_limit_bytes"], MEMORY_FLOOR_GIB * GIB)

        started = time.perf_counter()
        record = load_record(Path(spec["image_path"]), Path(spec["mask_dir"]))
        self.first_decode_s = time.perf_counter() - started
        self.record = with_gt_masks(record, spec["gt_masks"])
        self.points = self.record.prompt_points(spec["grid"])
        if spec["variant"] == "subset":
            self.points = prompt_subset(self.points, spec["prompt_subset"], spec["seed"])

        torch.manual_seed(spec["seed"])
        self.sam = build_model("vit_t", spec["checkpoint"]).to(self.device)
        self.sam.train()
        self.optimizer = torch.optim.AdamW(self.sam.parameters(), lr=1e-4, weight_decay=1e-4)
        self.settings = step_settings(spec["threshold"], spec["chunk_size"])
        if spec["variant"] == "two_pass":
            self.settings = dataclasses.replace(self.settings, schedule="two_pass")
        self.autocast = contextlib.nullcontext
        if self.device.type == "cuda" and spec["bf16"]:  # as TrainingRun does with train.bf16
            self.autocast = functools.partial(torch.autocast, device_type="cuda",
                                              dtype=torch.bfloat16)
        self.runs: list[dict[str, Any]] = []

    def timed_step(self) -> dict[str, Any]:
        """Run and time one step, keep its figures for :meth:`summary` and return its time and
        peak memory."""
        from benchmarks.measure import release_memory

        if self.guard is not None:
            self.guard.active = True
        run = _timed_step(self.sam, self.optimizer, self.record, self.points, self.settings,
                          self.spec["variant"], self.device, self.autocast)
        self.runs.append(run)
        # Hand the step's memory back while the other variants take their turn.
        self.optimizer.zero_grad(set_to_none=True)
        release_memory()
        if self.guard is not None:
            self.guard.active = False
        return {"step_s": run["step_s"], "peak_bytes": run["peak_bytes"]}

    def summary(self) -> dict[str, Any]:
        """Return the figures over every step run so far, and the data-access timings."""
        import torch

        from benchmarks.measure import GIB

        runs = self.runs
        step_times = [run["step_s"] for run in runs]
        # The lower median is one of the runs, so its stages add up to the reported step time.
        median_run = sorted(runs, key=lambda run: run["step_s"])[(len(runs) - 1) // 2]
        peaks = [run["peak_bytes"] for run in runs]
        grid = self.spec["grid"]
        return {
            "prompts": int(self.points.shape[0]),
            "num_gt": self.record.num_objects,
            "step_s": median_run["step_s"],
            "step_times_s": step_times,
            "stages": median_run["stages"],
            "peak_bytes": peaks,
            "peak_bytes_max": max(peaks),
            "peak_gib": max(peaks) / GIB,
            "baseline_bytes": runs[0]["baseline_bytes"],
            "terms": runs[0]["terms"],
            "total": runs[0]["total"],
            "first_decode_s": self.first_decode_s,
            "later_access_s": _median_seconds(lambda: self.record.prompt_points(grid),
                                              repeats=50),
            "iou_rows_s": _iou_rows_seconds(self.record, self.points.shape[0],
                                            self.spec["chunk_size"], self.device),
            "threads": torch.get_num_threads(),
            "validation_matching_s": (
                _validation_matching_seconds(self.sam, self.record, self.points.shape[0],
                                             self.spec["chunk_size"], self.device)
                if self.spec["variant"] == "chunked" else None),
        }


def with_gt_masks(record, count: int):
    """Return ``record`` with exactly ``count`` ground-truth masks: its own first, then
    left-right mirrored copies of them; ``count`` 0 keeps the record as it is."""
    import numpy as np
    import torch

    from trainable.data import to_low_res

    own = record.num_objects
    if count == 0 or count == own or own == 0:
        return record
    order = [index % own for index in range(count)]
    mirrored = [index >= own for index in range(count)]
    masks = np.stack([record.gt_masks[i].numpy()[:, ::-1] if flip else record.gt_masks[i].numpy()
                      for i, flip in zip(order, mirrored)])
    return dataclasses.replace(record, gt_masks=torch.from_numpy(masks),
                               gt_low_res=torch.from_numpy(to_low_res(masks, record.input_size)))


def prompt_subset(points, fraction: float, seed: int):
    """Pick ``fraction`` of the prompts at random, in grid order, as ``train.prompt_subset`` does."""
    import torch

    keep = max(1, round(fraction * points.shape[0]))
    generator = torch.Generator().manual_seed(seed)
    chosen = torch.randperm(points.shape[0], generator=generator)[:keep]
    return points[chosen.sort().values]


def step_settings(threshold: float, chunk_size: int):
    """Return the step settings of the default training config with the given threshold and
    chunk size."""
    from trainable.config import TrainConfig
    from trainable.losses import TASK_TERMS
    from trainable.step import StepSettings

    train = TrainConfig()
    return StepSettings(
        loss_weights={name: getattr(train.loss_weights, name) for name in TASK_TERMS},
        match_iou_threshold=threshold, focal_alpha=train.focal_alpha,
        focal_gamma=train.focal_gamma, chunk_size=chunk_size)


def _timed_step(sam, optimizer, record, points, settings, variant: str, device,
                autocast) -> dict[str, Any]:
    import torch

    from benchmarks.measure import StageClock, peak_resident_bytes, reset_peak_resident
    from benchmarks.straightforward import straightforward_step
    from trainable.config import TrainConfig
    from trainable.step import train_image

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = reset_peak_resident()

    clock = StageClock(device)
    clock.start()
    optimizer.zero_grad(set_to_none=True)
    if variant == "straightforward":
        terms, total = straightforward_step(sam, record, points, settings, autocast=autocast,
                                            lap=clock.lap)
    else:
        result = train_image(sam, record, points, settings, loss_scale=1.0, autocast=autocast,
                             lap=clock.lap)
        terms, total = result.terms, result.total
    clip_norm = TrainConfig().grad_clip_norm
    torch.nn.utils.clip_grad_norm_(sam.parameters(), clip_norm)
    optimizer.step()
    clock.lap("optimiser")

    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else peak_resident_bytes())
    return {"step_s": sum(clock.seconds.values()), "stages": dict(clock.seconds),
            "peak_bytes": peak, "baseline_bytes": baseline, "terms": terms, "total": total}


def _iou_rows_seconds(record, num_prompts: int, chunk_size: int, device) -> float:
    """Time the IoU rows of every candidate, chunk by chunk as in the step's first pass, on
    random binary masks. Inside the step this time is part of decoder pass 1."""
    import torch

    from trainable.matching import iou_matrix
    from trainable.prediction import CANDIDATES_PER_PROMPT, prompt_chunks

    generator = torch.Generator().manual_seed(0)
    gt = record.gt_low_res.to(device)
    chunks = [(torch.rand(len(range(num_prompts)[chunk]) * CANDIDATES_PER_PROMPT, 256, 256,
                          generator=generator) > 0.7).to(device)
              for chunk in prompt_chunks(num_prompts, chunk_size)]

    def all_rows():
        rows = torch.cat([iou_matrix(candidates, gt) for candidates in chunks])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return rows

    return _median_seconds(all_rows, repeats=3)


def _validation_matching_seconds(sam, record, num_prompts: int, chunk_size: int,
                                 device) -> dict[str, float]:
    """Time validation's matching both ways on random logits of the grid's shape.

    ``low_res`` is what ``evaluate_image`` does: IoU rows at 256x256, Hungarian pairs, then
    only the matched candidates upsampled to the original size. ``evaluate_image`` decodes
    their prompts again first, which is not counted here. ``full_res`` upsamples every
    candidate, chunk by chunk, and computes the IoU rows at the original size.
    """
    import torch

    from trainable.matching import hungarian_match, iou_matrix
    from trainable.prediction import CANDIDATES_PER_PROMPT, prompt_chunks

    generator = torch.Generator().manual_seed(0)
    chunks = [4 * torch.randn(len(range(num_prompts)[chunk]), CANDIDATES_PER_PROMPT, 256, 256,
                              generator=generator).to(device)
              for chunk in prompt_chunks(num_prompts, chunk_size)]
    gt_low_res, gt = record.gt_low_res.to(device), record.gt_masks.to(device)

    def upsample(logits):
        return sam.postprocess_masks(logits, record.input_size, record.original_size) > 0

    @torch.no_grad()
    def low_res():
        rows = torch.cat([iou_matrix(logits.flatten(0, 1) > 0, gt_low_res) for logits in chunks])
        matching = hungarian_match(rows, threshold=0.0)
        matched = torch.cat(chunks).flatten(0, 1)[matching.candidate_index]
        return upsample(matched[:, None])

    @torch.no_grad()
    def full_res():
        rows = torch.cat([iou_matrix(upsample(logits).flatten(0, 1), gt) for logits in chunks])
        return hungarian_match(rows, threshold=0.0)

    return {"low_res": _median_seconds(low_res, repeats=1),
            "full_res": _median_seconds(full_res, repeats=1)}


def _median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
