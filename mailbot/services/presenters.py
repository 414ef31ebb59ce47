"""Cases as plain dictionaries, the one shape shared by ``--json`` output and the web API."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from mailbot.workflow.model import Case


def _iso(value: date | datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def case_summary(case: Case) -> dict[str, Any]:
    return {
        "ref": case.ref,
        "kind": str(case.kind),
        "status": str(case.status),
        "stage": case.stage,
        "source": str(case.source),
        "requester_name": case.requester_name,
        "service_area": str(case.service_area),
        "received_at": _iso(case.received_at),
        "deemed_received": _iso(case.deemed_received),
        "acknowledgement_due": _iso(case.acknowledgement_due),
        "response_due": _iso(case.current_response_due),
        "officer": case.officer,
        "flags": case.flags(),
    }


def case_detail(case: Case) -> dict[str, Any]:
    out = case_summary(case)
    out.update(
        {
            "requester_email": case.requester_email,
            "requester_phone": case.requester_phone,
            "summary": case.summary,
            "incident_date": _iso(case.incident_date),
            "deadlines": {
                "stage1_acknowledgement_due": _iso(case.acknowledgement_due),
                "stage1_acknowledged_on": _iso(case.acknowledged_on),
                "stage1_response_due": _iso(case.response_due),
                "stage1_responded_on": _iso(case.responded_on),
                "stage2_request_by": _iso(case.stage2_request_by),
                "stage2_requested_at": _iso(case.stage2_requested_at),
                "stage2_acknowledgement_due": _iso(case.stage2_acknowledgement_due),
                "stage2_acknowledged_on": _iso(case.stage2_acknowledged_on),
                "stage2_response_due": _iso(case.stage2_response_due),
                "stage2_responded_on": _iso(case.stage2_responded_on),
            },
            "reviewer": case.reviewer,
            "outcome": case.outcome,
            "ombudsman": case.ombudsman,
            "closed_at": _iso(case.closed_at),
            "classification": {
                "label": case.classifier_label,
                "confidence": case.classifier_confidence,
            },
            "related_ref": case.related_ref,
            "extensions": [
                {
                    "stage": e.stage,
                    "reason": e.reason,
                    "previous_due": _iso(e.previous_due),
                    "new_due": _iso(e.new_due),
                    "by": e.by,
                    "at": _iso(e.at),
                }
                for e in case.extensions
            ],
            "audit": [
                {"at": _iso(e.at), "actor": e.actor, "action": e.action, "detail": e.detail}
                for e in case.events
            ],
        }
    )
    return out
