"""The deployment files under deploy/: parsed, and checked against the code they deploy.

No Docker engine and no Kubernetes cluster run where the unit tests run, so nothing here starts
a container. Instead: every YAML and JSON file parses; the compose stack, the Kubernetes
manifests, Prometheus and Grafana agree with each other and with the code (settings, metric
names and labels, HTTP endpoints, ClickHouse tables and views, package layout). Where a tool is
installed (the docker compose plugin, kubectl, the kubernetes-validate package), its own
validation runs too; without it that one check is skipped and says why.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from streams.settings import ENV_PREFIX, Settings, variable_names
from streams.web.metrics import LOADER_METRIC_NAMES, WORKER_METRIC_NAMES

METRIC_NAMES = (*WORKER_METRIC_NAMES, *LOADER_METRIC_NAMES)
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "journey.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
RUNBOOK = ROOT / "docs" / "runbook.md"
MIGRATIONS = ROOT / "sinks" / "clickhouse" / "migrations"

SETTINGS_VARIABLES = variable_names()
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")
YAML_FILES = sorted(
    path
    for folder in (COMPOSE_DIR, K8S, DEPLOY / "prometheus", GRAFANA)
    for path in [*folder.rglob("*.yaml"), *folder.rglob("*.yml")]
)


def load_all(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def load(path: Path) -> Any:
    (doc,) = load_all(path)
    return doc


# --- every file parses -----------------------------------------------------------------------
def test_the_deploy_files_exist() -> None:
    for path in (COMPOSE_FILE, ENV_EXAMPLE, PROMETHEUS, ALERTS, DASHBOARD, DATASOURCES):
        assert path.is_file(), path
    assert len(YAML_FILES) >= 10, YAML_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_file_parses(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path} holds no YAML document"
    assert all(isinstance(doc, dict) for doc in docs), f"{path}: every document is a mapping"


def test_the_dashboard_is_valid_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"panel {panel['title']!r} is wider than the grid"
        refs = [target["refId"] for target in panel.get("targets", [])]
        assert len(refs) == len(set(refs)), f"panel {panel['title']!r}: refIds must be unique"


# --- docker compose --------------------------------------------------------------------------
def compose() -> dict[str, Any]:
    return load(COMPOSE_FILE)


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def kafka_brokers() -> dict[str, dict[str, Any]]:
    return {
        name: svc
        for name, svc in services().items()
        if str(svc.get("image", "")).startswith("apache/kafka:")
    }


def role(command: str) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in services().items() if svc.get("command") == [command]}


def worker() -> dict[str, Any]:
    (svc,) = role("worker").values()
    return svc


def loader() -> dict[str, Any]:
    (svc,) = role("loader").values()
    return svc


def journey_services() -> dict[str, dict[str, Any]]:
    """Every service that runs the journey image."""
    image = services()["init"]["image"]
    return {name: svc for name, svc in services().items() if svc.get("image") == image}


# What the settings default to: the ports the deploy files must agree with.
WORKER_PORT = Settings.model_fields["worker_web_port"].default
LOADER_PORT = Settings.model_fields["web_port"].default
CLICKHOUSE_ACCESS = re.compile(r"JOURNEY_CLICKHOUSE_|JOURNEY_WEB_TOKEN|CLICKHOUSE_\w*PASSWORD")


def resolve(value: Any) -> str:
    """A compose value with ${VAR:-default} / ${VAR:?error} resolved as if VAR were unset."""

    def one(match: re.Match[str]) -> str:
        body = match.group(1)
        if ":-" in body:
            return body.split(":-", 1)[1]
        return "placeholder"

    return re.sub(r"\$\{([^}]*)\}", one, str(value))


def test_compose_has_the_whole_stack() -> None:
    names = set(services())
    assert {"clickhouse", "init", "prometheus", "grafana", "worker", "loader"} <= names
    assert len(kafka_brokers()) == 3
    assert set(role("worker")) == {"worker"} and set(role("loader")) == {"loader"}
    assert services()["clickhouse"]["image"].startswith("clickhouse/clickhouse-server:")
    assert services()["prometheus"]["image"].startswith("prom/prometheus:")
    assert services()["grafana"]["image"].startswith("grafana/grafana:")


def test_kafka_is_a_three_node_kraft_cluster_with_replication_3_and_min_isr_2() -> None:
    brokers = kafka_brokers()
    node_ids = set()
    for name, svc in brokers.items():
        env = svc["environment"]
        node_ids.add(int(env["KAFKA_NODE_ID"]))
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
        voters = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(",")
        assert sorted(v.split("@")[1].split(":")[0] for v in voters) == sorted(brokers)
        assert f"{env['KAFKA_NODE_ID']}@{name}:" in env["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
        advertised = dict(
            item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
        )
        assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in listeners
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
        assert advertised[env["KAFKA_INTER_BROKER_LISTENER_NAME"]].startswith(f"{name}:")
        protocols = dict(
            item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
        )
        assert set(listeners) <= set(protocols)
        assert int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == 3
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["CLUSTER_ID"], "every node needs the same CLUSTER_ID"
        assert "healthcheck" in svc and svc["restart"] == "unless-stopped"
        assert [v.split(":")[1] for v in svc["volumes"]] == ["/var/lib/kafka/data"]
    assert node_ids == {1, 2, 3}
    assert len({svc["environment"]["CLUSTER_ID"] for svc in brokers.values()}) == 1
    assert len({svc["volumes"][0].split(":")[0] for svc in brokers.values()}) == 3


def test_every_journey_service_reaches_kafka_with_replication_3() -> None:
    kafka_hosts = {f"{name}:9092" for name in kafka_brokers()}
    assert {"worker", "loader", "init", "simulator"} <= set(journey_services())
    for name, svc in journey_services().items():
        env = svc["environment"]
        assert set(env["JOURNEY_KAFKA_BOOTSTRAP"].split(",")) == kafka_hosts, name
        assert int(env["JOURNEY_REPLICATION_FACTOR"]) == 3, name


def test_only_the_loader_and_init_get_clickhouse_access() -> None:
    """The workers (and the simulator) hold no ClickHouse address, password or web token."""
    for name in ("worker", "simulator"):
        env = services()[name]["environment"]
        leaked = [k for k, v in env.items() if CLICKHOUSE_ACCESS.search(f"{k}={v}")]
        assert not leaked, f"{name} gets ClickHouse access: {leaked}"
        assert "clickhouse" not in services()[name].get("depends_on", {}), name
    for name in ("loader", "init"):
        env = services()[name]["environment"]
        assert env["JOURNEY_CLICKHOUSE_URL"] == "http://clickhouse:8123", name
        assert env["JOURNEY_CLICKHOUSE_USERNAME"] == "journey", name
        # A secret is a reference to .env, never a literal in the compose file.
        assert str(env["JOURNEY_CLICKHOUSE_PASSWORD"]).startswith("${"), name
        assert services()[name]["depends_on"]["clickhouse"]["condition"] == "service_healthy"
    assert str(loader()["environment"]["JOURNEY_WEB_TOKEN"]).startswith("${")


def test_the_worker_service_scales() -> None:
    """`docker compose up --scale worker=N`: nothing in the service may be one per replica."""
    svc = worker()
    env = svc["environment"]
    assert svc["deploy"]["replicas"] >= 2
    assert "container_name" not in svc and "hostname" not in svc
    # Static membership with one id for every replica: each new one would fence the others.
    assert "JOURNEY_GROUP_INSTANCE_ID" not in env
    # The table state: an anonymous volume (one per replica), never a named or bind volume that
    # all replicas would share.
    assert svc["volumes"] == [env["JOURNEY_DATA_DIR"]]
    for port in svc.get("ports", []):
        parts = str(port).split(":")
        assert len(parts) == 3 and parts[1] == "", f"{port}: a fixed host port cannot scale"
    assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert svc["restart"] == "unless-stopped"
    assert "resources" in svc["deploy"]


def test_the_ports_and_healthchecks_match_the_settings_defaults() -> None:
    svc = worker()
    assert svc["environment"]["JOURNEY_WORKER_WEB_PORT"] == WORKER_PORT
    assert svc["environment"]["JOURNEY_WEB_HOST"] == "0.0.0.0"
    assert f":{WORKER_PORT}/health" in " ".join(svc["healthcheck"]["test"])
    assert [str(p).rsplit(":", 1)[1] for p in svc["ports"]] == [str(WORKER_PORT)]
    svc = loader()
    assert svc["environment"]["JOURNEY_WEB_PORT"] == LOADER_PORT
    assert svc["environment"]["JOURNEY_WEB_HOST"] == "0.0.0.0"
    assert f":{LOADER_PORT}/health" in " ".join(svc["healthcheck"]["test"])
    assert [str(p).rsplit(":", 1)[1] for p in svc["ports"]] == [str(LOADER_PORT)]


def test_the_loader_keeps_its_state_and_knows_the_workers() -> None:
    svc = loader()
    env = svc["environment"]
    named_volumes = set(compose()["volumes"])
    mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
    assert mounts.get(env["JOURNEY_DATA_DIR"]) in named_volumes
    assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert svc["hostname"] in env["JOURNEY_WEB_ALLOWED_HOSTS"].split(",")
    # The dashboard's per-worker figures: the worker containers by name, on the worker port.
    project = compose()["name"]
    for url in resolve(env["JOURNEY_WORKER_URLS"]).split(","):
        assert re.fullmatch(rf"http://{project}-worker-\d+:{WORKER_PORT}", url), url


def test_init_creates_topics_and_migrates_once_the_brokers_and_clickhouse_are_healthy() -> None:
    init = services()["init"]
    script = " ".join([*init.get("entrypoint", []), *init["command"]])
    assert "journey topics create" in script and "journey migrate" in script
    for dependency in [*kafka_brokers(), "clickhouse"]:
        assert init["depends_on"][dependency]["condition"] == "service_healthy", dependency
    assert init["environment"]["JOURNEY_WEB_PORT"] == 0


def test_clickhouse_users_take_their_passwords_from_the_environment() -> None:
    clickhouse = services()["clickhouse"]
    users_mount = next(v for v in clickhouse["volumes"] if "users.d" in v)
    users = ET.parse(COMPOSE_DIR / users_mount.split(":")[0]).getroot().find("users")
    assert users is not None
    for user in ("journey", "grafana"):
        password = users.find(f"{user}/password")
        assert password is not None and not (password.text or "").strip(), user
        variable = password.get("from_env")
        assert variable in clickhouse["environment"], f"{variable} is not passed to clickhouse"
    grants = {q.text for q in users.findall("grafana/grants/query")}
    assert grants == {"GRANT SELECT ON journey.*"}, "the Grafana user must be read-only"
    assert "CMD-SHELL" in clickhouse["healthcheck"]["test"]


def test_grafana_installs_the_clickhouse_plugin_and_provisions_both_data_sources() -> None:
    grafana = services()["grafana"]
    assert "grafana-clickhouse-datasource" in grafana["environment"]["GF_INSTALL_PLUGINS"]
    sources = {ds["type"]: ds for ds in load(DATASOURCES)["datasources"]}
    assert set(sources) == {"prometheus", "grafana-clickhouse-datasource"}
    clickhouse = sources["grafana-clickhouse-datasource"]
    assert clickhouse["jsonData"]["host"] == "clickhouse"
    assert clickhouse["jsonData"]["username"] == "grafana"
    password = re.fullmatch(r"\$\{(\w+)\}", clickhouse["secureJsonData"]["password"])
    assert password and password.group(1) in grafana["environment"]
    assert sources["prometheus"]["url"] == "http://prometheus:9090"


def test_bind_mounts_point_at_files_of_the_repository() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COMPOSE_DIR / source).exists(), f"{name}: {source} does not exist"
        build = svc.get("build")
        if build:
            context = COMPOSE_DIR / build["context"]
            assert (context / build["dockerfile"]).resolve() == DOCKERFILE.resolve(), name


def test_every_required_compose_variable_is_in_env_example() -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required, "the secrets are required variables"
    example = env_example()
    assert required <= set(example), f"missing from .env.example: {required - set(example)}"
    for variable in required:
        assert "change-me" in example[variable], f"{variable}: .env.example holds a placeholder"


def env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def test_docker_compose_config_accepts_the_file() -> None:
    """`docker compose config` parses, interpolates and validates without a Docker engine."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    if plugin.returncode != 0:
        reason = (plugin.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the docker CLI has no compose plugin ({reason})")
    files = ["-f", str(COMPOSE_FILE), "--env-file", str(ENV_EXAMPLE), "--profile", "demo"]
    result = subprocess.run(
        [docker, "compose", *files, "config", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


# --- Prometheus ------------------------------------------------------------------------------
def scrape_jobs() -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in load(PROMETHEUS)["scrape_configs"]}


def test_prometheus_scrapes_every_worker_and_the_loader() -> None:
    jobs = scrape_jobs()
    workers = jobs["journey-workers"]
    assert workers.get("metrics_path", "/metrics") == "/metrics"
    # Every replica of the scaled service, found by the service name in Docker's DNS.
    (sd,) = workers["dns_sd_configs"]
    assert sd["names"] == ["worker"] and sd["type"] == "A"
    assert sd["port"] == worker()["environment"]["JOURNEY_WORKER_WEB_PORT"]
    assert "static_configs" not in workers
    targets = {t for group in jobs["journey-loader"]["static_configs"] for t in group["targets"]}
    assert targets == {f"loader:{loader()['environment']['JOURNEY_WEB_PORT']}"}


def test_every_job_the_alerts_and_panels_select_is_scraped() -> None:
    jobs = set(scrape_jobs())
    for expr in promql_expressions():
        for job in re.findall(r'job\s*=\s*"([^"]+)"', expr):
            assert job in jobs, f"{expr!r} selects job {job!r}, which prometheus.yml has not"


def test_prometheus_loads_the_alert_rules_mounted_by_compose() -> None:
    prometheus = services()["prometheus"]
    mounts = dict(reversed(v.split(":")[:2]) for v in prometheus["volumes"])
    for rule_file in load(PROMETHEUS)["rule_files"]:
        assert rule_file in mounts, f"{rule_file} is not mounted into the container"
        assert (COMPOSE_DIR / mounts[rule_file]).resolve() == ALERTS.resolve()
    assert mounts["/etc/prometheus/prometheus.yml"].endswith("prometheus/prometheus.yml")


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load(ALERTS)["groups"] for rule in group["rules"]]


def test_every_alert_is_explained_in_the_runbook() -> None:
    runbook = RUNBOOK.read_text()
    for rule in alert_rules():
        assert rule["alert"] in runbook, f"docs/runbook.md says nothing about {rule['alert']}"
        assert rule["labels"]["severity"] in {"page", "ticket"}


# --- metric names and labels -----------------------------------------------------------------
def promql_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]
    return exprs + [rule["expr"] for rule in alert_rules()]


