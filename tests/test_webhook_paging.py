"""Paging of GET /api/v1/cases: ``limit``, the ``after`` cursor and ``links``, through Flask's test
client on every configured database (the ``web`` fixture of ``test_webhook``)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema_rs
import pytest
from werkzeug.test import TestResponse

from mailbot.services.case_queries import page_of_cases
from mailbot.services.phone_cases import PhoneCall, log_call
from mailbot.workflow.model import Kind
from tests import test_webhook
from tests.test_webhook import CALL, NOW, Web
from webhooks.openapi import document
from webhooks.schemas import DEFAULT_PAGE, MAX_PAGE

#: The app on every configured database (``test_webhook``'s fixtures, reused).
web = test_webhook.web
classifier = test_webhook.classifier


def body(r: TestResponse) -> dict[str, Any]:
    data = r.get_json()
    assert isinstance(data, dict), r.data
    return data


def open_case(web: Web, **change: Any) -> str:
    r = web.call({**CALL, **change, "summary": f"{CALL['summary']} ({web.count() + 1})"})
    assert r.status_code == 201, r.json
    return str(body(r)["ref"])


def get(web: Web, url: str, auth: dict[str, str]) -> dict[str, Any]:
    r = web.client.get(url, headers=auth)
    assert r.status_code == 200, r.json
    return body(r)


def walk(web: Web, url: str, auth: dict[str, str]) -> list[list[str]]:
    """Follow links.next from ``url`` until it is null; the refs of each page."""
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        assert len(pages) < 50, "links.next never ends"
        page = get(web, next_url, auth)
        pages.append([c["ref"] for c in page["cases"]])
        next_url = page["links"]["next"]
    return pages


def query(url: str) -> dict[str, list[str]]:
    parts = urlsplit(url)
    assert parts.path == "/api/v1/cases"
    return parse_qs(parts.query, keep_blank_values=True)


def test_following_links_next_lists_every_case_once_in_opened_order(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(5)]
    assert opened == [f"CSQ-2026-0000{i}" for i in range(1, 6)]
    assert walk(web, "/api/v1/cases?limit=2", auth) == [opened[0:2], opened[2:4], opened[4:5]]

    first = get(web, "/api/v1/cases?limit=2", auth)
    assert first["links"]["self"] == "/api/v1/cases?limit=2"
    assert query(first["links"]["next"]) == {"limit": ["2"], "after": [opened[1]]}
    second = get(web, first["links"]["next"], auth)
    assert second["links"]["self"] == first["links"]["next"]
    assert query(second["links"]["next"]) == {"limit": ["2"], "after": [opened[3]]}


def test_a_last_page_that_is_exactly_full_has_no_next(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(4)]
    assert walk(web, "/api/v1/cases?limit=2", auth) == [opened[0:2], opened[2:4]]
    assert walk(web, "/api/v1/cases?limit=4", auth) == [opened]
    assert walk(web, "/api/v1/cases?limit=1", auth) == [[ref] for ref in opened]


def test_no_cases_is_one_empty_page(web: Web) -> None:
    assert get(web, "/api/v1/cases", web.token()) == {
        "cases": [], "links": {"self": f"/api/v1/cases?limit={DEFAULT_PAGE}", "next": None}}


def test_after_the_last_case_is_an_empty_page(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(2)]
    page = get(web, f"/api/v1/cases?after={opened[-1]}", auth)
    assert page["cases"] == []
    assert page["links"]["next"] is None


def test_the_default_page_is_fifty_cases(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(DEFAULT_PAGE + 1)]
    page = get(web, "/api/v1/cases", auth)
    assert [c["ref"] for c in page["cases"]] == opened[:DEFAULT_PAGE]
    assert query(page["links"]["next"]) == {"limit": [str(DEFAULT_PAGE)],
                                            "after": [opened[DEFAULT_PAGE - 1]]}
    last = get(web, page["links"]["next"], auth)
    assert ([c["ref"] for c in last["cases"]], last["links"]["next"]) == (opened[-1:], None)
    whole = get(web, f"/api/v1/cases?limit={MAX_PAGE}", auth)
    assert [c["ref"] for c in whole["cases"]] == opened
    assert whole["links"]["next"] is None


def test_a_case_opened_between_pages_joins_the_end_and_nothing_repeats(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(3)]
    first = get(web, "/api/v1/cases?limit=2", auth)
    assert [c["ref"] for c in first["cases"]] == opened[:2]
    late = [open_case(web), open_case(web)]
    rest = walk(web, first["links"]["next"], auth)
    assert rest == [[opened[2], late[0]], [late[1]]]
    seen = [c["ref"] for c in first["cases"]] + [ref for page in rest for ref in page]
    assert seen == opened + late
    assert len(set(seen)) == len(seen)


def test_a_case_opened_before_the_cursor_does_not_shift_the_next_page(web: Web) -> None:
    """The cursor is a case, not an offset: a new case cannot push one already listed into the
    next page (it only joins the end)."""
    auth = web.token()
    opened = [open_case(web) for _ in range(4)]
    first = get(web, "/api/v1/cases?limit=2", auth)
    newest = open_case(web)
    second = get(web, first["links"]["next"], auth)
    assert [c["ref"] for c in second["cases"]] == opened[2:4]
    assert query(second["links"]["next"])["after"] == [opened[3]]
    assert walk(web, second["links"]["next"], auth) == [[newest]]


def test_filters_are_carried_in_links_next(web: Web) -> None:
    auth = web.token()
    kinds = ["complaint", "compliment", "complaint", "compliment", "complaint", "complaint"]
    opened = [open_case(web, kind=k) for k in kinds]
    complaints = [ref for ref, k in zip(opened, kinds, strict=True) if k == "complaint"]

    first = get(web, "/api/v1/cases?kind=complaint&status=open&limit=2", auth)
    assert query(first["links"]["next"]) == {
        "status": ["open"], "kind": ["complaint"], "limit": ["2"], "after": [complaints[1]]}
    assert walk(web, "/api/v1/cases?kind=complaint&status=open&limit=2", auth) == [
        complaints[0:2], complaints[2:4]]
    compliments = walk(web, "/api/v1/cases?kind=compliment&limit=1", auth)
    assert compliments == [[opened[1]], [opened[3]]]
    assert walk(web, "/api/v1/cases?status=closed&limit=1", auth) == [[]]

    web.state.clock = lambda: NOW + timedelta(days=30)
    overdue = get(web, "/api/v1/cases?overdue=true&limit=3", auth)
    assert [c["ref"] for c in overdue["cases"]] == complaints[:3]
    assert query(overdue["links"]["next"]) == {
        "overdue": ["true"], "limit": ["3"], "after": [complaints[2]]}
    assert walk(web, overdue["links"]["next"], auth) == [complaints[3:]]
    assert get(web, "/api/v1/cases?overdue=false&limit=3", auth)["links"]["next"] == (
        f"/api/v1/cases?limit=3&after={opened[2]}")


def test_the_cursor_works_after_its_case_has_left_the_filter(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(5)]
    first = get(web, "/api/v1/cases?status=open&limit=2", auth)
    assert [c["ref"] for c in first["cases"]] == opened[:2]
    # The case the cursor names is closed, and the next open one too, before the next request.
    for ref in (opened[1], opened[2]):
        r = web.client.post(f"/api/v1/cases/{ref}/close", headers=auth, json={})
        assert r.status_code == 200, r.json
    assert walk(web, first["links"]["next"], auth) == [opened[3:5]]
    # Reclassified out of a kind filter: the same.
    first = get(web, "/api/v1/cases?kind=complaint&status=open&limit=1", auth)
    assert [c["ref"] for c in first["cases"]] == [opened[0]]
    r = web.client.post(f"/api/v1/cases/{opened[0]}/reclassify", headers=auth,
                        json={"kind": "compliment"})
    assert r.status_code == 200, r.json
    assert walk(web, first["links"]["next"], auth) == [[opened[3]], [opened[4]]]


def test_after_may_be_written_in_lower_case(web: Web) -> None:
    auth = web.token()
    opened = [open_case(web) for _ in range(3)]
    page = get(web, f"/api/v1/cases?limit=1&after={opened[0].lower()}", auth)
    assert [c["ref"] for c in page["cases"]] == [opened[1]]
    assert page["links"]["self"] == f"/api/v1/cases?limit=1&after={opened[0]}"
    assert query(page["links"]["next"])["after"] == [opened[1]]
    padded = get(web, f"/api/v1/cases?after=%20{opened[1]}%20", auth)
    assert [c["ref"] for c in padded["cases"]] == [opened[2]]


def test_an_unknown_after_is_a_422_naming_after(web: Web) -> None:
    auth = web.token()
    open_case(web)
    r = web.client.get("/api/v1/cases?after=CSQ-2026-99999", headers=auth)
    assert r.status_code == 422
    error = body(r)
    assert list(error["fields"]) == ["after"]
    assert "CSQ-2026-99999" in error["fields"]["after"]
    assert error["error"].startswith("fix these fields: after:")


@pytest.mark.parametrize("after", ["", "nope", "CSQ-2026", "CSQ_2026_00001", "1; DROP TABLE"])
def test_a_malformed_after_is_a_422_naming_after(web: Web, after: str) -> None:
    open_case(web)
    r = web.client.get("/api/v1/cases", query_string={"after": after}, headers=web.token())
    assert r.status_code == 422, r.json
    assert list(body(r)["fields"]) == ["after"]
    assert "case reference" in body(r)["fields"]["after"]


@pytest.mark.parametrize("limit", ["0", "201", "5.0", "abc", "-1", "+5", " 5", "", "1e2",
                                   "\uff15", "99999999999999999999"])
def test_a_bad_limit_is_a_422_naming_limit(web: Web, limit: str) -> None:
    open_case(web)
    r = web.client.get("/api/v1/cases", query_string={"limit": limit}, headers=web.token())
    assert r.status_code == 422, r.json
    assert body(r)["fields"] == {"limit": "must be a whole number from 1 to 200 (default 50)"}
    assert body(r)["error"].startswith("fix these fields: limit:")


@pytest.mark.parametrize(("limit", "expected"), [("1", 1), ("200", 3), ("007", 3)])
def test_a_good_limit_is_accepted(web: Web, limit: str, expected: int) -> None:
    auth = web.token()
    for _ in range(3):
        open_case(web)
    page = get(web, f"/api/v1/cases?limit={limit}", auth)
    assert len(page["cases"]) == expected
    assert query(page["links"]["self"])["limit"] == [str(int(limit))]


def test_pages_match_the_described_case_list(web: Web) -> None:
    auth = web.token()
    for _ in range(3):
        open_case(web)
    doc = json.loads(json.dumps(document()))
    validator = jsonschema_rs.validator_for(
        {"$ref": "#/components/schemas/CaseList", "components": doc["components"]})
    first = get(web, "/api/v1/cases?limit=2", auth)
    last = get(web, first["links"]["next"], auth)
    assert first["links"]["next"] is not None and last["links"]["next"] is None
    validator.validate(first)
    validator.validate(last)


def test_openapi_describes_limit_after_and_links(web: Web) -> None:
    doc = body(web.client.get("/openapi.json"))
    operation = doc["paths"]["/api/v1/cases"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert params["limit"]["in"] == "query"
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": MAX_PAGE,
                                         "default": DEFAULT_PAGE}
    assert params["after"]["in"] == "query"
    assert params["after"]["schema"]["type"] == "string"
    assert "CSQ-2026-00050" in json.dumps(params["after"])
    assert set(params) == {"status", "kind", "overdue", "limit", "after"}
    assert "422" in operation["responses"]
    schemas = doc["components"]["schemas"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CaseList"}
    case_list = schemas["CaseList"]
    assert set(case_list["required"]) == {"cases", "links"}
    links = schemas[case_list["properties"]["links"]["$ref"].rsplit("/", 1)[-1]]
    assert set(links["properties"]) == {"self", "next"}
    assert set(links["required"]) == {"self", "next"}
    assert {"type": "null"} in links["properties"]["next"]["anyOf"]


def test_a_case_still_being_opened_is_never_passed_by_the_cursor(
    web: Web, database_url: str
) -> None:
    """Two calls logged at once on PostgreSQL, where openings run side by side: the one that
    drew the later id commits first. A page read meanwhile waits for the earlier one, so a
    client polling from its last ``after`` never walks past a case (case_queries)."""
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite serialises writers: the second opening waits for the first")
    auth = web.token()
    call = PhoneCall("Ann Example", "Slow opening", "Nobody called back.", "Pat Phone", NOW,
                     email="ann@example.org", kind=Kind.COMPLAINT)

    def read_page() -> list[str]:
        with web.state.core.sessions() as reader:
            return [c.ref for c in page_of_cases(reader, limit=10).cases]

    with ThreadPoolExecutor(max_workers=2) as others:
        with web.state.core.sessions.begin() as session:
            slow = log_call(session, call, None, web.state.phone, NOW)  # written, not committed
            fast = others.submit(open_case, web).result(timeout=30)  # openings do not wait
            page = others.submit(read_page)
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline and not page.done():
                time.sleep(0.05)
            assert not page.done(), "a page was read past a case still being opened"
        assert page.result(timeout=30) == [slow.ref, fast]
    assert [c["ref"] for c in get(web, f"/api/v1/cases?after={slow.ref}", auth)["cases"]] == [
        fast]
