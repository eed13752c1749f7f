"""CSV contact import: refusals, bad rows, duplicates, resuming, and the follow-up invariant."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func
from sqlmodel import col, select

from engine.errors import Conflict, InvalidInput
from engine.importer import ImportOptions, ImportProgress, import_contacts, job_errors
from engine.models import Client, ClientPhone, FollowUp, ImportJob, ImportStatus
from engine.service import Tierline
from tests.integration.helpers import make_client


def write(tmp_path: Path, text: str, name: str = "contacts.csv", encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


async def count(tl: Tierline, model: type) -> int:
    async with tl.db.session() as s:
        return (await s.exec(select(func.count()).select_from(model))).one()


async def phones_of(tl: Tierline, client_id: int) -> list[str]:
    async with tl.db.session() as s:
        rows = await s.exec(
            select(ClientPhone.e164)
            .where(ClientPhone.client_id == client_id)
            .order_by(col(ClientPhone.id))
        )
        return list(rows)


async def client_by_name(tl: Tierline, name: str) -> Client:
    async with tl.db.session() as s:
        return (await s.exec(select(Client).where(Client.name == name))).one()


async def test_clean_file_enrols_every_client_with_one_followup(tl: Tierline, tmp_path: Path):
    path = write(
        tmp_path,
        "Full name,Phone,Company,Industry,E-mail\n"
        "Ivan Petrov,+7 916 123-45-67,Acme,retail,ivan@acme.ru\n"
        "Olga Sidorova,8 (495) 123-45-67,Beta,,\n"
        "\n"
        "John Smith,+44 20 7946 0958,Gamma,banking,\n",
    )
    report = await import_contacts(tl, path, ImportOptions(mapping={"custom.industry": "Industry"}))
    assert (report.status, report.rows, report.created, report.errors) == ("done", 3, 3, 0)
    ivan = await client_by_name(tl, "Ivan Petrov")
    assert (ivan.company, ivan.email, ivan.custom, ivan.state, ivan.tier) == (
        "Acme",
        "ivan@acme.ru",
        {"industry": "retail"},
        "new",
        "cold",
    )
    assert await phones_of(tl, ivan.id) == ["+79161234567"]
    olga = await client_by_name(tl, "Olga Sidorova")
    assert olga.custom == {}  # an empty cell sets nothing
    assert await phones_of(tl, olga.id) == ["+74951234567"]
    assert await tl.check_followups() == []
    async with tl.db.session() as s:
        fu = (await s.exec(select(FollowUp).where(FollowUp.client_id == ivan.id))).one()
        assert fu.status == "pending" and fu.tier == "cold" and fu.state == "new"
        assert fu.due_at >= tl.clock.now()


async def test_undecodable_file_is_refused_with_offset_and_writes_nothing(
    tl: Tierline, tmp_path: Path
):
    # Invalid UTF-8 (0xff) and a byte Windows-1251 does not define (0x98) on line 3.
    path = tmp_path / "broken.csv"
    path.write_bytes(b"name,phone\nIvan,+79161234567\nOlga \xff\x98,+79161234568\n")
    with pytest.raises(InvalidInput) as err:
        await import_contacts(tl, path, ImportOptions())
    assert "byte 0xff at offset 34 (line 3)" in err.value.message
    assert "byte 0x98 at offset 35 (line 3)" in err.value.message
    assert await count(tl, Client) == 0
    assert await count(tl, ImportJob) == 0


async def test_cp1251_and_semicolons_are_read(tl: Tierline, tmp_path: Path):
    path = write(
        tmp_path, "ФИО;Телефон;Компания\nИван Петров;8 916 123-45-67;Ромашка\n", encoding="cp1251"
    )
    report = await import_contacts(tl, path, ImportOptions())
    assert (report.encoding, report.created) == ("cp1251", 1)
    ivan = await client_by_name(tl, "Иван Петров")
    assert ivan.company == "Ромашка"


async def test_utf8_bom_header_is_recognised(tl: Tierline, tmp_path: Path):
    path = write(tmp_path, "name,phone\nIvan,+79161234567\n", encoding="utf-8-sig")
    report = await import_contacts(tl, path, ImportOptions())
    assert (report.encoding, report.created) == ("utf-8-sig", 1)


async def test_missing_required_columns_are_named_before_anything_is_written(
    tl: Tierline, tmp_path: Path
):
    path = write(tmp_path, "Client,Mobile number,Company\nIvan,+79161234567,Acme\n")
    with pytest.raises(InvalidInput) as err:
        await import_contacts(tl, path, ImportOptions())
    assert err.value.details["missing"] == ["phone"]
    assert "'phone'" in err.value.message and "Mobile number" in err.value.message
    with pytest.raises(InvalidInput, match="column 'Tel'"):
        await import_contacts(tl, path, ImportOptions(mapping={"phone": "Tel"}))
    assert await count(tl, Client) == 0 and await count(tl, ImportJob) == 0
    # The same file with the column named on the command line goes in.
    report = await import_contacts(tl, path, ImportOptions(mapping={"phone": "Mobile number"}))
    assert report.created == 1


async def test_every_bad_row_is_reported_and_none_imported(tl: Tierline, tmp_path: Path):
    path = write(
        tmp_path,
        "name,phone,phone2,email,timezone\n"
        "Good One,+79161234567,,,\n"  # row 2
        "Bad Number,12,,,\n"  # row 3
        ",+79161234568,,,\n"  # row 4: no name
        "Bad Second,+79161234569,not a phone,,\n"  # row 5
        "Bad Mail,+79161234570,,nobody,Mars/Olympus\n"  # row 6: two problems
        "No Phone,,,,\n"  # row 7
        "Good Two,+79161234571,+79161234572,two@example.com,Europe/Samara\n",  # row 8
    )
    report = await import_contacts(tl, path, ImportOptions())
    assert (report.rows, report.created, report.errors) == (7, 2, 6)
    async with tl.db.session() as s:
        errors = [(e.row, e.column) for e in await job_errors(s, report.job_id)]
    assert errors == [
        (3, "phone"),
        (4, "name"),
        (5, "phone2"),
        (6, "email"),
        (6, "timezone"),
        (7, "phone"),
    ]
    async with tl.db.session() as s:
        names = set(await s.exec(select(Client.name)))
    assert names == {"Good One", "Good Two"}
    two = await client_by_name(tl, "Good Two")
    assert await phones_of(tl, two.id) == ["+79161234571", "+79161234572"]
    assert two.timezone == "Europe/Samara"
    assert await tl.check_followups() == []


DUPES = (
    "name,phone,phone2,company,Industry\n"
    "Ivan Again,+7 916 123-45-67,+7 916 765-43-21,Acme,retail\n"  # row 2: Ivan is in the base
    "Olga,+79160000001,,,\n"  # row 3: new
    "Olga Copy,+79160000001,+79160000002,Beta,banking\n"  # row 4: same as row 3
    "Petr,+79160000003,,,\n"  # row 5: new
)


async def test_duplicates_are_merged_into_the_existing_client(tl: Tierline, tmp_path: Path):
    ivan = await make_client(tl, "Ivan Petrov", "+79161234567")
    path = write(tmp_path, DUPES)
    report = await import_contacts(
        tl, path, ImportOptions(mapping={"custom.industry": "Industry"}, batch_size=2)
    )
    assert (report.created, report.merged, report.errors) == (2, 2, 0)
    merged = await client_by_name(tl, "Ivan Petrov")  # the name is not overwritten
    assert merged.id == ivan.id
    assert (merged.company, merged.custom) == ("Acme", {"industry": "retail"})
    assert await phones_of(tl, ivan.id) == ["+79161234567", "+79167654321"]
    # Rows 3 and 4 fall in different batches: row 4 merges into the client row 3 created.
    olga = await client_by_name(tl, "Olga")
    assert await phones_of(tl, olga.id) == ["+79160000001", "+79160000002"]
    assert (olga.company, olga.custom) == ("Beta", {"industry": "banking"})
    assert await count(tl, Client) == 3
    assert await tl.check_followups() == []


async def test_duplicates_in_one_batch_merge_too(tl: Tierline, tmp_path: Path):
    path = write(tmp_path, DUPES)
    report = await import_contacts(tl, path, ImportOptions(batch_size=100))
    assert (report.created, report.merged) == (3, 1)
    olga = await client_by_name(tl, "Olga")
    assert await phones_of(tl, olga.id) == ["+79160000001", "+79160000002"]
    assert await tl.check_followups() == []


async def test_duplicates_are_reported_when_asked(tl: Tierline, tmp_path: Path):
    ivan = await make_client(tl, "Ivan Petrov", "+79161234567")
    path = write(tmp_path, DUPES)
    report = await import_contacts(tl, path, ImportOptions(on_duplicate="report"))
    assert (report.created, report.merged, report.errors) == (2, 0, 2)
    async with tl.db.session() as s:
        errors = [(e.row, e.column, e.message) for e in await job_errors(s, report.job_id)]
    assert errors[0][:2] == (2, "phone") and f"client {ivan.id}" in errors[0][2]
    assert errors[1][:2] == (4, "phone") and "row 3 of this file" in errors[1][2]
    assert await phones_of(tl, ivan.id) == ["+79161234567"]
    assert await count(tl, Client) == 3


async def test_interrupted_import_resumes_after_the_last_committed_batch(
    tl: Tierline, tmp_path: Path
):
    lines = ["name,phone"] + [f"Client {i},+7916{i:07d}" for i in range(1, 26)]
    lines[7] = "Broken,123"  # row 8 is refused, once
    path = write(tmp_path, "\n".join(lines) + "\n")
    seen: list[ImportProgress] = []

    def crash_after_two(p: ImportProgress) -> None:
        seen.append(p)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the operator pressed Ctrl-C after batch 2

    with pytest.raises(KeyboardInterrupt):
        await import_contacts(tl, path, ImportOptions(batch_size=10), progress=crash_after_two)
    assert [p.rows_done for p in seen] == [10, 20]
    assert 0 < seen[0].bytes_read <= seen[1].bytes_read <= seen[1].total_bytes
    assert await count(tl, Client) == 19
    async with tl.db.session() as s:
        job = (await s.exec(select(ImportJob))).one()
    assert (job.status, job.last_row, job.committed_rows) == (ImportStatus.INTERRUPTED, 21, 20)

    report = await import_contacts(tl, path, ImportOptions(batch_size=10))
    assert (report.job_id, report.resumed_after_row) == (job.id, 21)
    assert (report.status, report.rows, report.created, report.errors) == ("done", 25, 24, 1)
    async with tl.db.session() as s:
        names = list(await s.exec(select(Client.name)))
        assert [(e.row, e.column) for e in await job_errors(s, job.id)] == [(8, "phone")]
    assert len(names) == len(set(names)) == 24
    assert await tl.check_followups() == []

    with pytest.raises(Conflict, match="already imported"):
        await import_contacts(tl, path, ImportOptions(batch_size=10))
