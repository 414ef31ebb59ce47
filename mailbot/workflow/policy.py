"""Every timescale and rule number in one object, so another procedure is a TOML file, not code.

The defaults come from the council's published procedure (``shared/seeds``): acknowledge a
complaint within 5 working days, respond within 10 working days of the acknowledgement, accept a
stage-2 request within 28 calendar days of the stage-1 response, acknowledge stage 2 within 5 and
respond within 20 working days. Other procedures (the statutory adult social care regulations,
the Ombudsman codes) differ, which is why none of these numbers appear anywhere else.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from datetime import date, time
from pathlib import Path
from typing import Any

#: Where a complainant can go after stage 2, by the service area of the case.
DEFAULT_OMBUDSMEN: dict[str, str] = {
    "social_care": "Local Government and Social Care Ombudsman",
    "housing": "Housing Ombudsman Service",
    "regulated_care": (
        "Local Government and Social Care Ombudsman, and the Care Quality Commission (CQC)"
    ),
    "other": "Local Government and Social Care Ombudsman",
}


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class Policy:
    # Working days
    holiday_country: str = "GB"
    holiday_subdivision: str | None = "ENG"
    closure_dates: tuple[date, ...] = ()
    end_of_day: time = time(17, 0)
    # Stage 1
    stage1_acknowledgement_working_days: int = 5
    stage1_response_working_days: int = 10
    # Stage 2
    stage2_request_calendar_days: int = 28
    stage2_acknowledgement_working_days: int = 5
    stage2_response_working_days: int = 20
    # Time limit for bringing a complaint (flag for a manager, never refuse)
    complaint_time_limit_months: int = 12
    # Classifier
    triage_confidence_threshold: float = 0.6
    # Automatic replies
    auto_reply_cap: int = 5
    auto_reply_cap_hours: int = 24
    null_envelope_sender: bool = True
    # Reminders (working days)
    unassigned_reminder_days_before: int = 1
    officer_reminder_days_before: int = 2
    overdue_escalation_every_days: int = 5
    triage_escalation_after_days: int = 1
    reminder_time: time = time(8, 30)  # local time at which the day's reminders go out
    ombudsmen: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_OMBUDSMEN))

    def ombudsman_for(self, service_area: str) -> str:
        return self.ombudsmen.get(service_area, self.ombudsmen["other"])


def load_policy(path: Path | None) -> Policy:
    """The default policy, with any keys from a TOML file laid over it.

    Unknown keys and values of the wrong type are errors rather than silently ignored, because a
    typo in a timescale would otherwise quietly break a statutory promise.
    """
    if path is None:
        return Policy()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML ({exc})") from exc
    return policy_from_mapping(raw, source=str(path))


def policy_from_mapping(raw: dict[str, Any], source: str = "policy") -> Policy:
    defaults = Policy()
    fields = {f.name: f for f in dataclasses.fields(Policy)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise PolicyError(f"{source}: unknown policy key {key!r} (known keys: {known})")
        changes[key] = _coerce(key, value, getattr(defaults, key), source)
    return dataclasses.replace(defaults, **changes)


def _coerce(key: str, value: Any, default: Any, source: str) -> Any:
    def bad(expected: str) -> PolicyError:
        return PolicyError(f"{source}: policy key {key!r} must be {expected}, got {value!r}")

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise bad("a whole number of 0 or more")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise bad("a number between 0 and 1")
        return float(value)
    if isinstance(default, time):
        if isinstance(value, time):
            return value
        if isinstance(value, str):
            try:
                return time.fromisoformat(value)
            except ValueError:
                pass
        raise bad("a time such as 17:00")
    if key == "closure_dates":
        if not isinstance(value, list):
            raise bad("a list of dates")
        out = []
        for item in value:
            if isinstance(item, date):
                out.append(item)
            elif isinstance(item, str):
                try:
                    out.append(date.fromisoformat(item))
                except ValueError as exc:
                    raise bad("a list of ISO dates") from exc
            else:
                raise bad("a list of ISO dates")
        return tuple(sorted(out))
    if key == "ombudsmen":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad("a table of service area = ombudsman name")
        merged = dict(default)
        merged.update(value)
        return merged
    if key == "holiday_subdivision":
        if value is not None and not isinstance(value, str):
            raise bad("a subdivision code such as ENG")
        return value or None
    if isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise bad("a non-empty string")
        return value
    raise bad("a supported value")  # pragma: no cover - every field is handled above
