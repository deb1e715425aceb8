"""deploy/k8s agrees with the services: every manifest parses and is applied, every
``RENDERMILL_*`` variable is a setting of the service that reads it, each container runs
a real service module from that service's image, the gateway's probes and the metrics
annotations hit what the services serve, and the scheduler pods can run their renders
(the renderer in the image, room for RENDERMILL_CONCURRENCY of them, time to drain)."""

from __future__ import annotations

import base64
import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from rendermill.common import settings
from rendermill.gateway import app as gateway_app

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "k8s"
# Applied on its own, never by the kustomization (see its comment).
TEMPLATES = ("secret.yaml",)
# Who reads a container's environment: the service it runs and, in the scheduler's
# container, every render the local launcher starts (they inherit its environment).
READERS: dict[str, tuple[type[settings.Common], ...]] = {
    "gateway": (settings.Gateway,),
    "scheduler": (settings.Scheduler, settings.Renderer),
    "notifier": (settings.Notifier,),
}
# A 1080p render given 2 CPUs (bench/, README "Performance"): a 350 MB peak.
RENDER_PEAK_BYTES = 350 * 10**6
# scheduler.service.main: on SIGTERM its supervisor waits up to drain_seconds + 20 s for
# the running attempts (drained, stopped, recorded) before it cancels them and exits.
SCHEDULER_EXIT_MARGIN = 20
# USER nobody in every Dockerfile: uid 65534 in the python:3.11-slim (Debian) base.
NOBODY = 65534


def _load(name: str) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = [
        d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None
    ]
    return docs


def _kustomization() -> dict[str, Any]:
    (kustomization,) = _load("kustomization.yaml")
    return kustomization


def _objects(kind: str | None = None) -> Iterator[dict[str, Any]]:
    """Every object kubectl apply -k creates, plus the Secret template."""
    for name in [*_kustomization()["resources"], *TEMPLATES]:
        for obj in _load(name):
            if kind is None or obj["kind"] == kind:
                yield obj


def _named(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in _objects(kind) if o["metadata"]["name"] == name]
    return obj


def _pods() -> Iterator[tuple[str, dict[str, Any]]]:
    for deployment in _objects("Deployment"):
        yield deployment["metadata"]["name"], deployment["spec"]["template"]


