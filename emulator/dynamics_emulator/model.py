"""The emulator's entity model: the tables it serves, their columns, keys and relationships.

This is the emulator's own description of a Dataverse organisation. The `$metadata` document is
rendered from it (``csdl.py``), the SQLite store is created from it (``store.py``) and seeded from
it (``seed.py``). It can also be read from a real CSDL file (``csdl_load.py``).

Vocabulary follows Dataverse: an *entity* is a table, identified by its logical name (``account``)
and addressed through its entity set name (``accounts``); an *attribute* is a column. Lookup
columns are attributes too: their Web API property is ``_<name>_value`` and they are written
through navigation properties (``primarycontactid@odata.bind``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

# Attribute types (Dataverse AttributeTypeCode names, lower-cased) and their OData types.
EDM_TYPES: dict[str, str] = {
    "string": "Edm.String",
    "memo": "Edm.String",
    "integer": "Edm.Int32",
    "bigint": "Edm.Int64",
    "decimal": "Edm.Decimal",
    "money": "Edm.Decimal",
    "double": "Edm.Double",
    "boolean": "Edm.Boolean",
    "datetime": "Edm.DateTimeOffset",
    "dateonly": "Edm.Date",
    "uniqueidentifier": "Edm.Guid",
    "picklist": "Edm.Int32",
    "state": "Edm.Int32",
    "status": "Edm.Int32",
    "lookup": "Edm.Guid",
    "owner": "Edm.Guid",
    "customer": "Edm.Guid",
    "binary": "Edm.Binary",
}

LOOKUP_TYPES = frozenset({"lookup", "owner", "customer"})
CHOICE_TYPES = frozenset({"picklist", "state", "status"})


@dataclass
class Attribute:
    """One column of a table.

    Attributes:
        name: the logical name (``name``, ``revenue``, ``ownerid``).
        type: one of the keys of ``EDM_TYPES``.
        max_length: for strings, the maximum number of characters.
        read_only: computed or system-managed (``Org.OData.Core.V1.Computed``); writes are refused.
        options: for choices, value -> label.
        targets: for lookups, the logical names of the tables it may point at (several when
            polymorphic, like ``customerid`` -> account, contact).
        nav_names: for lookups, target table -> single-valued navigation property name; the
            names are case-sensitive and irregular, exactly as Dataverse has them.
        precision: for decimal and money, the number of decimal places the service returns.
        description: a short English description, rendered as ``Org.OData.Core.V1.Description``.
    """

    name: str
    type: str
    max_length: int | None = None
    read_only: bool = False
    options: dict[int, str] | None = None
    targets: tuple[str, ...] = ()
    nav_names: dict[str, str] = field(default_factory=dict)
    precision: int | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in EDM_TYPES:
            raise ValueError(f"unknown attribute type {self.type!r} for {self.name!r}")
        if self.type in LOOKUP_TYPES and not self.nav_names:
            self.nav_names = dict.fromkeys(self.targets, self.name)
        if self.type == "money" and self.precision is None:
            self.precision = 4

    @property
    def is_lookup(self) -> bool:
        return self.type in LOOKUP_TYPES

    @property
    def is_choice(self) -> bool:
        return self.type in CHOICE_TYPES

    @property
    def property_name(self) -> str:
        """The Web API property name: ``_x_value`` for lookups, the logical name otherwise."""
        return f"_{self.name}_value" if self.is_lookup else self.name

    @property
    def edm_type(self) -> str:
        return EDM_TYPES[self.type]


@dataclass
class Entity:
    """One table.

    Attributes:
        logical_name: ``account``.
        entity_set: ``accounts`` (not always a plain plural).
        primary_id: the primary key column (``accountid``).
        primary_name: the primary name column (``name``), used for lookup display names.
        attributes: the columns, in declaration order, keyed by logical name. For tables that
            inherit (``email`` from ``activitypointer``) this holds the full set, inherited too.
        base_type: the CSDL base type: ``crmbaseentity``, ``activitypointer`` or ``principal``.
        abstract: abstract types (``activitypointer`` is not, ``principal`` is) have no rows of
            their own.
        alternate_keys: alternate keys as (key name, column logical names) pairs.
        change_tracking: whether ``Prefer: odata.track-changes`` is allowed.
        is_custom: a custom table (``new_project``).
        is_intersect, is_virtual, is_private: metadata flags used to skip tables in discovery.
        activity_type: for activity tables, the ``activitytypecode`` value (``email``).
        description: a short English description.
    """

    logical_name: str
    entity_set: str
    primary_id: str
    primary_name: str | None
    attributes: dict[str, Attribute]
    base_type: str = "crmbaseentity"
    abstract: bool = False
    alternate_keys: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)
    change_tracking: bool = True
    is_custom: bool = False
    is_intersect: bool = False
    is_virtual: bool = False
    is_private: bool = False
    activity_type: str | None = None
    description: str = ""

    def attribute(self, name: str) -> Attribute | None:
        return self.attributes.get(name)

    def by_property(self) -> dict[str, Attribute]:
        """Attributes keyed by Web API property name (``_ownerid_value`` for ``ownerid``)."""
        return {a.property_name: a for a in self.attributes.values()}

    def lookups(self) -> Iterator[Attribute]:
        return (a for a in self.attributes.values() if a.is_lookup)

    def storage_columns(self) -> list[str]:
        """The SQLite columns of this table, in order (see STORAGE.md): every property, plus
        ``<property>@lookuplogicalname`` after each lookup with more than one target."""
        cols: list[str] = []
        for a in self.attributes.values():
            cols.append(a.property_name)
            if a.is_lookup and len(a.targets) > 1:
                cols.append(f"{a.property_name}@lookuplogicalname")
        return cols


@dataclass
class Model:
    """All the tables of an organisation, and where each comes from."""

    entities: dict[str, Entity]

    def by_set(self, entity_set: str) -> Entity | None:
        for e in self.entities.values():
            if e.entity_set == entity_set:
                return e
        return None

    def __getitem__(self, logical_name: str) -> Entity:
        return self.entities[logical_name]

    def __contains__(self, logical_name: object) -> bool:
        return logical_name in self.entities

    def concrete(self) -> Iterator[Entity]:
        """Tables that hold rows of their own (not abstract, not the activitypointer union)."""
        return (
            e
            for e in self.entities.values()
            if not e.abstract and e.logical_name != "activitypointer"
        )

    def activity_tables(self) -> list[Entity]:
        return [e for e in self.entities.values() if e.base_type == "activitypointer"]


# ---------------------------------------------------------------------------------------------
# The standard Customer Service model: account, contact, incident, activities, opportunity, lead,
# systemuser, team, transactioncurrency and one custom table. Column names, types, choice values
# and navigation property names are those of a real Dataverse organisation.
# ---------------------------------------------------------------------------------------------


def _a(name: str, type_: str, **kw: object) -> Attribute:
    return Attribute(name, type_, **kw)  # type: ignore[arg-type]


def _s(name: str, length: int = 100, **kw: object) -> Attribute:
    return _a(name, "string", max_length=length, **kw)


def _ro(name: str, type_: str, **kw: object) -> Attribute:
    return _a(name, type_, read_only=True, **kw)


STATE_ACTIVE_INACTIVE = {0: "Active", 1: "Inactive"}
STATUS_ACTIVE_INACTIVE = {1: "Active", 2: "Inactive"}


def _system_columns(entity: str, *, owned: bool = True, money: bool = False) -> list[Attribute]:
    """Columns every standard table has: audit stamps, owner, version, currency."""
    cols = [
        _ro("createdon", "datetime", description="Date and time when the record was created."),
        _ro("modifiedon", "datetime", description="Date and time when the record was modified."),
        _ro(
            "createdby",
            "lookup",
            targets=("systemuser",),
            nav_names={"systemuser": "createdby"},
            description="Who created the record.",
        ),
        _ro(
            "modifiedby",
            "lookup",
            targets=("systemuser",),
            nav_names={"systemuser": "modifiedby"},
            description="Who last updated the record.",
        ),
        _ro("versionnumber", "bigint", description="Version number of the record."),
        _a("overriddencreatedon", "datetime", description="Date the record was migrated."),
        _a("importsequencenumber", "integer", description="Sequence number of the import."),
        _ro("timezoneruleversionnumber", "integer"),
        _ro("utcconversiontimezonecode", "integer"),
    ]
    if owned:
        cols += [
            _a(
                "ownerid",
                "owner",
                targets=("systemuser", "team"),
                nav_names={"systemuser": "ownerid", "team": "ownerid"},
                description="Owner of the record: a user or a team.",
            ),
            _ro(
                "owninguser",
                "lookup",
                targets=("systemuser",),
                nav_names={"systemuser": "owninguser"},
            ),
            _ro("owningteam", "lookup", targets=("team",), nav_names={"team": "owningteam"}),
        ]
    if money:
        cols += [
            _a(
                "transactioncurrencyid",
                "lookup",
                targets=("transactioncurrency",),
                nav_names={"transactioncurrency": "transactioncurrencyid"},
                description="Currency of the money columns.",
            ),
            _ro("exchangerate", "decimal", precision=10),
        ]
    return cols


def _entity(
    logical_name: str,
    entity_set: str,
    primary_id: str,
    primary_name: str | None,
    columns: Iterable[Attribute],
    **kw: object,
) -> Entity:
    attrs: dict[str, Attribute] = {}
    for col in columns:
        if col.name in attrs:
            raise ValueError(f"{logical_name}.{col.name} declared twice")
        attrs[col.name] = col
    return Entity(logical_name, entity_set, primary_id, primary_name, attrs, **kw)  # type: ignore[arg-type]


def _address(prefix: str) -> list[Attribute]:
    return [
        _s(f"{prefix}_line1", 250),
        _s(f"{prefix}_city", 80),
        _s(f"{prefix}_stateorprovince", 50),
        _s(f"{prefix}_postalcode", 20),
        _s(f"{prefix}_country", 80),
        _ro(f"{prefix}_composite", "memo", max_length=1000),
        _a(f"{prefix}_latitude", "double"),
        _a(f"{prefix}_longitude", "double"),
        _s(f"{prefix}_telephone1", 50),
    ]


def _account() -> Entity:
    return _entity(
        "account",
        "accounts",
        "accountid",
        "name",
        [
            _a("accountid", "uniqueidentifier", description="Unique identifier of the account."),
            _s("name", 160, description="Company or business name."),
            _s("accountnumber", 20, description="Account number for customer reference."),
            _s("telephone1", 50),
            _s("telephone2", 50),
            _s("fax", 50),
            _s("emailaddress1", 100),
            _s("websiteurl", 200),
            _s("tickersymbol", 10),
            _s("sic", 20),
            _ro("yominame", "string", max_length=160),
            _a("description", "memo", max_length=2000),
            *_address("address1"),
            *_address("address2"),
            _a("revenue", "money"),
            _ro("revenue_base", "money"),
            _a("creditlimit", "money"),
            _ro("creditlimit_base", "money"),
            _a("marketcap", "money"),
            _ro("openrevenue", "money"),
            _a("numberofemployees", "integer"),
            _a("sharesoutstanding", "integer"),
            _a("creditonhold", "boolean"),
            _a("donotemail", "boolean"),
            _a("donotphone", "boolean"),
            _a("followemail", "boolean"),
            _a("lastusedincampaign", "datetime"),
            _a(
                "industrycode",
                "picklist",
                options={
                    1: "Accounting",
                    2: "Agriculture and Non-petrol Natural Resource Extraction",
                    3: "Broadcasting Printing and Publishing",
                    4: "Brokers",
                    5: "Building Supply Retail",
                    6: "Business Services",
                    7: "Consulting",
                    8: "Consumer Services",
                    9: "Design, Direction and Creative Management",
                    10: "Distributors, Dispatchers and Processors",
                    11: "Doctor's Offices and Clinics",
                    12: "Durable Manufacturing",
                    13: "Eating and Drinking Places",
                    14: "Entertainment Retail",
                    15: "Equipment Rental and Leasing",
                    16: "Financial",
                    17: "Food and Tobacco Processing",
                    18: "Inbound Capital Intensive Processing",
                    19: "Inbound Repair and Services",
                    20: "Insurance",
                    21: "Legal Services",
                    22: "Non-Durable Merchandise Retail",
                    23: "Outbound Consumer Service",
                    24: "Petrochemical Extraction and Distribution",
                    25: "Service Retail",
                    26: "SIG Affiliations",
                    27: "Social Services",
                    28: "Special Outbound Trade Contractors",
                    29: "Specialty Realty",
                    30: "Transportation",
                    31: "Utility Creation and Distribution",
                    32: "Vehicle Retail",
                    33: "Wholesale",
                },
            ),
            _a(
                "accountcategorycode",
                "picklist",
                options={1: "Preferred Customer", 2: "Standard"},
            ),
            _a(
                "customertypecode",
                "picklist",
                options={
                    1: "Competitor",
                    2: "Consultant",
                    3: "Customer",
                    4: "Investor",
                    5: "Partner",
                    6: "Influencer",
                    7: "Press",
                    8: "Prospect",
                    9: "Reseller",
                    10: "Supplier",
                    11: "Vendor",
                    12: "Other",
                },
            ),
            _a(
                "ownershipcode",
                "picklist",
                options={1: "Public", 2: "Private", 3: "Subsidiary", 4: "Other"},
            ),
            _a(
                "preferredcontactmethodcode",
                "picklist",
                options={1: "Any", 2: "Email", 3: "Phone", 4: "Fax", 5: "Mail"},
            ),
            _a("statecode", "state", options=STATE_ACTIVE_INACTIVE),
            _a("statuscode", "status", options=STATUS_ACTIVE_INACTIVE),
            _a(
                "primarycontactid",
                "lookup",
                targets=("contact",),
                nav_names={"contact": "primarycontactid"},
                description="Primary contact for the account.",
            ),
            _a(
                "parentaccountid",
                "lookup",
                targets=("account",),
                nav_names={"account": "parentaccountid"},
            ),
            _a(
                "originatingleadid",
                "lookup",
                targets=("lead",),
                nav_names={"lead": "originatingleadid"},
            ),
            _a(
                "preferredsystemuserid",
                "lookup",
                targets=("systemuser",),
                nav_names={"systemuser": "preferredsystemuserid"},
            ),
            _ro("entityimage", "binary"),
            *_system_columns("account", money=True),
        ],
        alternate_keys=[("accountnumber_key", ("accountnumber",))],
        description="Business that represents a customer or potential customer.",
    )


def _contact() -> Entity:
    return _entity(
        "contact",
        "contacts",
        "contactid",
        "fullname",
        [
            _a("contactid", "uniqueidentifier"),
            _s("firstname", 50),
            _s("lastname", 50),
            _ro("fullname", "string", max_length=160),
            _s("jobtitle", 100),
            _s("emailaddress1", 100),
            _s("emailaddress2", 100),
            _s("telephone1", 50),
            _s("mobilephone", 50),
            _a("birthdate", "dateonly", description="Birthday (date only)."),
            *_address("address1"),
            _a("annualincome", "money"),
            _ro("annualincome_base", "money"),
            _a(
                "gendercode",
                "picklist",
                options={1: "Male", 2: "Female"},
            ),
            _a(
                "preferredcontactmethodcode",
                "picklist",
                options={1: "Any", 2: "Email", 3: "Phone", 4: "Fax", 5: "Mail"},
            ),
            _a("donotemail", "boolean"),
            _a("donotphone", "boolean"),
            _a("numberofchildren", "integer"),
            _a("statecode", "state", options=STATE_ACTIVE_INACTIVE),
            _a("statuscode", "status", options=STATUS_ACTIVE_INACTIVE),
            _a(
                "parentcustomerid",
                "customer",
                targets=("account", "contact"),
                nav_names={
                    "account": "parentcustomerid_account",
                    "contact": "parentcustomerid_contact",
                },
                description="Parent company or contact.",
            ),
            _a("description", "memo", max_length=2000),
            *_system_columns("contact", money=True),
        ],
        alternate_keys=[("emailaddress1_key", ("emailaddress1",))],
        description="Person with whom a business unit has a relationship.",
    )


def _incident() -> Entity:
    return _entity(
        "incident",
        "incidents",
        "incidentid",
        "title",
        [
            _a("incidentid", "uniqueidentifier"),
            _s("title", 200),
            _ro("ticketnumber", "string", max_length=100),
            _a("description", "memo", max_length=2000),
            _a(
                "customerid",
                "customer",
                targets=("account", "contact"),
                nav_names={"account": "customerid_account", "contact": "customerid_contact"},
                description="Customer the case is for.",
            ),
            _a(
                "primarycontactid",
                "lookup",
                targets=("contact",),
                nav_names={"contact": "primarycontactid"},
            ),
            _a(
                "prioritycode",
                "picklist",
                options={1: "High", 2: "Normal", 3: "Low"},
            ),
            _a(
                "severitycode",
                "picklist",
                options={1: "Default Value"},
            ),
            _a(
                "casetypecode",
                "picklist",
                options={1: "Question", 2: "Problem", 3: "Request"},
            ),
            _a(
                "caseorigincode",
                "picklist",
                options={
                    1: "Phone",
                    2: "Email",
                    3: "Web",
                    2483: "Facebook",
                    3986: "Twitter",
                    700610000: "IoT",
                },
            ),
            _a(
                "statecode",
                "state",
                options={0: "Active", 1: "Resolved", 2: "Cancelled"},
            ),
            _a(
                "statuscode",
                "status",
                options={
                    1: "In Progress",
                    2: "On Hold",
                    3: "Waiting for Details",
                    4: "Researching",
                    5: "Problem Solved",
                    1000: "Information Provided",
                    6: "Cancelled",
                    2000: "Merged",
                },
            ),
            _a("escalatedon", "datetime"),
            _a("isescalated", "boolean"),
            _a("followupby", "datetime"),
            _a("resolveby", "datetime"),
            _ro("actualserviceunits", "integer"),
            _a("billedserviceunits", "integer"),
            _a(
                "customersatisfactioncode",
                "picklist",
                options={
                    1: "Very Satisfied",
                    2: "Satisfied",
                    3: "Neutral",
                    4: "Dissatisfied",
                    5: "Very Dissatisfied",
                },
            ),
            _ro("resolvedon", "datetime", description="When the case was resolved."),
            _a(
                "parentcaseid",
                "lookup",
                targets=("incident",),
                nav_names={"incident": "parentcaseid"},
            ),
            *_system_columns("incident"),
        ],
        description="Service request case associated with a contract.",
    )


# Activity columns shared by every activity table (they live on activitypointer).
def _activity_columns() -> list[Attribute]:
    return [
        _a("activityid", "uniqueidentifier"),
        _s("subject", 200),
        _a("description", "memo", max_length=100000),
        _ro("activitytypecode", "string", max_length=64),
        _a("scheduledstart", "datetime"),
        _a("scheduledend", "datetime"),
        _a("actualstart", "datetime"),
        _a("actualend", "datetime"),
        _a("actualdurationminutes", "integer"),
        _a("scheduleddurationminutes", "integer"),
        _a("prioritycode", "picklist", options={0: "Low", 1: "Normal", 2: "High"}),
        _a(
            "statecode",
            "state",
            options={0: "Open", 1: "Completed", 2: "Canceled", 3: "Scheduled"},
        ),
        _a(
            "statuscode",
            "status",
            options={
                1: "Open",
                2: "Not Started",
                3: "In Progress",
                4: "Waiting on someone else",
                5: "Completed",
                6: "Canceled",
                7: "Deferred",
            },
        ),
        _a("isbilled", "boolean"),
        _ro("isregularactivity", "boolean"),
        _a(
            "regardingobjectid",
            "lookup",
            targets=("account", "contact", "incident", "opportunity", "lead"),
            nav_names={
                "account": "regardingobjectid_account_{activity}",
                "contact": "regardingobjectid_contact_{activity}",
                "incident": "regardingobjectid_incident_{activity}",
                "opportunity": "regardingobjectid_opportunity_{activity}",
                "lead": "regardingobjectid_lead_{activity}",
            },
            description="The record the activity relates to.",
        ),
        *_system_columns("activitypointer"),
    ]


def _activity(logical_name: str, entity_set: str, extra: list[Attribute], desc: str) -> Entity:
    cols = []
    for col in _activity_columns():
        if col.is_lookup and col.name == "regardingobjectid":
            col.nav_names = {t: n.format(activity=logical_name) for t, n in col.nav_names.items()}
        cols.append(col)
    return _entity(
        logical_name,
        entity_set,
        "activityid",
        "subject",
        [*cols, *extra],
        base_type="activitypointer",
        activity_type=logical_name,
        description=desc,
    )


def _activitypointer() -> Entity:
    cols = []
    for col in _activity_columns():
        if col.name == "regardingobjectid":
            col.nav_names = {t: f"regardingobjectid_{t}" for t in col.targets}
        cols.append(col)
    return _entity(
        "activitypointer",
        "activitypointers",
        "activityid",
        "subject",
        cols,
        description="Task performed, or to be performed, by a user (all activity types).",
    )


def _email() -> Entity:
    return _activity(
        "email",
        "emails",
        [
            _s("sender", 250),
            _a("torecipients", "memo", max_length=500),
            _a("directioncode", "boolean", description="Outgoing (true) or incoming (false)."),
            _a("opencount", "integer"),
            _ro("messageid", "string", max_length=320),
            _a(
                "emailsender",
                "lookup",
                targets=("account", "contact", "systemuser"),
                nav_names={
                    "account": "emailsender_account",
                    "contact": "emailsender_contact",
                    "systemuser": "emailsender_systemuser",
                },
            ),
        ],
        "Activity that is delivered using email protocols.",
    )


def _phonecall() -> Entity:
    return _activity(
        "phonecall",
        "phonecalls",
        [
            _s("phonenumber", 200),
            _a("directioncode", "boolean", description="Outgoing (true) or incoming (false)."),
            _a("leftvoicemail", "boolean"),
        ],
        "Activity to track a telephone call.",
    )


def _task() -> Entity:
    return _activity(
        "task",
        "tasks",
        [
            _a("percentcomplete", "integer"),
            _s("category", 250),
            _s("subcategory", 250),
        ],
        "Generic activity representing work needed to be done.",
    )


def _opportunity() -> Entity:
    return _entity(
        "opportunity",
        "opportunities",
        "opportunityid",
        "name",
        [
            _a("opportunityid", "uniqueidentifier"),
            _s("name", 300),
            _a(
                "customerid",
                "customer",
                targets=("account", "contact"),
                nav_names={"account": "customerid_account", "contact": "customerid_contact"},
            ),
            _a(
                "parentaccountid",
                "lookup",
                targets=("account",),
                nav_names={"account": "parentaccountid"},
            ),
            _a(
                "parentcontactid",
                "lookup",
                targets=("contact",),
                nav_names={"contact": "parentcontactid"},
            ),
            _a("estimatedvalue", "money"),
            _ro("estimatedvalue_base", "money"),
            _a("actualvalue", "money"),
            _a("estimatedclosedate", "dateonly"),
            _a("actualclosedate", "dateonly"),
            _a("closeprobability", "integer"),
            _a(
                "opportunityratingcode",
                "picklist",
                options={1: "Hot", 2: "Warm", 3: "Cold"},
            ),
            _a(
                "salesstagecode",
                "picklist",
                options={1: "Qualify", 2: "Develop", 3: "Propose", 4: "Close"},
            ),
            _a("statecode", "state", options={0: "Open", 1: "Won", 2: "Lost"}),
            _a(
                "statuscode",
                "status",
                options={1: "In Progress", 2: "On Hold", 3: "Won", 4: "Canceled", 5: "Out-Sold"},
            ),
            _a("description", "memo", max_length=2000),
            _a(
                "originatingleadid",
                "lookup",
                targets=("lead",),
                nav_names={"lead": "originatingleadid"},
            ),
            *_system_columns("opportunity", money=True),
        ],
        description="Potential revenue-generating event, or sale to an account.",
    )


def _lead() -> Entity:
    return _entity(
        "lead",
        "leads",
        "leadid",
        "fullname",
        [
            _a("leadid", "uniqueidentifier"),
            _s("subject", 300),
            _s("firstname", 50),
            _s("lastname", 50),
            _ro("fullname", "string", max_length=160),
            _s("companyname", 100),
            _s("jobtitle", 100),
            _s("emailaddress1", 100),
            _s("telephone1", 50),
            _a("revenue", "money"),
            _a("numberofemployees", "integer"),
            _a(
                "leadsourcecode",
                "picklist",
                options={
                    1: "Advertisement",
                    2: "Employee Referral",
                    3: "External Referral",
                    4: "Partner",
                    5: "Public Relations",
                    6: "Seminar",
                    7: "Trade Show",
                    8: "Web",
                    9: "Word of Mouth",
                    10: "Other",
                },
            ),
            _a("leadqualitycode", "picklist", options={1: "Hot", 2: "Warm", 3: "Cold"}),
            _a("statecode", "state", options={0: "Open", 1: "Qualified", 2: "Disqualified"}),
            _a(
                "statuscode",
                "status",
                options={
                    1: "New",
                    2: "Contacted",
                    3: "Qualified",
                    4: "Lost",
                    5: "Cannot Contact",
                    6: "No Longer Interested",
                    7: "Canceled",
                },
            ),
            _a(
                "parentaccountid",
                "lookup",
                targets=("account",),
                nav_names={"account": "parentaccountid"},
            ),
            _a(
                "customerid",
                "customer",
                targets=("account", "contact"),
                nav_names={"account": "customerid_account", "contact": "customerid_contact"},
            ),
            *_system_columns("lead", money=True),
        ],
        description="Prospect or potential sales opportunity.",
    )


def _systemuser() -> Entity:
    cols = [
        _a("systemuserid", "uniqueidentifier"),
        _ro("ownerid", "uniqueidentifier", description="Principal id (same as systemuserid)."),
        _s("firstname", 64),
        _s("lastname", 64),
        _ro("fullname", "string", max_length=200),
        _s("domainname", 1024),
        _s("internalemailaddress", 100),
        _s("title", 128),
        _s("mobilephone", 64),
        _a("isdisabled", "boolean"),
        _ro("azureactivedirectoryobjectid", "uniqueidentifier"),
        _a(
            "accessmode",
            "picklist",
            options={
                0: "Read-Write",
                1: "Administrative",
                2: "Read",
                3: "Support User",
                4: "Non-interactive",
            },
        ),
        _a(
            "parentsystemuserid",
            "lookup",
            targets=("systemuser",),
            nav_names={"systemuser": "parentsystemuserid"},
            description="Manager of the user.",
        ),
    ]
    cols += list(_system_columns("systemuser", owned=False))
    return _entity(
        "systemuser",
        "systemusers",
        "systemuserid",
        "fullname",
        cols,
        base_type="principal",
        description="Person with access to the Microsoft CRM system.",
    )


def _team() -> Entity:
    cols = [
        _a("teamid", "uniqueidentifier"),
        _ro("ownerid", "uniqueidentifier", description="Principal id (same as teamid)."),
        _s("name", 160),
        _s("emailaddress", 100),
        _a("description", "memo", max_length=2000),
        _a(
            "teamtype",
            "picklist",
            options={0: "Owner", 1: "Access", 2: "Security Group", 3: "Office Group"},
        ),
        _ro("isdefault", "boolean"),
        _a(
            "administratorid",
            "lookup",
            targets=("systemuser",),
            nav_names={"systemuser": "administratorid"},
        ),
    ]
    cols += _system_columns("team", owned=False)
    return _entity(
        "team",
        "teams",
        "teamid",
        "name",
        cols,
        base_type="principal",
        description="Collection of system users that routinely collaborate.",
    )


def _transactioncurrency() -> Entity:
    return _entity(
        "transactioncurrency",
        "transactioncurrencies",
        "transactioncurrencyid",
        "currencyname",
        [
            _a("transactioncurrencyid", "uniqueidentifier"),
            _s("currencyname", 100),
            _s("isocurrencycode", 5),
            _s("currencysymbol", 10),
            _a("currencyprecision", "integer"),
            _a("exchangerate", "decimal", precision=10),
            _a("statecode", "state", options=STATE_ACTIVE_INACTIVE),
            _a("statuscode", "status", options=STATUS_ACTIVE_INACTIVE),
            *list(_system_columns("transactioncurrency", owned=False)),
        ],
        alternate_keys=[("isocurrencycode_key", ("isocurrencycode",))],
        description="Currency in which a financial transaction is carried out.",
    )


def _new_project() -> Entity:
    return _entity(
        "new_project",
        "new_projects",
        "new_projectid",
        "new_name",
        [
            _a("new_projectid", "uniqueidentifier"),
            _s("new_name", 100),
            _s("new_code", 20),
            _a(
                "new_accountid",
                "lookup",
                targets=("account",),
                nav_names={"account": "new_AccountId"},
                description="Customer account of the project.",
            ),
            _a("new_budget", "money"),
            _a("new_startdate", "dateonly"),
            _a("new_enddate", "dateonly"),
            _a("new_hoursestimate", "decimal", precision=2),
            _a("new_completion", "double"),
            _a("new_isbillable", "boolean"),
            _a(
                "new_phase",
                "picklist",
                options={
                    100000000: "Discovery",
                    100000001: "Build",
                    100000002: "Rollout",
                    100000003: "Closed",
                },
            ),
            _a("statecode", "state", options=STATE_ACTIVE_INACTIVE),
            _a("statuscode", "status", options=STATUS_ACTIVE_INACTIVE),
            *_system_columns("new_project", money=True),
        ],
        # A composite alternate key, as custom tables often have.
        alternate_keys=[("new_code_account_key", ("new_code", "new_accountid"))],
        is_custom=True,
        change_tracking=False,
        description="Customer project (custom table).",
    )


def _principal() -> Entity:
    return _entity(
        "principal",
        "principals",
        "ownerid",
        None,
        [_a("ownerid", "uniqueidentifier")],
        abstract=True,
        description="Abstract owner: a user or a team.",
    )


def standard_model() -> Model:
    """The Customer Service organisation the emulator serves by default."""
    entities = [
        _principal(),
        _account(),
        _contact(),
        _incident(),
        _activitypointer(),
        _email(),
        _phonecall(),
        _task(),
        _opportunity(),
        _lead(),
        _systemuser(),
        _team(),
        _transactioncurrency(),
        _new_project(),
    ]
    return Model({e.logical_name: e for e in entities})
