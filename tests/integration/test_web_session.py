"""Sign-in, users by API, health: the public contracts in DESIGN.md."""

from __future__ import annotations

from sqlmodel import select

from engine.models import AuditEntry
from tests.conftest import sign_in
from tests.integration.helpers import make_user


async def test_sign_in_sets_an_httponly_cookie_and_sign_out_clears_it(tl, web_client):
    await make_user(tl, "cold1")
    resp = await web_client.post(
        "/api/session", json={"username": "cold1", "password": "correct horse battery"}
    )
    assert resp.status == 200
    cookie = resp.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = await web_client.get("/api/me")
    assert (await me.json())["user"]["username"] == "cold1"
    assert (await web_client.delete("/api/session")).status == 200
    assert (await web_client.get("/api/me")).status == 401


async def test_wrong_password_is_401_and_audited_then_throttled(tl, web_client):
    await make_user(tl, "cold1")
    for _ in range(tl.settings.login_max_failures):
        resp = await web_client.post("/api/session", json={"username": "cold1", "password": "x"})
        assert resp.status == 401
    resp = await web_client.post(
        "/api/session", json={"username": "cold1", "password": "correct horse battery"}
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    async with tl.db.session() as s:
        refused = (await s.exec(select(AuditEntry).where(AuditEntry.allowed.is_(False)))).all()
    assert len(refused) == tl.settings.login_max_failures


async def test_admin_creates_users_and_duplicates_are_409(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    await sign_in(web_client, "admin")
    body = {
        "username": "op7",
        "password": "long enough pw",
        "role": "operator",
        "tier": "sales",
        "extension": "207",
    }
    resp = await web_client.post("/api/users", json=body)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["extension"] == "207"
    dup = await web_client.post("/api/users", json={**body, "username": "op8"})
    assert dup.status == 409 and (await dup.json())["field"] == "extension"
    bad = await web_client.post(
        "/api/users", json={**body, "username": "op9", "tier": "moon", "extension": "999"}
    )
    assert bad.status == 400 and (await bad.json())["field"] == "tier"


async def test_operator_cannot_create_users(tl, web_client):
    await make_user(tl, "cold1")
    await sign_in(web_client, "cold1")
    resp = await web_client.post(
        "/api/users", json={"username": "x", "password": "y" * 9, "role": "admin"}
    )
    assert resp.status == 403


async def test_browser_requests_need_the_csrf_token(tl, web_client):
    await make_user(tl, "admin", role="admin", tier=None)
    token = await sign_in(web_client, "admin")
    body = {"username": "op1", "password": "long enough pw", "role": "supervisor"}
    origin = {"Origin": str(web_client.make_url("/"))}
    assert (await web_client.post("/api/users", json=body, headers=origin)).status == 403
    ok = await web_client.post("/api/users", json=body, headers={**origin, "X-CSRF-Token": token})
    assert ok.status == 201


async def test_healthz(web_client):
    resp = await web_client.get("/healthz")
    assert resp.status == 200 and await resp.json() == {"status": "ok"}


async def test_pages_name_an_icon_that_is_served(web_client):
    # Without one, every page made the browser ask for /favicon.ico and log a 404.
    page = await (await web_client.get("/login")).text()
    href = page.split('<link rel="icon" type="image/svg+xml" href="', 1)[1].split('"', 1)[0]
    icon = await web_client.get(href)
    assert icon.status == 200 and icon.content_type == "image/svg+xml"
    assert (await icon.text()).startswith("<svg")
