"""Trial gauges, read back from the Prometheus endpoint that a real local Ray node exports."""

import time
import urllib.request

import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from trainable.run import EpochResult
from tuner.live_metrics import LiveMetrics

# Ray pushes metrics to its node agent every metrics_report_interval_ms (10 s by default in
# Ray 2.60), so a shorter interval keeps the test short.
REPORT_INTERVAL_MS = 500
EXPORT_TIMEOUT_S = 60
EXPORTED_NAMES = {
    "epoch": "ray_mobilesam_trial_epoch",
    "val_dice": "ray_mobilesam_trial_val_dice",
    "val_iou": "ray_mobilesam_trial_val_iou",
    "lambda": "ray_mobilesam_trial_lambda",
}


@pytest.fixture(scope="module")
def metrics_url():
    ray.init(num_cpus=1, include_dashboard=False, configure_logging=False,
             runtime_env={"env_vars": {"RAY_USAGE_STATS_ENABLED": "0"}},
             _system_config={"metrics_report_interval_ms": REPORT_INTERVAL_MS})
    (node,) = ray.nodes()
    yield f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
    ray.shutdown()


@ray.remote(num_cpus=0)
class TrialWorker:
    """A stand-in for a trial's actor, which sets the gauges in a worker process of its own."""

    def observe(self, trial_id, trial_name, results):
        observer = LiveMetrics(trial_id, trial_name)
        for result in results:
            observer(result, None)


def epoch_result(epoch, lambda_coef, val_dice, val_iou):
    return EpochResult(epoch=epoch, losses={}, lr=1e-4, lambda_coef=lambda_coef,
                       metrics={"val_dice": val_dice, "val_iou": val_iou,
                                "val_score": (val_dice + val_iou) / 2},
                       seconds=1.0, is_best=True)


def read_gauges(url):
    """Return {(metric name, trial_id, trial_name): value} of the trial gauges at ``url``."""
    text = urllib.request.urlopen(url, timeout=10).read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in EXPORTED_NAMES.values():
                key = (sample.name, sample.labels.get("trial_id"), sample.labels.get("trial_name"))
                values[key] = sample.value
    return values


def wait_for_gauges(url, expected_count):
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    values = read_gauges(url)
    while len(values) < expected_count and time.monotonic() < deadline:
        time.sleep(1)
        values = read_gauges(url)
    return values


def test_gauges_carry_last_epoch_per_trial(metrics_url):
    worker = TrialWorker.remote()
    first = [epoch_result(0, 1.0, 0.125, 0.0625), epoch_result(1, 0.75, 0.5, 0.25)]
    second = [epoch_result(0, 0.5, 0.375, 0.1875)]
    ray.get(worker.observe.remote("aaaa_00000", "run_trial_aaaa_00000", first))
    ray.get(worker.observe.remote("aaaa_00001", "run_trial_aaaa_00001", second))

    values = wait_for_gauges(metrics_url, expected_count=8)
    ray.kill(worker)

    first_tags = ("aaaa_00000", "run_trial_aaaa_00000")
    second_tags = ("aaaa_00001", "run_trial_aaaa_00001")
    assert values[(EXPORTED_NAMES["epoch"], *first_tags)] == 1.0
    assert values[(EXPORTED_NAMES["val_dice"], *first_tags)] == 0.5
    assert values[(EXPORTED_NAMES["val_iou"], *first_tags)] == 0.25
    assert values[(EXPORTED_NAMES["lambda"], *first_tags)] == 0.75
    assert values[(EXPORTED_NAMES["epoch"], *second_tags)] == 0.0
    assert values[(EXPORTED_NAMES["val_dice"], *second_tags)] == 0.375
    assert values[(EXPORTED_NAMES["val_iou"], *second_tags)] == 0.1875
    assert values[(EXPORTED_NAMES["lambda"], *second_tags)] == 0.5
    assert len(values) == 8
