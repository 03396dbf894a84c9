"""Measure how much of a search's wall time the service spends outside training and validation.

    python -m benchmarks.search                      # 3 trials of 3 epochs on generated data
    python -m benchmarks.search --trials 2 --epochs 1 --grid-points 2 --json search.json

The defaults make trials of about a minute or more on a 2-core CPU.

It runs ``python -m tuner.search`` as a user would, in a subprocess, on a dataset it generates,
with one trial at a time, and splits the command's wall time using what the search writes:

- useful work: the ``seconds`` that every epoch reports (training plus validation);
- overhead inside a trial: Tune's ``time_total_s`` minus that work (model set-up, receiving the
  shared decoded images, MLflow logging, checkpoints);
- overhead outside the trials: the wall time of the command minus the trials' spans (imports,
  reading the images, Ray start, MLflow parent run, scheduling and starting each trial, the
  summary and Ray shutdown). The start-up part of it ends when the command prints where its
  results go, which it does after Ray and the MLflow parent run have started.

A trial's span runs from its first report's timestamp minus that report's ``time_this_iter_s``
to its last report's timestamp, both from the trial's ``result.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
# The command prints this once Ray and the MLflow parent run are up.
STARTED_MARKER = "search results:"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.search",
        description="Run a small search of real trials with python -m tuner.search and report "
                    "the share of wall time spent outside training and validation.")
    parser.add_argument("--trials", type=int, default=3, help="trials (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=3,
                        help="training epochs per trial, after the epoch-0 validation "
                             "(default: %(default)s)")
    parser.add_argument("--grid-points", type=int, default=4,
                        help="prompts per side of the grid (default: %(default)s)")
    parser.add_argument("--train-images", type=int, default=2,
                        help="generated training images (default: %(default)s)")
    parser.add_argument("--val-images", type=int, default=1,
                        help="generated validation images (default: %(default)s)")
    parser.add_argument("--reuse-actors", action=argparse.BooleanOptionalAction, default=True,
                        help="run each trial in the finished trial's process, the search's "
                             "default (default: %(default)s)")
    parser.add_argument("--work-dir", type=Path,
                        help="folder for the data and the search's results (default: a "
                             "temporary folder, removed at the end)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for name in ("trials", "epochs", "grid_points", "train_images", "val_images"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="search-benchmark-"))
    try:
        figures = run_benchmark(args, work_dir)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(format_report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0 if figures["failed_trials"] == 0 else 1


def run_benchmark(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """Generate the data, run the search and return its time split."""
    from trainable.synthetic import generate_dataset

    data = generate_dataset(work_dir / "data", train_images=args.train_images,
                            val_images=args.val_images, seed=0)
    base_config = work_dir / "train.json"
    base_config.write_text(json.dumps({
        "dataset": {"train_dir": str(data / "train"), "val_dir": str(data / "val"),
                    "grid_points": args.grid_points},
        "train": {"warmup_epochs": 0.0, "early_stop_patience": 0},
        "visual": {"save_every_n_epochs": 1, "max_images": 1},
    }))
    storage, name = work_dir / "results", "benchmark"
    command = [sys.executable, "-m", "tuner.search", "--base-config", str(base_config),
               "--space", "loss_weights", "--trials", str(args.trials),
               "--epochs", str(args.epochs), "--scheduler", "fifo",
               "--max-concurrent-trials", "1", "--num-cpus", "2", "--cpus-per-trial", "2",
               "--reuse-actors" if args.reuse_actors else "--no-reuse-actors",
               "--no-dashboard", "--storage-path", str(storage), "--name", name]
    run = _run_timed(command, work_dir / "search.log")
    if run["returncode"] != 0:
        raise SystemExit(f"error: the search failed with exit code {run['returncode']}:\n"
                         + "\n".join(run["output"][-20:]))

    trials = [_trial_figures(path) for path in (storage / name).glob("trial_*")
              if (path / "result.json").is_file()]
    return _time_split(run, sorted(trials, key=lambda trial: trial["start"]), args)


def _run_timed(command: list[str], log_path: Path) -> dict[str, Any]:
    """Run ``command``; return its output, exit code and the Unix times at which it started,
    printed :data:`STARTED_MARKER` and ended (the clock of Tune's timestamps)."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    launched = time.time()
    marker = None
    output = []
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            if marker is None and line.startswith(STARTED_MARKER):
                marker = time.time()
            log.write(line)
            output.append(line.rstrip())
        process.wait()
    return {"launched": launched, "marker": marker, "ended": time.time(),
            "returncode": process.returncode, "output": output}


def _trial_figures(trial_dir: Path) -> dict[str, Any]:
    reports = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
               if line.strip()]
    first, last = reports[0], reports[-1]
    work_s = sum(report["seconds"] for report in reports)
    return {
        "trial": trial_dir.name,
        "epochs_reported": len(reports),
        "work_s": work_s,
        "time_total_s": last["time_total_s"],
        "span_s": last["timestamp"] - (first["timestamp"] - first["time_this_iter_s"]),
        "start": first["timestamp"] - first["time_this_iter_s"],
        "end": last["timestamp"],
    }


