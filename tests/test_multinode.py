"""A search on a real two-node Ray cluster that logs to an MLflow server on PostgreSQL.

The test starts every server itself, each as it would run on a cluster: a Ray head and a second
Ray node with ``ray start``, PostgreSQL 15 with ``initdb`` and ``pg_ctl``, and ``mlflow server``
on it. Then it runs ``python -m tuner.search --address ...`` with two one-epoch trials that
need one CPU each, on two nodes of one CPU each, so that one trial lands on each node.

All of it runs in a private network namespace whose only interface is loopback. Ray 2.60
replaces a node address of 127.0.0.1 with the machine's routable address, the one that would
reach 8.8.8.8, so two ``ray start`` nodes cannot share 127.0.0.1 on an ordinary network.
Inside the namespace no other address exists, every node gets 127.0.0.1, Ray's servers bind
only to it, and no port can collide with other processes on the machine. Creating the
namespace needs root, as does running PostgreSQL as its own user.

The test process itself stays outside the namespace, so it reads the cluster and the MLflow
server through short Python helpers of this module run inside it (see ``call_in_namespace``).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"

# Ports inside the private namespace, so fixed values cannot clash with anything outside it.
GCS_PORT = 6379
POSTGRES_PORT = 5432
MLFLOW_PORT = 5000
HEAD_METRICS_PORT = 8080
WORKER_METRICS_PORT = 8081
HEAD_ARGS = ["--head", "--node-ip-address=127.0.0.1", f"--port={GCS_PORT}", "--num-cpus=1",
             "--num-gpus=0", '--resources={"head_slot": 1}', "--include-dashboard=false",
             "--ray-client-server-port=10001", "--dashboard-agent-listen-port=52365",
             f"--metrics-export-port={HEAD_METRICS_PORT}"]
WORKER_ARGS = [f"--address=127.0.0.1:{GCS_PORT}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
               "--num-gpus=0", '--resources={"worker_slot": 1}',
               "--dashboard-agent-listen-port=52366",
               f"--metrics-export-port={WORKER_METRICS_PORT}"]

SEARCH_NAME = "multinode"
EXPERIMENT = "segment-everything"
STARTUP_TIMEOUT_S = 120
SEARCH_TIMEOUT_S = 600
STOP_GRACE_S = 15


# Helpers that run inside the namespace, called through call_in_namespace.

def is_running(pid: int) -> bool:
    """Return whether process ``pid`` exists and has not exited.

    A child that has exited stays in /proc as a zombie until its parent, the test process,
    waits for it, so existence alone is not enough.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def wait_for_url(url: str, timeout_s: float, server_pid: int) -> bool:
    """Poll ``url`` until it returns HTTP 200, and return False on timeout or server exit."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and is_running(server_pid):
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    return False


def wait_for_port(port: int, timeout_s: float, server_pid: int) -> bool:
    """Poll 127.0.0.1:``port`` until it accepts TCP, and return False on timeout or exit."""
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and is_running(server_pid):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


def alive_ray_nodes(address: str, count: int, timeout_s: float) -> list[dict]:
    """Wait until the cluster at ``address`` has ``count`` alive nodes, and return them."""
    import ray

    ray.init(address=address, logging_level="WARNING", log_to_driver=False)
    try:
        deadline = time.monotonic() + timeout_s
        nodes = [node for node in ray.nodes() if node["Alive"]]
        while len(nodes) < count and time.monotonic() < deadline:
            time.sleep(1)
            nodes = [node for node in ray.nodes() if node["Alive"]]
        return [{"node_id": node["NodeID"], "node_ip": node["NodeManagerAddress"],
                 "resources": node["Resources"]} for node in nodes]
    finally:
        ray.shutdown()


def mlflow_search_runs(tracking_uri: str, experiment: str) -> list[dict]:
    """Return every run of ``experiment`` with its status, tags, val_dice history and files."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = []
    for run in client.search_runs([experiment_id]):
        run_id = run.info.run_id
        history = client.get_metric_history(run_id, "val_dice")
        runs.append({
            "run_id": run_id,
            "status": run.info.status,
            "tags": run.data.tags,
            "val_dice": {str(metric.step): metric.value for metric in history},
            "artifacts": [artifact.path for artifact in client.list_artifacts(run_id)],
        })
    return runs