def exposition() -> dict[str, set[str]]:
    """Sample name -> label names, from what a worker's and the loader's /metrics serve."""
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from streams.web.metrics import LoaderMetrics, Metrics

    pipeline = SimpleNamespace(
        ingest=SimpleNamespace(
            consumed={"shop.orders": 3},
            accepted={"shop.orders": 2},
            dead={"bad_json": 1},
            repartitioned=1,
            misrouted={"shop.orders": 1},
        ),
        ordering=_FakeOrdering(),
        engine=SimpleNamespace(decisions={("NPS_SURVEY", "EMITTED"): 1}, index={"c1": 1}),
        outputs=SimpleNamespace(sent={"events": 3}),
        acks=SimpleNamespace(pending=1),
        unacknowledged=1,
    )
    metrics = Metrics()
    metrics.attach(pipeline, lambda: {("shop.orders", 0): 5})  # type: ignore[arg-type]
    for histogram in (metrics.timer_lateness, metrics.processing):
        histogram.observe(0.01)
    loader = SimpleNamespace(
        sink=SimpleNamespace(
            stats=SimpleNamespace(
                rows_per_table={"events": 2}, batches=1, failures=0, duplicate_rows=0
            ),
        ),
        stats=SimpleNamespace(consumed={"journey.events": 2}, undecodable=0),
        lag=lambda: {("journey.events", 0): 1},
    )
    loader_metrics = LoaderMetrics()
    loader_metrics.attach(loader)  # type: ignore[arg-type]
    loader_metrics.sink_flush.observe(0.01)
    text = generate_latest(metrics.registry).decode()
    text += generate_latest(loader_metrics.registry).decode()
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


