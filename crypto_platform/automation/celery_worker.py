"""The Celery app of the workers: `celery -A crypto_platform.automation.celery_worker worker -Q dagster`.

Built from this process's settings (CRYPTO_CELERY_BROKER_URL) by `distributed.worker_app`, the same
configuration the celery executor sends steps with. Each task loads the code location itself.
"""

from __future__ import annotations

from crypto_platform.automation.distributed import worker_app
from crypto_platform.platform_settings import load_settings

app = worker_app(load_settings())