def read_epochs(port: int) -> dict[str, float]:
    """Return {trial id: epoch} of the trial gauges that the node exporter at ``port`` serves."""
    import urllib.error
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return {}  # the node's exporter is not up yet
    return {sample.labels["trial_id"]: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == "ray_mobilesam_trial_epoch"}


def watch_epochs(ports: list[int], search_pid: int, timeout_s: float) -> dict[str, dict]:
    """Poll the node exporters until the search process exits.

    Returns {port: {trial id: highest epoch seen}}. The watch must run during the search
    because a node stops exporting the gauges of a Ray job when the job's driver exits.
    """
    highest: dict[str, dict] = {str(port): {} for port in ports}
    deadline = time.monotonic() + timeout_s
    while is_running(search_pid) and time.monotonic() < deadline:
        for port in ports:
            for trial_id, epoch in read_epochs(port).items():
                seen = highest[str(port)]
                seen[trial_id] = max(epoch, seen.get(trial_id, epoch))
        time.sleep(1)
    return highest


# Processes and the namespace.

def session_members(session_id: int) -> list[int]:
    """Return the ids of live processes whose session is ``session_id``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command name, which is in parentheses and may contain spaces.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == session_id:
            members.append(int(entry.name))
    return members


def namespace_members(namespace_link: str) -> list[int]:
    """Return the ids of live processes in the network namespace ``namespace_link``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns" / "net") == namespace_link:
                members.append(int(entry.name))
        except OSError:
            continue
    return members


