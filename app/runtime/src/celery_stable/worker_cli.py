"""``celery-stable worker``: ``celery -A celery_stable.attach worker``, without the rest of
Celery's command line.

``celery -A celery_stable.attach worker`` imports ``celery.bin.celery``, Celery's whole command
group: every subcommand with it, ``celery amqp``'s and ``celery shell``'s REPL included
(click_repl, prompt_toolkit). That is about 100 core-ms spent at every start of every worker
image, each recycle and reload included, on code a worker never runs. This runs the same
``celery.bin.worker.worker`` click command, set up as Celery's group sets it up for
``-A celery_stable.attach`` (celery/bin/celery.py):

* ``celery.__main__``'s eventlet/gevent patching, before anything else is imported;
* the group's own options, read from the same environment variables (``BROKER_URL`` or
  ``CELERY_BROKER``, ``RESULT_BACKEND``, ``LOADER``, ``CONFIG_MODULE``, ``NO_COLOR``,
  ``SKIP_CHECKS``, ``CELERY_WORKDIR``, ``CELERY_QUIET``) with the same effects;
* the app found by ``find_app('celery_stable.attach')``, with the group's error messages;
* the app's user options (``worker`` and ``preload``) added to the command, as Celery adds them;
* ``CELERY_WORKER_*`` for the worker's own options (click's ``auto_envvar_prefix='CELERY'``);
* the worker's own exit codes, through click's standalone mode.

``celery-stable worker ARGS`` takes exactly the options of ``celery ... worker ARGS``; the group's
options come from their environment variables only (``celery -A celery_stable.attach worker``
stays, for an operator who wants them on the command line).
"""

from __future__ import annotations

import os
import pathlib
import sys
import traceback
from typing import Any

APP = "celery_stable.attach"


def _build() -> Any:
    """The group, built on first use: importing this module imports nothing of Celery's."""
    import click  # noqa: PLC0415 (after maybe_patch_concurrency, as celery.__main__ does)
    from celery import VERSION_BANNER  # noqa: PLC0415
    from celery.app.utils import find_app  # noqa: PLC0415
    from celery.bin.base import (  # noqa: PLC0415
        CeleryOption,
        CLIContext,
        consume_preload_options,
    )
    from celery.bin.worker import worker  # noqa: PLC0415

    # Celery's own messages for an app that does not load (celery/bin/celery.py).
    module_not_found = click.style(
        "\nUnable to load celery application.\nThe module {0} was not found.", fg="red"
    )
    error_occurred = click.style(
        "\nUnable to load celery application.\n"
        "While trying to load the module {0} the following error occurred:\n{1}",
        fg="red",
    )
    app_missing = click.style("\nUnable to load celery application.\n{0}")

    # Celery's global options, flag for flag, envvar for envvar, but -A (always the runtime's
    # attach module; CELERY_STABLE_APP_MODULE names the app) and the group's --version.
    @click.group(invoke_without_command=True)
    @click.option("-b", "--broker", envvar="BROKER_URL", cls=CeleryOption,
                  help_group="Global Options")  # fmt: skip
    @click.option("--result-backend", envvar="RESULT_BACKEND", cls=CeleryOption,
                  help_group="Global Options")  # fmt: skip
    @click.option("--loader", envvar="LOADER", cls=CeleryOption, help_group="Global Options")
    @click.option("--config", envvar="CONFIG_MODULE", cls=CeleryOption,
                  help_group="Global Options")  # fmt: skip
    @click.option("--workdir", cls=CeleryOption, type=pathlib.Path,
                  callback=lambda _, __, wd: os.chdir(wd) if wd else None, is_eager=True,
                  help_group="Global Options")  # fmt: skip
    @click.option("-C", "--no-color", envvar="NO_COLOR", is_flag=True, cls=CeleryOption,
                  help_group="Global Options")  # fmt: skip
    @click.option("-q", "--quiet", is_flag=True, cls=CeleryOption, help_group="Global Options")
    @click.option("--version", cls=CeleryOption, is_flag=True, help_group="Global Options")
    @click.option("--skip-checks", envvar="SKIP_CHECKS", cls=CeleryOption, is_flag=True,
                  help_group="Global Options")  # fmt: skip
    @click.pass_context
    def group(  # noqa: PLR0917 (click passes each option by position)
        ctx: click.Context,
        broker: str | None,
        result_backend: str | None,
        loader: str | None,
        config: str | None,
        workdir: pathlib.Path | None,
        no_color: bool,
        quiet: bool,
        version: bool,
        skip_checks: bool,
    ) -> None:
        # What Celery's group callback does, in its order (celery/bin/celery.py, ``celery``).
        if version:
            click.echo(VERSION_BANNER)
            ctx.exit()
        if loader:
            os.environ["CELERY_LOADER"] = loader
        if broker:
            os.environ["CELERY_BROKER_URL"] = broker
        if result_backend:
            os.environ["CELERY_RESULT_BACKEND"] = result_backend
        if config:
            os.environ["CELERY_CONFIG_MODULE"] = config
        if skip_checks:
            os.environ["CELERY_SKIP_CHECKS"] = "true"
        try:
            app = find_app(APP)
        except ModuleNotFoundError as exc:
            if exc.name != APP:
                ctx.fail(error_occurred.format(APP, traceback.format_exc()))
            ctx.fail(module_not_found.format(exc.name))
        except AttributeError as exc:
            ctx.fail(app_missing.format(exc.args[0].capitalize()))
        except Exception:  # noqa: BLE001 (Celery reports whatever the import raised)
            ctx.fail(error_occurred.format(APP, traceback.format_exc()))
        ctx.obj = CLIContext(app=app, no_color=no_color, workdir=workdir, quiet=quiet)
        worker.params.extend(ctx.obj.app.user_options.get("worker", []))
        preload_options = ctx.obj.app.user_options.get("preload", ())
        for command in group.commands.values():
            command.params.extend(preload_options)
            if preload_options:
                command.callback = consume_preload_options(command.callback)

    group.add_command(worker)
    return group


def main(argv: list[str] | None = None) -> int:
    """``celery-stable worker ARGS`` (``argv`` is ARGS): as ``celery -A celery_stable.attach
    worker ARGS``, same options, same environment variables, same exit codes."""
    args = list(sys.argv[2:] if argv is None else argv)
    from celery import maybe_patch_concurrency  # noqa: PLC0415

    # celery.__main__: eventlet/gevent are patched before the rest of Celery is imported.
    maybe_patch_concurrency(["celery-stable", "worker", *args])
    # Standalone mode: click exits with the worker's own exit code, as `celery` does.
    return _build().main(args=["worker", *args], auto_envvar_prefix="CELERY")