class _FakeOrdering:
    forced = {"wait": 1}
    paused = {("shop.orders", 0)}
    pauses = 3

    def __len__(self) -> int:
        return 2


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bjourney_[a-z0-9_]+\b", expr))


def test_the_dashboard_shows_the_pipeline_metrics() -> None:
    used = {name for expr in promql_expressions() for name in metric_names(expr)}
    for wanted in (
        "journey_events_consumed_total",
        "journey_dead_letters_total",
        "journey_triggers_total",
        "journey_pending_timers",
        "journey_timer_lateness_seconds_bucket",
        "journey_sink_flush_seconds_bucket",
        "journey_consumer_lag",
    ):
        assert wanted in used, f"no panel shows {wanted}"


def strip_histogram_suffix(name: str) -> str:
    return next((name.removesuffix(s) for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)


def test_every_metric_used_by_grafana_and_the_alerts_exists() -> None:
    known = set(METRIC_NAMES)
    for expr in promql_expressions():
        for name in metric_names(expr):
            assert name in known or strip_histogram_suffix(name) in known, (
                f"{name} (in {expr!r}) is not in METRIC_NAMES"
            )


def test_every_label_used_by_grafana_and_the_alerts_exists() -> None:
    served = exposition()
    assert {strip_histogram_suffix(name) for name in served} >= set(METRIC_NAMES)
    added_by_prometheus = {"instance", "job", "app"}
    for expr in promql_expressions():
        names = metric_names(expr)
        available = set().union(*(served[name] for name in names)) if names else set()
        for name in names:
            assert name in served, f"{name} is not served on /metrics"
        grouped = {
            label.strip()
            for clause in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in clause.split(",")
            if label.strip()
        }
        selected = {
            label
            for matchers in re.findall(r"journey_[a-z0-9_]+\{([^}]*)\}", expr)
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers)
        }
        unknown = (grouped | selected) - available - added_by_prometheus
        assert not unknown, f"{expr!r} uses labels {unknown} that these metrics do not have"


