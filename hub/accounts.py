"""The cockpit's named users: their Argon2id password hashes, their roles, and the changes made to them.

Shared by ``cxhub user ...`` and the ``/admin/users`` page, so both refuse the same things (an unknown role, a
name taken twice, a change that would leave nobody able to act as admin) and both write the same audit
entries, in the same transaction as the change itself: a change is never made without its record.

Passwords are hashed with argon2-cffi's ``PasswordHasher`` (Argon2id, its current recommended parameters);
a hash made with older parameters is replaced at the next successful sign-in (``check_needs_rehash``).
Changing a password or removing a user raises its ``session_epoch``, which ends its sessions at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.store.tables import AdminUser, AuditEntry, utcnow

ROLES = ("viewer", "admin")
#: the name of the built-in admin that signs in with ``hub.admin_password``
BUILTIN_ADMIN = "admin"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024

# why a change is refused, in English with placeholders (the users page shows them translated)
TOO_SHORT = "a password has at least {n} characters"
TOO_LONG = "a password has at most {n} characters"
BAD_NAME = "a user name is 1 to 100 letters, digits or . _ @ + - and starts with a letter or digit"
BAD_ROLE = "the role is viewer or admin, not {role}"
NO_SUCH_USER = "there is no user {name}"
TAKEN = "there is already a user {name}"
LAST_ADMIN = "{name} is the last admin: make someone else admin first"


class AccountError(ValueError):
    """A change to the users that is refused. ``text`` says why in English, with ``{placeholders}`` filled
    from ``values``, so a page can show it translated (``_(error.text, **error.values)``)."""

    def __init__(self, text: str, **values: Any) -> None:
        super().__init__(text.format(**values))
        self.text = text
        self.values = values


@dataclass(frozen=True)
class Account:
    """A user as lists show it (never the hash)."""

    name: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    has_password: bool


@cache
def hasher() -> PasswordHasher:
    return PasswordHasher()


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the name is unknown, so a wrong name costs as long as a wrong password."""
    return hasher().hash("no such user: this hash only spends the time a real check takes")


def hash_password(password: str) -> str:
    check_password(password)
    return hasher().hash(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(TOO_SHORT, n=MIN_PASSWORD)
    if len(password) > MAX_PASSWORD:
        raise AccountError(TOO_LONG, n=MAX_PASSWORD)


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise AccountError(BAD_NAME)
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(BAD_ROLE, role=role)
    return role


def _record(s: AsyncSession, actor: str, action: str, target: str, **detail: Any) -> None:
    s.add(AuditEntry(actor=actor, action=action, target=target, detail=detail or None))


async def find(s: AsyncSession, name: str) -> AdminUser | None:
    return (await s.execute(select(AdminUser).where(AdminUser.name == name))).scalar_one_or_none()


async def _existing(s: AsyncSession, name: str) -> AdminUser:
    found = await find(s, name)
    if found is None:
        raise AccountError(NO_SUCH_USER, name=name)
    return found


async def any_users(s: AsyncSession) -> bool:
    return (await s.execute(select(AdminUser.id).limit(1))).first() is not None


async def _admins_left(s: AsyncSession, without: str, builtin_admin: bool) -> bool:
    """Whether someone could still act as admin once ``without`` is no admin any more."""
    if builtin_admin:
        return True
    count = await s.scalar(
        select(func.count())
        .select_from(AdminUser)
        .where(AdminUser.role == "admin", AdminUser.name != without)
    )
    return bool(count)


async def list_accounts(s: AsyncSession) -> list[Account]:
    rows = (await s.execute(select(AdminUser).order_by(AdminUser.name))).scalars()
    return [Account(r.name, r.role, r.created_at, r.last_login_at, r.password_hash is not None) for r in rows]


async def add(s: AsyncSession, actor: str, name: str, role: str, password: str | None) -> None:
    """A new user; ``password`` None: one who signs in by single sign-on only."""
    check_name(name)
    check_role(role)
    digest = hash_password(password) if password is not None else None
    if await find(s, name) is not None:
        raise AccountError(TAKEN, name=name)
    s.add(AdminUser(name=name, role=role, password_hash=digest, session_epoch=0))
    _record(s, actor, "user.add", name, role=role)


async def set_password(s: AsyncSession, actor: str, name: str, password: str) -> None:
    """A new password; it ends every session of that user."""
    digest = hash_password(password)
    user = await _existing(s, name)
    user.password_hash = digest
    user.session_epoch += 1
    user.updated_at = utcnow()
    _record(s, actor, "user.passwd", name)


async def set_role(s: AsyncSession, actor: str, name: str, role: str, *, builtin_admin: bool) -> None:
    check_role(role)
    user = await _existing(s, name)
    if user.role == role:
        return
    if role != "admin" and not await _admins_left(s, name, builtin_admin):
        raise AccountError(LAST_ADMIN, name=name)
    _record(s, actor, "user.role", name, role=role, was=user.role)
    user.role = role
    user.updated_at = utcnow()


async def remove(s: AsyncSession, actor: str, name: str, *, builtin_admin: bool) -> None:
    user = await _existing(s, name)
    if user.role == "admin" and not await _admins_left(s, name, builtin_admin):
        raise AccountError(LAST_ADMIN, name=name)
    await s.delete(user)
    _record(s, actor, "user.remove", name)


async def authenticate(s: AsyncSession, name: str, password: str) -> AdminUser | None:
    """The user when ``password`` is theirs, else None; as slow for an unknown name as for a known one.

    A hash made with older parameters is replaced, and the sign-in time recorded."""
    user = await find(s, name) if NAME.fullmatch(name) else None
    digest = user.password_hash if user is not None else None
    try:
        hasher().verify(digest or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or digest is None:
        return None
    if hasher().check_needs_rehash(digest):
        user.password_hash = hasher().hash(password)
    user.last_login_at = utcnow()
    return user
