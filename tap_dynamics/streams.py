"""The standard Customer Service tables, one class each.

Stream names are the tables' logical names; record fields are the Web API's names (lookups as
``_<name>_value``). Every table here has ``modifiedon``, so each is incremental on it.
"""

from __future__ import annotations

from tap_dynamics.client import DynamicsStream


class AccountStream(DynamicsStream):
    """Companies: customers, prospects, partners (``accounts``)."""

    name = "account"
    entity_set = "accounts"
    primary_keys = ("accountid",)
    replication_key = "modifiedon"


class ContactStream(DynamicsStream):
    """People (``contacts``)."""

    name = "contact"
    entity_set = "contacts"
    primary_keys = ("contactid",)
    replication_key = "modifiedon"


class IncidentStream(DynamicsStream):
    """Cases: the service requests of Customer Service (``incidents``)."""

    name = "incident"
    entity_set = "incidents"
    primary_keys = ("incidentid",)
    replication_key = "modifiedon"


class ActivityPointerStream(DynamicsStream):
    """Every activity of every type in one table (``activitypointers``), keyed by activityid;
    ``activitytypecode`` says which type. The typed streams below carry the type's own columns."""

    name = "activitypointer"
    entity_set = "activitypointers"
    primary_keys = ("activityid",)
    replication_key = "modifiedon"


class EmailStream(DynamicsStream):
    """Email activities (``emails``); the key is the shared ``activityid``."""

    name = "email"
    entity_set = "emails"
    primary_keys = ("activityid",)
    replication_key = "modifiedon"


class PhoneCallStream(DynamicsStream):
    """Phone call activities (``phonecalls``)."""

    name = "phonecall"
    entity_set = "phonecalls"
    primary_keys = ("activityid",)
    replication_key = "modifiedon"


class TaskStream(DynamicsStream):
    """Task activities (``tasks``)."""

    name = "task"
    entity_set = "tasks"
    primary_keys = ("activityid",)
    replication_key = "modifiedon"


class OpportunityStream(DynamicsStream):
    """Potential sales (``opportunities``: not a plain plural, hence declared)."""

    name = "opportunity"
    entity_set = "opportunities"
    primary_keys = ("opportunityid",)
    replication_key = "modifiedon"


class LeadStream(DynamicsStream):
    """Prospects (``leads``)."""

    name = "lead"
    entity_set = "leads"
    primary_keys = ("leadid",)
    replication_key = "modifiedon"


class SystemUserStream(DynamicsStream):
    """Users (``systemusers``); they share the principal key ``ownerid`` with teams, but their own
    key column is ``systemuserid``."""

    name = "systemuser"
    entity_set = "systemusers"
    primary_keys = ("systemuserid",)
    replication_key = "modifiedon"


class TeamStream(DynamicsStream):
    """Teams (``teams``)."""

    name = "team"
    entity_set = "teams"
    primary_keys = ("teamid",)
    replication_key = "modifiedon"


STANDARD_STREAMS: dict[str, type[DynamicsStream]] = {
    cls.name: cls
    for cls in (
        AccountStream,
        ContactStream,
        IncidentStream,
        ActivityPointerStream,
        EmailStream,
        PhoneCallStream,
        TaskStream,
        OpportunityStream,
        LeadStream,
        SystemUserStream,
        TeamStream,
    )
}
