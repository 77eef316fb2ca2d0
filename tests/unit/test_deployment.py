"""docker-compose.yml agrees with the Celery app: one worker service per queue, secrets from the environment."""

from pathlib import Path

import pytest
import yaml

from shared.pipeline.keys import QUEUES, TASK_QUEUES, task_name
from workers.app import app

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


@pytest.fixture(scope="module")
def services():
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _queue_of(service):
    command = service.get("command", [])
    return command[command.index("-Q") + 1] if "-Q" in command else None


def test_every_queue_has_exactly_one_worker_service_and_nothing_else(services):
    served = [_queue_of(s) for s in services.values() if _queue_of(s)]
    assert sorted(served) == sorted(QUEUES)
    app.loader.import_default_modules()  # the task modules, as a worker imports them
    tasks = [name for name in app.tasks if name.startswith("waveshield.")]
    assert sorted(tasks) == sorted(task_name(stage) for stage in TASK_QUEUES)  # one task per stage, nothing else
    for name in tasks:  # where Celery itself routes each registered task: a queue some service consumes
        assert app.amqp.router.route({}, name)["queue"].name in served, name


def test_workers_share_one_image_and_differ_only_in_command(services):
    workers = [s for s in services.values() if _queue_of(s)]
    strip = [{k: v for k, v in s.items() if k not in ("command", "deploy")} for s in workers]
    assert all(s == strip[0] for s in strip)
    assert {s["image"] for s in workers} == {"waveshield:latest"}


def test_gpu_for_compute_queues_only(services):
    for service in services.values():
        gpu = "deploy" in service
        assert gpu == (_queue_of(service) in ("attack", "dwt", "classify", "fused"))


def test_redis_is_durable_and_never_evicts(services):
    command = " ".join(services["redis"]["command"])
    assert "--maxmemory-policy noeviction" in command and "--appendonly yes" in command
    assert "healthcheck" in services["redis"] and "${REDIS_PASSWORD:?" in command
    # A limit, so that a full Redis refuses writes (which producers and workers wait out) before the host runs
    # out of memory; the same variable and default as the Redis `waveshield up` starts.
    from shared import settings

    default = settings.load({}).redis_maxmemory_mib
    assert f"--maxmemory ${{WAVESHIELD_REDIS_MAXMEMORY:-{default}}}mb" in command


def test_the_bundled_redis_has_the_same_limit_and_never_evicts():
    import redis as redis_client

    from producers.redis_server import EmbeddedRedis

    with EmbeddedRedis(maxmemory_mib=48) as server:
        config = redis_client.Redis.from_url(server.url).config_get("maxmemory*")
    assert config["maxmemory"] == str(48 * 2 ** 20) and config["maxmemory-policy"] == "noeviction"


def test_flower_requires_auth_from_environment_and_binds_loopback(services):
    flower = services["flower"]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")  # required, from the env
    assert not any("basic-auth" in part for part in flower["command"])  # never on a command line `ps` shows
    assert flower["environment"]["REDIS_URL"] == services["worker-attack"]["environment"]["REDIS_URL"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])


def test_grace_period_outlasts_the_soft_shutdown(services):
    seconds = {"s": 1, "m": 60}
    for service in services.values():
        if _queue_of(service):
            value = service["stop_grace_period"]
            assert int(value[:-1]) * seconds[value[-1]] > app.conf.worker_soft_shutdown_timeout


def test_services_scale_by_count(services):
    # `--scale` starts several containers of a service: a fixed container name or host port would collide,
    # and a node name without the container's hostname (%h) would make the replicas one Celery node.
    for name, service in services.items():
        assert "container_name" not in service, name
        if _queue_of(service):
            command = service["command"]
            assert command[command.index("-n") + 1].endswith("@%h"), name
            assert "ports" not in service, name
