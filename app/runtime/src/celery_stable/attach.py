"""``celery -A celery_stable.attach worker``: the operator's own app, protected, unchanged.

The app is named by ``CELERY_STABLE_APP_MODULE`` (``celery_stable_app_module``), exactly as
``celery -A`` would take it (``core.celery_app``, ``proj:app``); an app shipped as plain files
is imported from ``CELERY_STABLE_APP_PATH``. Its own code, configuration, signal handlers
(``worker_process_init`` included) and tasks are untouched; the runtime installs itself on it
through Celery's extension points, as if the app had called :func:`celery_stable.protect`.
``celery-stable worker`` (:mod:`celery_stable.worker_cli`, what the role's units run) is the same
worker on the same module, without the rest of Celery's command line.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from celery import Celery

from .settings import ConfigError, Settings

EX_CONFIG = 78


def load_app(settings: Settings) -> Celery:
    """Import the operator's app and protect it; ConfigError when it is not named or not found."""
    from celery.app.utils import find_app  # noqa: PLC0415

    from .runtime import protect  # noqa: PLC0415

    if not settings.app_module:
        raise ConfigError(
            "CELERY_STABLE_APP_MODULE is not set: name the Celery app to protect, as `celery -A` "
            "takes it (role variable celery_stable_app_module, e.g. core.celery_app)."
        )
    if settings.app_path and settings.app_path not in sys.path:
        sys.path.insert(0, settings.app_path)
    try:
        app = find_app(settings.app_module)
    except Exception as exc:
        raise ConfigError(
            f"cannot load the Celery app {settings.app_module!r} (celery_stable_app_module): "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(app, Celery):
        raise ConfigError(
            f"{settings.app_module!r} (celery_stable_app_module) is a {type(app).__name__}, "
            "not a Celery app: name the module holding it, or module:attribute."
        )
    protect(app, settings)
    return app


def _load_or_exit() -> Celery:
    try:
        return load_app(Settings.from_env(os.environ))
    except ConfigError as exc:
        # EX_CONFIG, not a signal: systemd's Restart=on-abnormal does not loop on a bad setting.
        print(f"celery-stable: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None


def __getattr__(name: str) -> Any:
    # `celery -A celery_stable.attach` looks up `app`; it is built on first use, not at import.
    if name in ("app", "celery"):
        app = _load_or_exit()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