def _time_split(run: dict[str, Any], trials: list[dict[str, Any]],
                args: argparse.Namespace) -> dict[str, Any]:
    wall_s = run["ended"] - run["launched"]
    work_s = sum(t["work_s"] for t in trials)
    inside_s = sum(t["time_total_s"] - t["work_s"] for t in trials)
    spans_s = sum(t["span_s"] for t in trials)
    startup_s = (run["marker"] or run["launched"]) - run["launched"]
    gaps = [later["start"] - earlier["end"] for earlier, later in zip(trials, trials[1:])]
    return {
        "trials": trials,
        # A trial that finished reported epoch 0 and every training epoch.
        "failed_trials": args.trials - sum(t["epochs_reported"] == args.epochs + 1
                                           for t in trials),
        "settings": {"trials": args.trials, "epochs": args.epochs,
                     "grid_points": args.grid_points, "train_images": args.train_images,
                     "val_images": args.val_images, "reuse_actors": args.reuse_actors},
        "wall_s": wall_s,
        "work_s": work_s,
        "inside_trials_overhead_s": inside_s,
        "outside_trials_s": wall_s - spans_s,
        "startup_s": startup_s,
        "before_first_trial_s": trials[0]["start"] - (run["marker"] or run["launched"]),
        "between_trials_s": gaps,
        "after_last_trial_s": run["ended"] - trials[-1]["end"],
        "overhead_share": 1 - work_s / wall_s,
    }


def format_report(figures: dict[str, Any]) -> str:
    """Return the per-trial table and the totals as Markdown."""
    lines = ["| trial | epochs reported | training + validation s | trial time s (Tune) | "
             "overhead in trial | share of trial |", "|---|---|---|---|---|---|"]
    for trial in figures["trials"]:
        overhead = trial["time_total_s"] - trial["work_s"]
        lines.append(f"| {trial['trial']} | {trial['epochs_reported']} | {trial['work_s']:.1f} | "
                     f"{trial['time_total_s']:.1f} | {overhead:.1f} | "
                     f"{100 * overhead / trial['time_total_s']:.1f}% |")
    wall = figures["wall_s"]
    gaps = figures["between_trials_s"]
    mean_gap = sum(gaps) / len(gaps) if gaps else 0.0
    lines += [
        "",
        f"- wall time of the command: {wall:.1f} s",
        f"- training + validation (sum of the epochs' seconds): {figures['work_s']:.1f} s "
        f"({100 * figures['work_s'] / wall:.1f}%)",
        f"- overhead inside the trials: {figures['inside_trials_overhead_s']:.1f} s "
        f"({100 * figures['inside_trials_overhead_s'] / wall:.1f}%)",
        f"- outside the trials: {figures['outside_trials_s']:.1f} s "
        f"({100 * figures['outside_trials_s'] / wall:.1f}%): start-up (imports, reading the "
        f"images, Ray, MLflow parent run) {figures['startup_s']:.1f} s, until the first trial "
        f"runs {figures['before_first_trial_s']:.1f} s, between trials {mean_gap:.1f} s on "
        f"average, after the last trial (summary, best model, shutdown) "
        f"{figures['after_last_trial_s']:.1f} s",
        f"- overhead in total: {100 * figures['overhead_share']:.1f}% of the wall time",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
