"""Signing in to the cockpit in Chromium: a viewer sees no action and a POST made by hand is refused, an admin
manages users; the login, audit and users pages have no axe violation at desktop and phone size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from hub import accounts
from tests.browser.live import LiveHub
from tests.browser.test_survey_accessibility import problems

pytestmark = pytest.mark.browser

ADMIN = ("ada", "ada's long password")
VIEWER = ("vic", "vic's long password")
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


@pytest.fixture(scope="module")
def users(live: LiveHub) -> LiveHub:
    async def add() -> None:
        async with live.hub.store.session() as s:
            await accounts.add(s, "test", ADMIN[0], "admin", ADMIN[1])
            await accounts.add(s, "test", VIEWER[0], "viewer", VIEWER[1])

    live.run(add())
    return live


@pytest.fixture(params=list(SIZES))
def sized(request: pytest.FixtureRequest, browser: Browser, users: LiveHub) -> Iterator[Page]:
    context = browser.new_context(
        base_url=users.url, viewport=SIZES[request.param], bypass_csp=True, locale="en-GB"
    )
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def sign_in(page: Page, name: str, password: str, target: str = "/admin/audit") -> None:
    page.goto(target)
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name=f"Sign out ({name})")).to_be_visible()


def test_a_wrong_password_is_said_and_the_viewer_sees_no_action(page: Page, users: LiveHub) -> None:
    page.goto("/admin/audit")
    page.get_by_label("User name").fill(VIEWER[0])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong user name or password.")
    sign_in(page, *VIEWER)
    assert page.url.endswith("/admin/audit")
    expect(page.get_by_role("heading", name="Audit log", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Users")).to_have_count(0)
    actions = page.locator("form[method=post]").evaluate_all(
        "forms => forms.map(f => f.getAttribute('action'))"
    )
    assert actions == ["/admin/logout"]  # the only thing a viewer can post here is signing out
    csrf = page.locator("input[name=csrf]").first.input_value()
    refused = page.request.post(
        "/admin/users",
        form={
            "csrf": csrf,
            "name": "eve",
            "role": "admin",
            "password": VIEWER[1],
            "password_again": VIEWER[1],
        },
    )
    assert refused.status == 403
    assert page.request.post("/admin/users/ada/remove", form={"csrf": csrf}).status == 403
    assert page.goto("/admin/users").status == 403  # type: ignore[union-attr]


def test_the_admin_adds_a_user_and_changes_its_role(page: Page, users: LiveHub) -> None:
    sign_in(page, *ADMIN, target="/admin/users")
    page.get_by_label("User name").fill("cy")
    page.get_by_label("Password (at least 10 characters)").fill("cy's long password")
    page.get_by_label("The password again").fill("cy's long password")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_role("status")).to_have_text("The user was added.")
    page.get_by_label("Role of cy").select_option("admin")
    page.get_by_role("row", name="cy").get_by_role("button", name="Change role").click()
    expect(page.get_by_role("status")).to_have_text("The role was changed.")
    page.get_by_role("button", name="Remove cy").click()
    expect(page.get_by_role("status")).to_have_text("The user was removed.")
    page.goto("/admin/audit?actor=ada")
    for action in ("user.add", "user.role", "user.remove"):
        expect(page.get_by_role("cell", name=action, exact=True)).to_be_visible()


def test_the_login_page_has_no_axe_violation(sized: Page, axe_script: Path) -> None:
    sized.goto("/admin/login")
    assert problems(sized, axe_script) == []
    sized.get_by_label("User name").fill(VIEWER[0])
    sized.get_by_label("Password").fill("not the password")
    sized.get_by_role("button", name="Sign in").click()
    expect(sized.get_by_role("alert")).to_be_visible()
    assert problems(sized, axe_script) == []


def test_the_audit_and_users_pages_have_no_axe_violation(sized: Page, axe_script: Path) -> None:
    sign_in(sized, *ADMIN)
    assert problems(sized, axe_script) == []
    sized.goto("/admin/users")
    expect(sized.get_by_role("heading", name="Users", exact=True)).to_be_visible()
    assert problems(sized, axe_script) == []