def test_each_dashboard_row_shows_the_metrics_of_its_role() -> None:
    """A row about the workers shows worker metrics, the loader's row loader metrics: a panel
    asking for a metric the role does not serve stays empty."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = sorted(dashboard["panels"], key=lambda p: (p["gridPos"]["y"], p["gridPos"]["x"]))
    roles = {"loader": set(LOADER_METRIC_NAMES), "workers": set(WORKER_METRIC_NAMES)}
    role: str | None = None
    seen = {"workers": 0, "loader": 0}
    for panel in panels:
        if panel["type"] == "row":
            title = panel["title"].lower()
            role = next((name for name in roles if name in title), None)
            continue
        for target in panel.get("targets", []):
            for name in metric_names(target.get("expr", "")):
                assert role is not None, f"{panel['title']!r} is in no role's row"
                assert strip_histogram_suffix(name) in roles[role], (
                    f"{panel['title']!r} shows {name}, which this row's role does not serve"
                )
                seen[role] += 1
    assert seen["workers"] and seen["loader"], seen


# --- Grafana's ClickHouse panels -------------------------------------------------------------
def clickhouse_objects() -> set[str]:
    text = "\n".join(path.read_text() for path in MIGRATIONS.glob("*.sql"))
    return set(
        re.findall(
            r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?\{db\}\.(\w+)",
            text,
        )
    )


def test_clickhouse_panels_read_existing_tables_and_views() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {ds["uid"] for ds in load(DATASOURCES)["datasources"]}
    objects = clickhouse_objects()
    assert {"funnel_daily", "nps_daily", "trigger_attribution", "events"} <= objects
    read: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in uids, panel["title"]
            if "rawSql" in target:
                for name in re.findall(r"\bjourney\.(\w+)", target["rawSql"]):
                    assert name in objects, f"panel {panel['title']!r} reads journey.{name}"
                    read.add(name)
    assert {"funnel_daily", "nps_daily", "trigger_attribution"} <= read


# --- JOURNEY_* variables ---------------------------------------------------------------------
def k8s_docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_all(path)
    ]


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    (doc,) = [d for d in k8s_docs() if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return doc


def journey_variables() -> dict[str, set[str]]:
    """Every JOURNEY_* name the deploy files set or reference, and where."""
    found: dict[str, set[str]] = {}

    def add(name: str, where: str) -> None:
        if name.startswith(ENV_PREFIX):
            found.setdefault(name, set()).add(where)

    text = COMPOSE_FILE.read_text()
    for name in re.findall(r"\$\{(\w+)", text):
        add(name, "compose.yaml (interpolation)")
    data = compose()
    for block in [*data["services"].values(), *(v for k, v in data.items() if k.startswith("x-"))]:
        env = block.get("environment", block) if isinstance(block, dict) else {}
        for name in env if isinstance(env, dict) else []:
            add(name, "compose.yaml")
    for name in env_example():
        add(name, ".env.example")
    for doc in k8s_docs():
        where = f"k8s {doc['kind']}/{doc['metadata']['name']}"
        for name in [*doc.get("data", {}), *doc.get("stringData", {})]:
            add(name, where)
        pod = doc.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            for env in container.get("env", []):
                add(env["name"], where)
    assert len(found) > 10
    return found


def test_every_journey_variable_in_the_deploy_files_is_a_setting() -> None:
    unknown = {
        name: sorted(where)
        for name, where in journey_variables().items()
        if name not in SETTINGS_VARIABLES
    }
    assert not unknown, f"not settings (streams/settings.py): {unknown}"


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in SETTINGS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            monkeypatch.setenv(name, resolve(value))
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_the_compose_settings_of_both_roles_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = worker()
    settings = settings_from(svc["environment"], monkeypatch)
    assert settings.web_host == "0.0.0.0"
    assert settings.replication_factor == 3
    assert str(settings.data_dir) == svc["environment"]["JOURNEY_DATA_DIR"]
    assert settings.clickhouse_url == "" and settings.clickhouse_password is None
    svc = loader()
    settings = settings_from(svc["environment"], monkeypatch)
    assert settings.web_host == "0.0.0.0"
    assert settings.clickhouse_url == "http://clickhouse:8123"
    assert settings.clickhouse_password is not None and settings.web_token is not None


# --- Kubernetes ------------------------------------------------------------------------------
WORKLOADS = ("StatefulSet", "Deployment", "Job")


def workloads() -> list[dict[str, Any]]:
    return [doc for doc in k8s_docs() if doc["kind"] in WORKLOADS]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (one,) = pod_spec(workload)["containers"]
    return one


def component(workload: dict[str, Any]) -> str:
    return str(workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"])


def by_component(name: str) -> dict[str, Any]:
    (workload,) = [w for w in workloads() if component(w) == name]
    return workload


def pod_env(workload: dict[str, Any]) -> dict[str, Any]:
    """Every variable the pod's container gets: its ConfigMaps and Secrets, then its env."""
    env: dict[str, Any] = {}
    for ref in container(workload).get("envFrom", []):
        if "configMapRef" in ref:
            env.update(k8s("ConfigMap", ref["configMapRef"]["name"])["data"])
        else:
            env.update(k8s("Secret", ref["secretRef"]["name"])["stringData"])
    for var in container(workload).get("env", []):
        env[var["name"]] = var.get("value", var.get("valueFrom"))
    return env


