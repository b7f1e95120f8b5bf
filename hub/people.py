"""Matching the people of several CRMs into one person: by CRM id, then normalised email, then E.164 phone."""

from __future__ import annotations

import phonenumbers
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from hub.models import PersonRecord
from hub.store.tables import Identity, Person, utcnow


def normalise_email(email: str | None) -> str | None:
    if not email or "@" not in email:
        return None
    return email.strip().lower()


def normalise_phone(phone: str | None, region: str | None = None) -> str | None:
    """E.164 (``+4512345678``), or None when the number cannot be read."""
    if not phone:
        return None
    candidate = phone.strip()
    if candidate.startswith("00"):
        candidate = "+" + candidate[2:]
    try:
        parsed = phonenumbers.parse(candidate, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def display_name(record: PersonRecord) -> str | None:
    name = " ".join(part for part in (record.first_name, record.last_name) if part)
    return name or None


def upsert_person(
    session: Session, connector: str, record: PersonRecord, phone_region: str | None = None
) -> tuple[Person, Identity]:
    """Find or create the hub's person for a CRM record and refresh what the CRM says of them.

    ``phone_region`` (``hub.phone_region``) reads a number written without a country code, as CRMs of one
    country often keep them; without it such a number cannot be told from another country's and is dropped.
    """
    email = normalise_email(record.email)
    phone = normalise_phone(record.phone, phone_region)
    identity = session.scalar(
        select(Identity).where(Identity.connector == connector, Identity.crm_id == record.crm_id)
    )
    person: Person | None = None
    if identity is not None:
        person = session.get(Person, identity.person_id)
    if person is None and (email or phone):
        clauses = []
        if email:
            clauses.append(Person.email == email)
        if phone:
            clauses.append(Person.phone == phone)
        person = session.scalar(select(Person).where(or_(*clauses)).order_by(Person.id).limit(1))
    if person is None:
        person = Person()
        session.add(person)
    if email and email != person.email:
        person.email, person.email_rejected = email, None
    if phone and phone != person.phone:
        person.phone, person.phone_rejected = phone, None
    person.name = display_name(record) or person.name
    person.language = record.language or person.language
    person.timezone = record.timezone or person.timezone
    person.updated_at = utcnow()
    session.flush()
    if identity is None:
        identity = Identity(person_id=person.id, connector=connector, crm_id=record.crm_id)
        session.add(identity)
    identity.person_id = person.id
    identity.crm_opted_out = record.opted_out
    identity.crm_opt_out_reason = record.opt_out_reason
    identity.updated_at = utcnow()
    session.flush()
    return person, identity


def like_pattern(text: str) -> str:
    """``text`` as a LIKE pattern matching it anywhere, its own ``%``, ``_`` and ``\\`` taken literally
    (with ``ESCAPE '\\'``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def search_people(
    session: AsyncSession, query: str, limit: int, offset: int, exclude: int | None = None
) -> tuple[list[Person], int]:
    """People whose name, email or phone holds ``query`` (case ignored; a phone written with spaces or
    dashes matches too), newest first, one page of them, and how many match in all. An empty query: everyone.

    The query is bound as a parameter and its wildcards escaped: ``%`` or ``_`` typed into the search box
    match those characters only."""
    text = query.strip()
    conditions = []
    if text:
        pattern = like_pattern(text)
        matches = [Person.name.ilike(pattern, escape="\\"), Person.email.ilike(pattern, escape="\\")]
        compact = "".join(ch for ch in text if ch not in " -().")  # phones are stored as E.164
        if compact:
            matches.append(Person.phone.like(like_pattern(compact), escape="\\"))
        conditions.append(or_(*matches))
    if exclude is not None:
        conditions.append(Person.id != exclude)
    total = await session.scalar(select(func.count()).select_from(Person).where(*conditions))
    rows = await session.scalars(
        select(Person).where(*conditions).order_by(Person.id.desc()).limit(limit).offset(offset)
    )
    return list(rows), int(total or 0)
