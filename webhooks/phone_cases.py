"""POST /api/v1/phone-cases: a call logged by phone staff or the contact-centre system.

Checks run cheapest and most fundamental first: size (413, before the body is read), signature
(401), Idempotency-Key syntax (400), media type and JSON (415), fields (422). The case is then
opened by ``mailbot.services.phone_cases`` in one transaction with its first message, its
queued mail and the idempotency record. The key is claimed first, so a retry (or a replay of a
captured request, whose signature then serves as the key) fails on the key's unique index
before it draws a case reference, rolls back, and is answered with the original response; a
concurrent twin waits on the index for the first to commit, and is answered the same way.

Without a ``kind`` the classifier reads the call and decides; with one, the kind stays the
staff's and only the safeguarding cue phrases are looked for, so a named risk still raises the
alert (``mailbot.services.phone_cases``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from flask import Blueprint, Response, request, url_for
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.adapters.orm import idempotency_keys
from mailbot.classifier.classification import Classification
from mailbot.services.phone_cases import PhoneCall, log_call
from mailbot.workflow.model import Case, ServiceArea
from webhooks.auth import SIGNATURE_HEADER, Unauthorized, verify_signature
from webhooks.errors import ApiError
from webhooks.schemas import PhoneCaseIn
from webhooks.state import state
from webhooks.validation import read_json

log = logging.getLogger(__name__)
bp = Blueprint("phone_cases", __name__)

IDEMPOTENCY_HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY = r"^[\x21-\x7e]{1,200}$"
_KEY = re.compile(IDEMPOTENCY_KEY)
# Built once, values as execution parameters: compiled once per process, not per call.
_CLAIM = idempotency_keys.insert().returning(idempotency_keys.c.id)
_SETTLE = update(idempotency_keys).where(idempotency_keys.c.id == bindparam("claim"))


@bp.post("/api/v1/phone-cases")
def create() -> Response:
    st = state()
    body = request.get_data(cache=True)
    now = st.clock()
    try:
        digest = verify_signature(
            st.secret, request.headers.get(SIGNATURE_HEADER), body, now.timestamp()
        )
    except Unauthorized as exc:
        raise ApiError(401, str(exc)) from None
    client_key = request.headers.get(IDEMPOTENCY_HEADER)
    if client_key is not None and not _KEY.match(client_key):
        raise ApiError(400, f"{IDEMPOTENCY_HEADER} must be 1 to 200 visible ASCII characters "
                            "(a UUID is a good choice)")
    data = read_json(PhoneCaseIn, body, context={"now": now, "tz": st.core.calendar.tz})
    # Staff who chose the kind need from the model only the cue phrases of a named risk.
    result: Classification | None = None
    cues: tuple[str, ...] = ()
    if data.kind is None:
        result = st.classify(data.summary, data.details)
    else:
        cues = st.cue_phrases(data.summary, data.details)
    call = PhoneCall(
        caller_name=data.caller_name, phone=data.phone, email=data.email, summary=data.summary,
        details=data.details, kind=data.kind, incident_date=data.incident_date,
        service_area=data.service_area or ServiceArea.SOCIAL_CARE, logged_by=data.logged_by,
        called_at=st.core.calendar.local(data.called_at or now),
    )
    key = f"key:{client_key}" if client_key else f"sig:{digest}"
    fingerprint = hashlib.sha256(body).hexdigest()
    try:
        with st.core.sessions.begin() as session:
            # Claim the key before anything else: a retry, or a twin still in flight, stops
            # here (on the key's unique index) without drawing a case reference.
            claim = session.execute(_CLAIM, {
                "key": key, "request_sha256": fingerprint, "status_code": 0,
                "response_body": "", "created_at": now,
            }).scalar_one()
            case = log_call(session, call, result, st.phone, now, cues=cues)
            location = url_for("staff_api.show", ref=case.ref)
            text = json.dumps(_created(case, location))
            session.execute(_SETTLE, {"claim": claim, "status_code": 201,
                                      "response_body": text, "case_id": case.id})
    except IntegrityError:
        # The key is taken: by the call this one retries or replays, or by a concurrent twin
        # that committed first. Everything above rolled back; answer as that call was answered.
        with st.core.sessions() as session:
            prior = _prior(session, key)
        if prior is None:
            raise
        return _replay(prior, fingerprint)
    log.info("phone case %s (%s) logged by %s", case.ref, case.kind, call.logged_by)
    return _answer(text, 201, location)


def _created(case: Case, location: str) -> dict[str, Any]:
    return {
        "ref": case.ref,
        "kind": str(case.kind),
        "acknowledgement_due": _iso(case.acknowledgement_due),
        "response_due": _iso(case.response_due),
        "links": {"self": location},
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _prior(session: Session, key: str) -> Any:
    return session.execute(
        select(idempotency_keys.c.request_sha256, idempotency_keys.c.status_code,
               idempotency_keys.c.response_body)
        .where(idempotency_keys.c.key == key)
    ).first()


def _replay(prior: Any, fingerprint: str) -> Response:
    if prior.request_sha256 != fingerprint:
        raise ApiError(409, f"this {IDEMPOTENCY_HEADER} was used for a different request; "
                            "use a new key for a new call, the same key only to retry")
    link = json.loads(prior.response_body).get("links", {}).get("self")
    response = _answer(prior.response_body, prior.status_code, link)
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _answer(text: str, status: int, location: str | None) -> Response:
    response = Response(text, status=status, mimetype="application/json")
    if location:
        response.headers["Location"] = location
    return response

