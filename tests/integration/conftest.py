import os

import pytest

from shared.local.runtime import LocalConfig, LocalRuntime
from tests.support import Calls, make_work_handler
from tests.support import registry as test_registry


@pytest.fixture
def calls():
    return Calls()


@pytest.fixture
def runtime_factory(db_url, stage, aws_endpoint):
    """Start a LocalRuntime on this test's database and stage; stopped (and the environment restored) after."""
    started = []
    saved = dict(os.environ)

    def start(registry=test_registry, handlers=None, **config):
        # No API unless a test asks for one (api_port=0: any free port), so runs never fight over port 8710.
        lines = []
        runtime = LocalRuntime(
            registry,
            LocalConfig(**{"stage": stage, "database_url": db_url, "scheduler": False, "handlers": handlers or {}, "api_port": None, **config}),
            out=lines.append,
        )
        runtime.lines = lines
        started.append(runtime)
        runtime.start()
        return runtime

    yield start
    for runtime in started:
        runtime.stop()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def work_runtime(runtime_factory, calls):
    handler = make_work_handler(calls)
    return runtime_factory(handlers={"test.work": handler})


@pytest.fixture
def fake_service(monkeypatch):
    """A real local HTTP server standing in for an integration: records requests, answers from a script (see
    tests/integration/fake_service.py). ``fake_service.use("receipts")`` points CONVEYOR_RECEIPTS_URL (and a test
    token) at it for this test."""
    from tests.integration.fake_service import FakeService

    service = FakeService(monkeypatch).start()
    yield service
    service.stop()


@pytest.fixture
def bind_product(sqs, stage, db_url):
    """Bind product job handlers to this test's database and queues, as the local runtime does: call it with each
    handler a test invokes directly (``shared.testing.invoke``)."""
    from shared.database import Database
    from shared.jobs import registry as product
    from shared.local.aws import ensure_queues
    from shared.queues import QueueDirectory
    from shared.settings import Settings

    ensure_queues(sqs, product, stage=stage)
    settings = Settings(stage=stage, database_url=db_url)
    database = Database(settings)
    directory = QueueDirectory(sqs, settings)

    def bind(handler):
        handler.bind(sqs=sqs, directory=directory, database=database)
        return handler

    yield bind
    database.close()