def test_the_manifests_hold_every_workload_object() -> None:
    kinds = sorted(doc["kind"] for doc in k8s_docs())
    for kind in ("StatefulSet", "Deployment", "ConfigMap", "Secret", "Job", "Namespace"):
        assert kind in kinds, kind
    assert sorted(component(w) for w in workloads()) == ["init", "loader", "worker"]
    assert by_component("worker")["kind"] == "StatefulSet"
    assert kinds.count("Service") == 3
    assert kinds.count("PodDisruptionBudget") == 2


def test_the_worker_pods_carry_no_clickhouse_variables() -> None:
    env = pod_env(by_component("worker"))
    leaked = sorted(name for name in env if CLICKHOUSE_ACCESS.search(f"{name}="))
    assert not leaked, f"the workers get ClickHouse access or the web token: {leaked}"
    assert "JOURNEY_KAFKA_SASL_PASSWORD" in env, "the workers need Kafka's credentials"


def test_only_the_loader_and_the_init_job_reach_clickhouse() -> None:
    with_clickhouse = {
        component(w) for w in workloads() if "JOURNEY_CLICKHOUSE_PASSWORD" in pod_env(w)
    }
    assert with_clickhouse == {"loader", "init"}
    with_token = {component(w) for w in workloads() if "JOURNEY_WEB_TOKEN" in pod_env(w)}
    assert with_token == {"loader"}
    # Not by a Secret any other workload mounts either.
    for workload in workloads():
        if component(workload) == "worker":
            for volume in pod_spec(workload).get("volumes", []):
                secret = volume.get("secret", {}).get("secretName", "")
                assert "clickhouse" not in secret and "web-token" not in secret, volume


