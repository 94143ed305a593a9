"""How a run executes its steps: in one process (embedded), or as Celery tasks on separate workers.

`CRYPTO_EXECUTOR=celery` makes every job of the code location use dagster-celery: the run's process
only orchestrates, each step is a task on the broker at `CRYPTO_CELERY_BROKER_URL` (Redis), executed
by whichever worker takes it (`celery -A crypto_platform.automation.celery_worker worker`). The
executor and the workers build their Celery app from this one configuration, so they always agree.

A worker process that dies while it executes a step (kill -9, out of memory) is retried by Celery:
the message is acknowledged only after the step ends (`task_acks_late`), and a lost worker sends the
task again (`task_retry_on_worker_lost`), at most `WORKER_LOST_RETRIES` times, after
`RETRY_DELAY_SECONDS`. The steps are safe to run again: every lake write commits atomically and is
idempotent (docs/architecture.md). Steps that raise are retried by Dagster's own retry policies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg

from crypto_platform.platform_settings import PlatformSettings, SettingsError, env_name

if TYPE_CHECKING:
    from celery import Celery

# The task dagster-celery runs for one step (dagster_celery.config.TASK_EXECUTE_PLAN_NAME).
STEP_TASK = "execute_plan"
WORKER_LOST_RETRIES = 2
RETRY_DELAY_SECONDS = 1
# Redis re-delivers a message not acknowledged within this time (a worker host that vanished without
# its main process reporting the loss); a step running longer is delivered a second time.
VISIBILITY_TIMEOUT_SECONDS = 3600


def celery_config() -> dict[str, Any]:
    """The Celery settings shared by the executor and the workers (the retry of a lost worker)."""
    return {
        "task_acks_late": True,
        "task_retry_on_worker_lost": True,
        "task_reject_on_worker_lost": True,  # requeue if sending the retry itself fails
        "task_annotations": {
            STEP_TASK: {"max_retries": WORKER_LOST_RETRIES, "default_retry_delay": RETRY_DELAY_SECONDS}
        },
        "worker_prefetch_multiplier": 1,  # a busy worker never holds a step another could run
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT_SECONDS},
        "result_expires": 7 * 24 * 3600,
    }


def broker_url(settings: PlatformSettings) -> str:
    """The broker URL of the celery executor; a SettingsError naming both variables when it is unset."""
    if not settings.celery_broker_url:
        raise SettingsError(
            f"{env_name('executor')}=celery needs {env_name('celery_broker_url')} "
            "(the Celery broker, e.g. redis://127.0.0.1:6379/0)"
        )
    return settings.celery_broker_url


def build_executor(settings: PlatformSettings) -> dg.ExecutorDefinition:
    """The executor of every job: in-process (default) or dagster-celery on the configured broker."""
    if settings.executor == "in_process":
        return dg.in_process_executor
    broker_url(settings)
    from dagster_celery import celery_executor

    url = {"env": settings.sources["celery_broker_url"]}  # resolved where it runs, shown by name
    return celery_executor.configured(
        {"broker": url, "backend": url, "config_source": celery_config()}, name="celery"
    )


def worker_app(settings: PlatformSettings) -> Celery:
    """The Celery app the workers run: dagster-celery's tasks on the executor's broker and settings."""
    from dagster_celery.executor import CeleryExecutor
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_execute_job_task, create_resume_job_task, create_task

    url = broker_url(settings)
    app = make_app(CeleryExecutor.for_cli(broker=url, backend=url, config_source=celery_config()).app_args())
    create_task(app)
    create_execute_job_task(app)
    create_resume_job_task(app)
    return app
