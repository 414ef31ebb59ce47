"""The web API: phone-logged cases (HMAC-signed webhook) and staff actions (bearer tokens).

``create_app()`` is the application factory that gunicorn (``Procfile``) and
``flask --app webhooks run`` call. It reads the same environment as the CLI and refuses to start
without ``MAILBOT_WEBHOOK_SECRET``; the database is first touched by the first request, so each
gunicorn worker opens its own connections.

A configuration that cannot work stops start-up with one line naming the variable, never a
traceback: ``flask run`` prints a ``StartupError`` as one line (it is a click exception), and
under gunicorn ``gunicorn.conf.py`` runs ``check_startup`` before any worker starts.
"""

from __future__ import annotations

import csv
import sys
from typing import IO, Any

import click
from flask import Flask
from flask.json.provider import DefaultJSONProvider

from mailbot.adapters.staff_directory import StaffDirectory
from mailbot.bootstrap import build_app
from mailbot.config import ConfigError, Settings, load_settings, require_webhook_secret
from mailbot.services.compose import Composer
from mailbot.services.phone_cases import PhoneContext

#: The largest request body accepted (413 above it).
MAX_BODY = 64 * 1024


class StartupError(ConfigError, click.ClickException):
    """A setting the web app cannot start with; the message starts with the variable's name.

    It is a ``ConfigError``, for callers of ``create_app``; and a click exception, because that is
    what ``flask run`` prints as one line and an exit status, where anything else is a traceback.
    The status is 2, as for a configuration error of the ``mailbot`` command.
    """

    exit_code = 2

    @property
    def line(self) -> str:
        return f"mailbot: configuration error: {self.message}"

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(self.line, file=file or sys.stderr)


def _configure(settings: Settings | None) -> tuple[Settings, str, StaffDirectory]:
    """Everything ``create_app`` needs from the environment, checked; builds nothing."""
    try:
        settings = settings or load_settings()
        secret = require_webhook_secret(settings)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    try:
        staff = StaffDirectory.load(settings.staff_directory)
    except (OSError, UnicodeError, csv.Error) as exc:
        raise StartupError(f"MAILBOT_STAFF_DIRECTORY: cannot read {settings.staff_directory} "
                           f"({exc})") from None
    return settings, secret, staff


def check_startup() -> int:
    """Check what ``create_app()`` would check; 0 if it can start, else print one line and 2.

    For ``gunicorn.conf.py``, which runs it in a child process before the master starts any
    worker (see there why not in the master itself).
    """
    try:
        _configure(None)
    except StartupError as exc:
        print(exc.line)
        return exc.exit_code
    return 0


def create_app(settings: Settings | None = None) -> Flask:
    from webhooks import errors, health, openapi, phone_cases, staff_api
    from webhooks.state import WebState

    settings, secret, staff = _configure(settings)
    core = build_app(settings)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    if isinstance(app.json, DefaultJSONProvider):
        app.json.sort_keys = False
    app.extensions["mailbot"] = WebState(
        core=core,
        secret=secret,
        phone=PhoneContext(
            settings=settings,
            calendar=core.calendar,
            composer=Composer(settings.team_address, settings.timezone),
            staff=staff,
        ),
    )
    for module in (phone_cases, staff_api, health, openapi):
        app.register_blueprint(module.bp)
    errors.register(app)
    return app