def test_the_worker_statefulset_probes_state_and_identity() -> None:
    sts = by_component("worker")
    env = pod_env(sts)
    spec, pod, one = sts["spec"], pod_spec(sts), container(sts)
    ports = {port["name"]: port["containerPort"] for port in one["ports"]}
    assert ports["http"] == WORKER_PORT == int(env["JOURNEY_WORKER_WEB_PORT"])
    assert env["JOURNEY_WEB_HOST"] == "0.0.0.0"
    assert one["args"] == ["worker"]
    ready, alive = one["readinessProbe"]["httpGet"], one["livenessProbe"]["httpGet"]
    assert (ready["path"], alive["path"]) == ("/ready", "/health")
    assert one["startupProbe"]["httpGet"]["path"] == "/health"
    for probe in (ready, alive, one["startupProbe"]["httpGet"]):
        assert probe["port"] in (ports["http"], "http")
    claims = {claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in one["volumeMounts"]}
    assert mounts.get(env["JOURNEY_DATA_DIR"]) in claims, "table state is not on the PVC"
    headless = k8s("Service", spec["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert spec["replicas"] == 3
    assert spec["replicas"] <= int(env["JOURNEY_PARTITIONS"]), "idle workers never get ready"
    # Static membership from the stable pod name.
    assert env["JOURNEY_GROUP_INSTANCE_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] >= 30
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(WORKER_PORT)


def test_the_loader_deployment_serves_probes_and_knows_the_workers() -> None:
    loader_ = by_component("loader")
    env = pod_env(loader_)
    pod, one = pod_spec(loader_), container(loader_)
    ports = {port["name"]: port["containerPort"] for port in one["ports"]}
    assert ports["http"] == LOADER_PORT == int(env["JOURNEY_WEB_PORT"])
    assert one["args"] == ["loader"]
    ready, alive = one["readinessProbe"]["httpGet"], one["livenessProbe"]["httpGet"]
    assert (ready["path"], alive["path"]) == ("/ready", "/health")
    for probe in (ready, alive, one["startupProbe"]["httpGet"]):
        assert probe["port"] in (ports["http"], "http")
    assert env["JOURNEY_CLICKHOUSE_URL"].startswith("https://")
    # A writable data dir (serving.json, Faust's directory) under a read-only root.
    mounts = {mount["mountPath"]: mount["name"] for mount in one["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert "emptyDir" in volumes[mounts[env["JOURNEY_DATA_DIR"]]]
    assert loader_["spec"]["replicas"] >= 1
    assert pod["terminationGracePeriodSeconds"] >= 30
    annotations = loader_["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(LOADER_PORT)
    # Its Service name is a Host name /sql answers to.
    service = k8s("Service", "journey-loader")["metadata"]["name"]
    assert service in env["JOURNEY_WEB_ALLOWED_HOSTS"].split(",")
    # The dashboard's per-worker figures: one URL per worker pod, on the worker port.
    sts = by_component("worker")
    headless = sts["spec"]["serviceName"]
    expected = [
        f"http://{sts['metadata']['name']}-{n}.{headless}:{WORKER_PORT}"
        for n in range(sts["spec"]["replicas"])
    ]
    assert env["JOURNEY_WORKER_URLS"].split(",") == expected


def test_the_kafka_ca_file_is_mounted_where_the_settings_look() -> None:
    for workload in workloads():
        cafile = pod_env(workload)["JOURNEY_KAFKA_SSL_CAFILE"]
        mounts = [m["mountPath"] for m in container(workload)["volumeMounts"]]
        assert str(Path(cafile).parent) in mounts, f"{component(workload)}: {cafile} not mounted"


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], workload: dict[str, Any]) -> bool:
    return all(pod_labels(workload).get(key) == value for key, value in selector.items())


def test_each_service_and_pdb_selects_one_role_on_its_port() -> None:
    for doc in k8s_docs():
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
        elif doc["kind"] == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
        else:
            continue
        (target,) = [w for w in workloads() if selects(selector, w)]
        assert component(target) in ("worker", "loader"), doc["metadata"]["name"]
        port = {p["name"]: p["containerPort"] for p in container(target)["ports"]}["http"]
        if doc["kind"] == "Service":
            assert [p["port"] for p in doc["spec"]["ports"]] == [port]
            annotations = doc["metadata"].get("annotations", {})
            if annotations:
                assert annotations["prometheus.io/port"] == str(port)
    # The job labels a ServiceMonitor gives (the Service name) are the ones the alerts select.
    jobs = {job for e in promql_expressions() for job in re.findall(r'job="([^"]+)"', e)}
    services = {d["metadata"]["name"] for d in k8s_docs() if d["kind"] == "Service"}
    assert {"journey-workers", "journey-loader"} <= jobs <= services


def reachable(workload: dict[str, Any]) -> set[tuple[str, int]]:
    """(namespace or pod component, port) the network policies let this workload reach."""
    found: set[tuple[str, int]] = set()
    policies = [d for d in k8s_docs() if d["kind"] == "NetworkPolicy"]
    mine = [p for p in policies if selects(p["spec"]["podSelector"]["matchLabels"], workload)]
    assert len(mine) == 1, f"{component(workload)}: {len(mine)} network policies"
    (policy,) = mine
    assert "Egress" in policy["spec"]["policyTypes"], "outbound traffic is not restricted"
    for rule in policy["spec"].get("egress", []):
        peers = rule.get("to") or [{"anywhere": True}]
        for peer in peers:
            if "namespaceSelector" in peer:
                where = peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            elif "podSelector" in peer:
                where = "pod:" + peer["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
            else:
                where = "*"
            for port in rule["ports"]:
                found.add((where, int(port["port"])))
    return found


def endpoint(url: str) -> tuple[str, int]:
    """kafka-bootstrap.kafka.svc...:9093 or https://clickhouse.clickhouse.svc...:8443 ->
    (namespace, port)."""
    host, port = url.split("://")[-1].split("/")[0].rsplit(":", 1)
    return host.split(".")[1], int(port)


def test_the_network_policies_give_only_the_loader_and_init_a_route_to_clickhouse() -> None:
    config = k8s("ConfigMap", "journey-config")["data"]
    kafka = endpoint(config["JOURNEY_KAFKA_BOOTSTRAP"].split(",")[0])
    clickhouse = endpoint(
        k8s("ConfigMap", "journey-clickhouse-config")["data"]["JOURNEY_CLICKHOUSE_URL"]
    )
    for workload in workloads():
        routes = reachable(workload)
        assert kafka in routes, component(workload)
        assert ("*", 53) in routes, f"{component(workload)}: no DNS"
        assert all(where != "*" or port == 53 for where, port in routes), routes
        has_clickhouse = clickhouse in routes
        assert has_clickhouse == (component(workload) in ("loader", "init")), component(workload)
    # The loader reads each worker's /status; the workers let it in on their port.
    assert ("pod:worker", WORKER_PORT) in reachable(by_component("loader"))
    policy = k8s("NetworkPolicy", "journey-worker")["spec"]
    ingress_ports = {p["port"] for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {WORKER_PORT}
    policy = k8s("NetworkPolicy", "journey-loader")["spec"]
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == {LOADER_PORT}


def test_the_init_job_creates_topics_and_migrates() -> None:
    job = k8s("Job")["spec"]
    one = container(k8s("Job"))
    script = " ".join([*one.get("command", []), *one.get("args", [])])
    assert "journey topics create" in script and "journey migrate" in script
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert len({container(w)["image"] for w in workloads()}) == 1, "one image for every role"


def test_the_kubernetes_settings_of_each_role_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for workload in workloads():
        env = {k: v for k, v in pod_env(workload).items() if isinstance(v, str)}
        settings = settings_from(env, monkeypatch)
        assert settings.web_host == "0.0.0.0"
        assert settings.kafka_security_protocol == "SASL_SSL"
        assert settings.kafka_sasl_password is not None
        if component(workload) == "worker":
            assert settings.clickhouse_url == "" and settings.clickhouse_password is None
        else:
            assert settings.clickhouse_url.startswith("https://")
            assert settings.clickhouse_password is not None


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == manifests - {"secret.example.yaml"}
    assert all((K8S / name).is_file() for name in listed)


def test_kubectl_kustomize_builds_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert {doc["metadata"].get("namespace") for doc in built if doc["kind"] != "Namespace"} == {
        "journey"
    }


@pytest.mark.parametrize(
    "path",
    sorted(set(K8S.glob("*.yaml")) - {K8S / "kustomization.yaml"}),
    ids=lambda p: p.name,
)
def test_the_manifests_match_the_kubernetes_schema(path: Path) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (pip install it)"
    )
    for doc in load_all(path):
        # strict: unknown fields (a misspelt readinessProbe) are errors, not ignored.
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


# --- the image -------------------------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image() -> None:
    instructions = dockerfile_instructions()
    values = {kind: [arg for k, arg in instructions if k == kind] for kind, _ in instructions}
    assert values["ARG"][0] == "PYTHON_IMAGE=python:3.11-slim"
    assert len(values["FROM"]) == 2, "a build stage and a runtime stage"
    assert set(values["EXPOSE"][0].split()) == {str(LOADER_PORT), str(WORKER_PORT)}
    assert json.loads(values["ENTRYPOINT"][0]) == ["journey"]
    assert json.loads(values["CMD"][0]) == ["worker"]
    # Alive whichever role runs: it asks both roles' ports (by their variables) for /health.
    health = values["HEALTHCHECK"][0]
    assert "/health" in health
    assert "JOURNEY_WORKER_WEB_PORT" in health and "JOURNEY_WEB_PORT" in health
    user = values["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    for workload in workloads():
        run_as = pod_spec(workload)["securityContext"]["runAsUser"]
        assert int(user) == run_as, f"the image's uid and {component(workload)}'s runAsUser differ"
    env = " ".join(values["ENV"])
    assert "JOURNEY_WEB_HOST=0.0.0.0" in env
    assert (
        f"JOURNEY_WEB_PORT={LOADER_PORT}" in env and f"JOURNEY_WORKER_WEB_PORT={WORKER_PORT}" in env
    )


def test_the_image_installs_every_package_of_the_project() -> None:
    """The image runs `pip install .`: a package missing from pyproject is missing at run time."""
    from setuptools import find_packages

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = set(find_packages(where=str(ROOT), include=include))
    copied = {arg.split()[0] for kind, arg in dockerfile_instructions() if kind == "COPY"}
    for top in ("streams", "schemas", "sinks"):
        assert top in copied, f"the Dockerfile does not COPY {top}/"
        for init in (ROOT / top).rglob("__init__.py"):
            package = ".".join(init.parent.relative_to(ROOT).parts)
            assert package in packages, (
                f"{package} is not found by pyproject's [tool.setuptools.packages.find]: "
                "`pip install .` (the image) would leave it out"
            )
    assert pyproject["project"]["scripts"]["journey"] == "streams.ops.cli:main"