def _all(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """A pod's init containers and containers."""
    containers: list[dict[str, Any]] = [
        *pod["spec"].get("initContainers", []),
        *pod["spec"]["containers"],
    ]
    return containers


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    """(service the container runs, container) for every container of every pod."""
    for _, pod in _pods():
        for container in _all(pod):
            yield _service(container), container


def _service(container: dict[str, Any]) -> str:
    command = container["command"]
    assert command[:2] == ["python", "-m"], container["name"]
    module = command[2]
    match = re.fullmatch(r"rendermill\.(\w+)", module)
    assert match, f"{container['name']} runs {module}, not a rendermill service"
    return match.group(1)


def _env(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as Kubernetes builds it: envFrom sources in order,
    then env (which wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(_named("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            secret = _named("Secret", source["secretRef"]["name"])
            env.update(secret.get("stringData", {}))
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
    for var in container.get("env", []):
        env[var["name"]] = var["value"]
    return env


def _port(container: dict[str, Any], port: int | str) -> int:
    """A container port by number or by name."""
    for declared in container["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            number: int = declared["containerPort"]
            return number
    raise AssertionError(f"{container['name']} declares no port {port!r}")


_SUFFIXES = {"m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SUFFIXES.update({"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40})


def _quantity(value: str | int) -> float:
    """A Kubernetes quantity (``4``, ``250m``, ``1Gi``) as a number (cores, bytes)."""
    match = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value))
    assert match, value
    number, suffix = match.groups()
    return float(number) * _SUFFIXES[suffix] if suffix else float(number)


def test_every_manifest_parses_and_is_applied() -> None:
    kustomization = _kustomization()
    listed = kustomization["resources"]
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", *TEMPLATES}
    assert sorted(listed) == sorted(on_disk)
    namespace = kustomization["namespace"]
    for name in [*listed, *TEMPLATES]:
        docs = _load(name)
        assert docs, name
        for obj in docs:
            assert obj["apiVersion"] and obj["kind"] and obj["metadata"]["name"], name
    # Applied without the kustomization, the template must name the namespace itself.
    for name in TEMPLATES:
        for obj in _load(name):
            assert obj["metadata"]["namespace"] == namespace
    # Every image in use can be replaced in one place.
    images = {c["image"].rsplit(":", 1)[0] for _, pod in _pods() for c in _all(pod)}
    assert images == {i["name"] for i in kustomization["images"]}


def test_every_setting_named_is_one_its_readers_have() -> None:
    for service, container in _containers():
        readers = READERS[service]
        known = {settings.PREFIX + f.upper() for cls in readers for f in cls.__struct_fields__}
        env = _env(container)
        for name, value in env.items():
            # The API server takes strings only: an unquoted 9090 or true is refused.
            assert isinstance(value, str), f"{container['name']}: {name} is not a string"
            if name.startswith(settings.PREFIX):
                assert name in known, f"{container['name']} ({service}): {name} is no setting"
        for cls in readers:
            cfg = settings.load(cls, env)  # every value converts to its field's type
            # Pods share no disk and no embedded database.
            assert cfg.store == "s3" and cfg.s3_bucket, container["name"]
            assert cfg.database_url, container["name"]


def test_every_config_map_and_secret_is_used() -> None:
    sources = {
        (kind, source[ref]["name"])
        for _, container in _containers()
        for source in container.get("envFrom", [])
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef"))
        if ref in source
    }
    for kind in ("ConfigMap", "Secret"):
        for obj in _objects(kind):
            assert (kind, obj["metadata"]["name"]) in sources, obj["metadata"]["name"]


@pytest.mark.parametrize("service", sorted(READERS))
def test_containers_run_their_service_from_its_image(service: str) -> None:
    containers = [c for s, c in _containers() if s == service]
    assert containers, service
    assert importlib.util.find_spec(f"rendermill.{service}.__main__") is not None
    dockerfile = (ROOT / "services" / service / "Dockerfile").read_text()
    assert f'CMD ["python", "-m", "rendermill.{service}"]' in dockerfile
    assert "\nUSER nobody\n" in dockerfile
    for container in containers:
        assert container["image"].rsplit(":", 1)[0] == f"rendermill/{service}"


@pytest.mark.parametrize("service", ["renderer", "scheduler"])
def test_images_that_render_carry_the_common_colour_tables(service: str) -> None:
    """Made at build time (as root, before USER nobody) where RENDERMILL_CACHE_DIR
    points, so that no render spends 3 CPU seconds making one; k8s keeps the image's."""
    lines = (ROOT / "services" / service / "Dockerfile").read_text().splitlines()
    made = lines.index("RUN python -m rendermill.renderer.tables /app/colour-tables")
    assert lines.index("ENV RENDERMILL_CACHE_DIR=/app/colour-tables") > made
    assert lines.index("USER nobody") > made
    assert lines.index("ENV PATH=/app/.venv/bin:$PATH") < made
    for _, container in _containers():
        names = {e["name"] for e in container.get("env", [])}
        assert "RENDERMILL_CACHE_DIR" not in names


def test_pods_run_as_nobody_on_a_read_only_filesystem() -> None:
    for name, pod in _pods():
        spec = pod["spec"]
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True, name
        assert security["runAsUser"] == NOBODY, name
        assert spec["serviceAccountName"] == "rendermill", name
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in _all(pod):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in empty_dirs, f"{name}/{container['name']}: no /tmp"


def test_selectors_match_their_pods() -> None:
    for deployment in _objects("Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    gateway_labels = _named("Deployment", "rendermill-gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    service = _named("Service", "rendermill-gateway")
    assert service["spec"]["selector"].items() <= gateway_labels.items()
    budget = _named("PodDisruptionBudget", "rendermill-gateway")
    assert budget["spec"]["selector"]["matchLabels"].items() <= gateway_labels.items()
    replicas = _named("Deployment", "rendermill-gateway")["spec"]["replicas"]
    assert budget["spec"]["minAvailable"] < replicas  # or no node could ever be drained


def _gateway_routes() -> set[str]:
    app = gateway_app.create_app(settings.Gateway())
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource}


def test_gateway_probes_and_service_reach_what_it_serves() -> None:
    routes = _gateway_routes()
    pod = _named("Deployment", "rendermill-gateway")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    cfg = settings.load(settings.Gateway, _env(container))
    assert cfg.host == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in routes, probe
        assert _port(container, get["port"]) == cfg.port, probe
    (port,) = _named("Service", "rendermill-gateway")["spec"]["ports"]
    assert _port(container, port["targetPort"]) == cfg.port
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in routes
    assert int(annotations["prometheus.io/port"]) == cfg.port
    # The migrations run from the gateway's own image and settings.
    (init,) = pod["spec"]["initContainers"]
    assert init["image"] == container["image"]
    assert init["command"] == ["python", "-m", "rendermill.gateway", "migrate"]
    assert init["envFrom"] == container["envFrom"]


@pytest.mark.parametrize(
    ("deployment", "cls"),
    [("rendermill-scheduler", settings.Scheduler), ("rendermill-notifier", settings.Notifier)],
)
def test_metrics_are_served_where_prometheus_is_told_to_look(
    deployment: str, cls: type[settings.Scheduler | settings.Notifier]
) -> None:
    pod = _named("Deployment", deployment)["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    cfg = settings.load(cls, _env(container))
    assert cfg.metrics_port is not None
    assert cfg.metrics_host == "0.0.0.0"  # the default, 127.0.0.1, is out of reach
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == cfg.metrics_port
    assert _port(container, cfg.metrics_port) == cfg.metrics_port


def _uv_sync_packages(dockerfile: Path) -> set[str]:
    text = dockerfile.read_text().replace("\\\n", " ")
    (line,) = [ln for ln in text.splitlines() if ln.startswith("RUN uv sync")]
    return set(re.findall(r"--package\s+(\S+)", line))


def test_scheduler_image_can_start_renders() -> None:
    packages = _uv_sync_packages(ROOT / "services" / "scheduler" / "Dockerfile")
    assert {"rendermill-scheduler", "rendermill-renderer"} <= packages
    (container,) = _named("Deployment", "rendermill-scheduler")["spec"]["template"]["spec"][
        "containers"
    ]
    assert settings.load(settings.Scheduler, _env(container)).launcher == "local"


def test_scheduler_pods_have_room_and_time_for_their_renders() -> None:
    pod = _named("Deployment", "rendermill-scheduler")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    cfg = settings.load(settings.Scheduler, env)
    renderer = settings.load(settings.Renderer, env)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    # Each render sizes its threads by the CPUs it is given; left to count them itself
    # it would count the node's (there is no CPU limit).
    assert renderer.cpus == 2
    assert _quantity(requests["cpu"]) >= cfg.concurrency * renderer.cpus
    assert _quantity(requests["memory"]) >= cfg.concurrency * RENDER_PEAK_BYTES
    assert _quantity(limits["memory"]) >= _quantity(requests["memory"])
    # Each render's sources (at most max_scratch_bytes) and its output go to the scratch
    # directory, an emptyDir that evicts the pod when it outgrows its sizeLimit.
    assert renderer.scratch_dir
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == renderer.scratch_dir]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    size = _quantity(volume["emptyDir"]["sizeLimit"])
    assert size > cfg.concurrency * renderer.max_scratch_bytes
    assert _quantity(requests["ephemeral-storage"]) >= size
    assert pod["terminationGracePeriodSeconds"] > cfg.drain_seconds + SCHEDULER_EXIT_MARGIN


def test_readme_covers_every_file() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for path in DEPLOY.glob("*.yaml"):
        assert f"`{path.name}`" in readme, path.name
