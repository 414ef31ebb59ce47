"""The web API: phone-logged cases (HMAC-signed webhook) and staff actions (bearer tokens).

``create_app()`` is the application factory that gunicorn (``Procfile``) and
``flask --app webhooks run`` call. It reads the same environment as the CLI and refuses to start
without ``MAILBOT_WEBHOOK_SECRET``; the database is first touched by the first request, so each
gunicorn worker opens its own connections.
"""

from __future__ import annotations

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from mailbot.bootstrap import build_app
from mailbot.config import Settings, load_settings, require_webhook_secret
from mailbot.services.compose import Composer
from mailbot.services.phone_cases import PhoneContext

#: The largest request body accepted (413 above it).
MAX_BODY = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    from mailbot.adapters.staff_directory import StaffDirectory
    from webhooks import errors, health, openapi, phone_cases, staff_api
    from webhooks.state import WebState

    settings = settings or load_settings()
    secret = require_webhook_secret(settings)
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
            staff=StaffDirectory.load(settings.staff_directory),
        ),
    )
    for module in (phone_cases, staff_api, health, openapi):
        app.register_blueprint(module.bp)
    errors.register(app)
    return app
