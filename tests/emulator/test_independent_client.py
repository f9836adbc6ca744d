"""An independent OData v4 client from PyPI (python-odata) reads the emulator's $metadata and
queries it: the emulator speaks OData, not just what our own client expects."""

from __future__ import annotations

from odata import ODataService

from tests.webapi import WebApi


def test_python_odata_reflects_and_queries(api: WebApi) -> None:
    service = ODataService(
        api.base + "/", session=api.session, reflect_entities=True, quiet_progress=True
    )
    assert {"accounts", "contacts", "incidents", "emails", "new_projects"} <= set(service.entities)
    account = service.entities["accounts"]
    query = (
        service.query(account)
        .filter(account.name.startswith("A"))
        .select(account.name, account.accountid)
        .limit(5)
    )
    rows = query.all()
    assert 0 < len(rows) <= 5
    assert all(r["name"].lower().startswith("a") for r in rows)
    ours = api.get_all("accounts?$select=name&$filter=startswith(name,'A')&$top=5")
    assert [r["accountid"] for r in rows] == [r["accountid"] for r in ours]


def test_python_odata_reads_typed_entities(api: WebApi) -> None:
    service = ODataService(
        api.base + "/", session=api.session, reflect_entities=True, quiet_progress=True
    )
    contact = service.entities["contacts"]
    first = service.query(contact).filter(contact.birthdate != None).first()  # noqa: E711
    assert first is not None
    assert first.birthdate is not None
    assert len(str(first.contactid)) == 36