def signal_all(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def wait_until_gone(still_running, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while still_running() and time.monotonic() < deadline:
        time.sleep(0.2)


def stop_session(process: subprocess.Popen) -> None:
    """End a process started in a session of its own, and every process of that session.

    Ray's worker processes get process groups of their own, so the session is what contains
    everything that one ``ray start`` started. The leader goes first: ``ray start --block``
    stops its own processes on SIGTERM within seconds, whereas Ray processes signalled all at
    once took about 13 s to exit on this machine.
    """
    process.terminate()
    wait_until_gone(lambda: process.poll() is None, STOP_GRACE_S)
    signal_all(session_members(process.pid), signal.SIGTERM)
    wait_until_gone(lambda: session_members(process.pid), STOP_GRACE_S)
    signal_all(session_members(process.pid), signal.SIGKILL)
    if process.poll() is None:
        process.kill()
    process.wait(timeout=STOP_GRACE_S)


class Namespace:
    """A private network namespace with loopback only, kept alive by a ``sleep`` process."""

    def __init__(self, env: dict[str, str]):
        self.env = env
        self.holder = subprocess.Popen(
            ["unshare", "--net", "--", "sh", "-c",
             "ip link set lo up && echo ready && exec sleep infinity"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        ready = self.holder.stdout.readline().strip()
        if ready != "ready":
            self.holder.wait(timeout=10)
            raise RuntimeError(f"cannot create a network namespace: {self.holder.stderr.read()}")
        self.link = os.readlink(f"/proc/{self.holder.pid}/ns/net")
        self.processes: list[subprocess.Popen] = []

    def command(self, argv: list[str]) -> list[str]:
        return ["nsenter", f"--net=/proc/{self.holder.pid}/ns/net", "--", *argv]

    def start(self, argv: list[str], log_file: Path) -> subprocess.Popen:
        """Start a long-running process in the namespace, in a session of its own."""
        with open(log_file, "w") as log:
            process = subprocess.Popen(self.command(argv), stdout=log, stderr=subprocess.STDOUT,
                                       env=self.env, cwd=REPO_ROOT, start_new_session=True)
        self.processes.append(process)
        return process

    def run(self, argv: list[str], timeout_s: float, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("env", self.env)
        return subprocess.run(self.command(argv), capture_output=True, text=True,
                              timeout=timeout_s, cwd=REPO_ROOT, **kwargs)

    def close(self) -> None:
        """Stop the started processes newest first, then anything else left in the namespace."""
        for process in reversed(self.processes):
            stop_session(process)
        leftovers = [pid for pid in namespace_members(self.link) if pid != self.holder.pid]
        signal_all(leftovers, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait(timeout=STOP_GRACE_S)


def call_in_namespace(namespace: Namespace, function, *args, timeout_s: float = 180):
    """Run a helper of this module in the namespace and return its JSON result."""
    code = ("import json, sys, test_multinode as helpers; "
            "print(json.dumps(getattr(helpers, sys.argv[1])(*json.loads(sys.argv[2]))))")
    completed = namespace.run([sys.executable, "-c", code, function.__name__, json.dumps(args)],
                              timeout_s=timeout_s)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def log_tail(path: Path, characters: int = 3000) -> str:
    return path.read_text(errors="replace")[-characters:] if path.exists() else ""


# Fixtures.

def _skip_unless_possible() -> None:
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL 15 binaries are not installed in {POSTGRES_BIN} "
                    "(Debian package postgresql-15)")
    if os.geteuid() != 0:
        pytest.skip("needs root: to create a private network namespace and to run PostgreSQL "
                    f"as the {POSTGRES_USER} user")
    for tool in ("unshare", "nsenter", "ip", "runuser"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    try:
        pwd.getpwnam(POSTGRES_USER)
    except KeyError:
        pytest.skip(f"the system user {POSTGRES_USER!r} that the postgresql-15 package "
                    "creates does not exist")


@pytest.fixture(scope="module")
def work_dir():
    # Short, because Ray's Unix socket paths under --temp-dir must fit in 107 characters.
    folder = Path(tempfile.mkdtemp(prefix="mn-", dir="/tmp"))
    folder.chmod(0o755)  # the postgres user must reach its data folder inside
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def namespace(work_dir):
    _skip_unless_possible()
    env = dict(os.environ)
    env.update({
        "RAY_USAGE_STATS_ENABLED": "0",
        # A cluster of its own token, so that nothing depends on ~/.ray/auth_token.
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        # Ray pushes metrics to its node's exporter every 10 s by default, which can miss the
        # last epoch of a short trial.
        "RAY_metrics_report_interval_ms": "1000",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR)]),
        "PYTHONUNBUFFERED": "1",
    })
    try:
        created = Namespace(env)
    except (RuntimeError, OSError) as error:
        pytest.skip(f"no private network namespace: {error}")
    try:
        yield created
    finally:
        created.close()


def start_postgres(namespace: Namespace, work_dir: Path, password: str) -> str:
    """Create and start a PostgreSQL server with database ``mlflow``, and return its URI."""
    folder = work_dir / "postgres"
    folder.mkdir()
    password_file = folder / "password"
    password_file.write_text(password)
    account = pwd.getpwnam(POSTGRES_USER)
    os.chown(folder, account.pw_uid, account.pw_gid)
    os.chown(password_file, account.pw_uid, account.pw_gid)
    as_postgres = ["runuser", "-u", POSTGRES_USER, "--"]

    initdb = namespace.run([*as_postgres, str(POSTGRES_BIN / "initdb"), "-D", str(folder / "data"),
                            "--username=mlflow", f"--pwfile={password_file}",
                            "--auth=scram-sha-256", "--no-sync"], timeout_s=120)
    assert initdb.returncode == 0, initdb.stdout + initdb.stderr

    options = (f"-c listen_addresses=127.0.0.1 -p {POSTGRES_PORT} -k {folder} -c fsync=off")
    started = namespace.run([*as_postgres, str(POSTGRES_BIN / "pg_ctl"), "start", "-w",
                             "-t", "60", "-D", str(folder / "data"), "-l",
                             str(folder / "server.log"), "-o", options], timeout_s=90)
    assert started.returncode == 0, started.stdout + started.stderr + log_tail(
        folder / "server.log")

    created = namespace.run([str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p",
                             str(POSTGRES_PORT), "-U", "mlflow", "mlflow"], timeout_s=60,
                            env={**namespace.env, "PGPASSWORD": password})
    assert created.returncode == 0, created.stdout + created.stderr
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, and the project installs psycopg2.
    return f"postgresql+psycopg2://mlflow:{password}@127.0.0.1:{POSTGRES_PORT}/mlflow"


def stop_postgres(namespace: Namespace, work_dir: Path) -> None:
    data = work_dir / "postgres" / "data"
    if (data / "postmaster.pid").exists():
        namespace.run(["runuser", "-u", POSTGRES_USER, "--", str(POSTGRES_BIN / "pg_ctl"),
                       "stop", "-m", "fast", "-w", "-D", str(data)], timeout_s=60)


@pytest.fixture(scope="module")
def services(namespace, work_dir):
    """PostgreSQL, an MLflow server on it, and a two-node Ray cluster, all started."""
    logs = work_dir / "logs"
    logs.mkdir()
    try:
        database_uri = start_postgres(namespace, work_dir, secrets.token_hex(16))
        mlflow = namespace.start(
            [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(MLFLOW_PORT),
             "--workers", "1", "--backend-store-uri", database_uri, "--serve-artifacts",
             "--artifacts-destination", str(work_dir / "mlflow-artifacts")],
            logs / "mlflow.log")

        head = namespace.start([str(VENV_BIN / "ray"), "start", "--block", *HEAD_ARGS,
                                f"--temp-dir={work_dir / 'ray-head'}", "--disable-usage-stats"],
                               logs / "ray-head.log")
        assert call_in_namespace(namespace, wait_for_port, GCS_PORT, STARTUP_TIMEOUT_S,
                                 head.pid), log_tail(logs / "ray-head.log")
        namespace.start([str(VENV_BIN / "ray"), "start", "--block", *WORKER_ARGS,
                         f"--temp-dir={work_dir / 'ray-worker'}", "--disable-usage-stats"],
                        logs / "ray-worker.log")
        nodes = call_in_namespace(namespace, alive_ray_nodes, f"127.0.0.1:{GCS_PORT}", 2,
                                  STARTUP_TIMEOUT_S)
        assert len(nodes) == 2, log_tail(logs / "ray-worker.log")

        tracking_uri = f"http://127.0.0.1:{MLFLOW_PORT}"
        assert call_in_namespace(namespace, wait_for_url, f"{tracking_uri}/health",
                                 STARTUP_TIMEOUT_S, mlflow.pid), log_tail(logs / "mlflow.log")
        yield {"nodes": nodes, "tracking_uri": tracking_uri, "logs": logs}
    finally:
        for process in reversed(namespace.processes):
            stop_session(process)
        namespace.processes.clear()
        stop_postgres(namespace, work_dir)


# The test.

def write_search_inputs(work_dir: Path) -> Path:
    """Generate one training and one validation image, and return the base config's path."""
    from trainable.synthetic import generate_dataset

    data = generate_dataset(work_dir / "data", train_images=1, val_images=1, seed=5)
    config = work_dir / "train.json"
    config.write_text(json.dumps({
        "dataset": {"train_dir": str(data / "train"), "val_dir": str(data / "val"),
                    "grid_points": 2},
        "model": {"type": "vit_t", "checkpoint_path": None},
        "train": {"epochs": 1, "warmup_epochs": 0.0},
        "visual": {"enable": False},
    }))
    return config


def node_of(nodes: list[dict], resource: str) -> dict:
    (node,) = [node for node in nodes if resource in node["resources"]]
    return node


@pytest.fixture(scope="module")
def search(namespace, services, work_dir):
    """Run the search on the cluster, and return its folder, MLflow runs and trial gauges."""
    base_config = write_search_inputs(work_dir)
    storage = work_dir / "results"
    log_file = services["logs"] / "search.log"
    process = namespace.start(
        [sys.executable, "-m", "tuner.search", "--address", f"127.0.0.1:{GCS_PORT}",
         "--base-config", str(base_config), "--space", "loss_weights", "--trials", "2",
         "--epochs", "1", "--scheduler", "fifo", "--cpus-per-trial", "1",
         "--max-concurrent-trials", "2", "--storage-path", str(storage),
         "--name", SEARCH_NAME, "--mlflow-uri", services["tracking_uri"]],
        log_file)
    epochs = call_in_namespace(namespace, watch_epochs, [HEAD_METRICS_PORT, WORKER_METRICS_PORT],
                               process.pid, SEARCH_TIMEOUT_S, timeout_s=SEARCH_TIMEOUT_S + 60)
    try:
        returncode = process.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the search ran past {SEARCH_TIMEOUT_S} s: {log_tail(log_file, 8000)}")
    assert returncode == 0, log_tail(log_file, 8000)

    runs = call_in_namespace(namespace, mlflow_search_runs, services["tracking_uri"], EXPERIMENT)
    return {
        "storage": storage / SEARCH_NAME,
        "epochs_by_node": {"head": epochs[str(HEAD_METRICS_PORT)],
                           "worker": epochs[str(WORKER_METRICS_PORT)]},
        "parents": [run for run in runs if "mlflow.parentRunId" not in run["tags"]],
        "children": [run for run in runs if "mlflow.parentRunId" in run["tags"]],
    }


def test_mlflow_server_received_every_trial(search):
    assert len(search["parents"]) == 1
    parent = search["parents"][0]
    assert parent["status"] == "FINISHED"
    assert len(search["children"]) == 2
    for child in search["children"]:
        assert child["tags"]["mlflow.parentRunId"] == parent["run_id"]
        assert child["status"] == "FINISHED"
        assert sorted(child["val_dice"]) == ["0", "1"]
        assert all(0.0 <= value <= 1.0 for value in child["val_dice"].values())
        assert "training_log.txt" in child["artifacts"]


def test_trials_ran_on_both_started_nodes(search, services):
    head = node_of(services["nodes"], "head_slot")
    worker = node_of(services["nodes"], "worker_slot")
    assert head["node_id"] != worker["node_id"]
    node_ids = sorted(child["tags"]["ray_node_id"] for child in search["children"])
    assert node_ids == sorted([head["node_id"], worker["node_id"]])
    for child in search["children"]:
        assert child["tags"]["ray_node_ip"] == "127.0.0.1"


def test_each_node_exported_gauges_of_its_trial(search, services):
    for name, resource in (("head", "head_slot"), ("worker", "worker_slot")):
        node_id = node_of(services["nodes"], resource)["node_id"]
        (trial,) = [child for child in search["children"]
                    if child["tags"]["ray_node_id"] == node_id]
        assert search["epochs_by_node"][name] == {trial["tags"]["trial_id"]: 1.0}


def test_storage_has_checkpoint_of_each_trial(search):
    for child in search["children"]:
        trial_dir = search["storage"] / f"trial_{child['tags']['trial_id']}"
        checkpoints = sorted(trial_dir.glob("checkpoint_*/state.pt"))
        assert len(checkpoints) == 1, f"{trial_dir}: {list_files(trial_dir)}"


def test_storage_has_log_of_each_trial(search):
    for child in search["children"]:
        trial_dir = search["storage"] / f"trial_{child['tags']['trial_id']}"
        log_file = trial_dir / "output" / "training_log.txt"
        assert log_file.exists(), f"{trial_dir}: {list_files(trial_dir)}"
        epochs = [line.split()[0] for line in log_file.read_text().splitlines()]
        assert epochs == ["epoch=0", "epoch=1"]
        node_record = json.loads((trial_dir / "ray_node.json").read_text())
        assert node_record["node_id"] == child["tags"]["ray_node_id"]
        assert node_record["node_ip"] == "127.0.0.1"
        assert isinstance(node_record["pid"], int)


def list_files(folder: Path) -> str:
    return " ".join(sorted(str(path.relative_to(folder)) for path in folder.rglob("*")))
