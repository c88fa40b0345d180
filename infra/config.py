"""The CDK app's configuration: ``cdk.json`` context keys, read and checked before any construct is built.

Every key is ``conveyor:<name>``, so ``npx cdk deploy -c conveyor:stage=prod`` overrides one without touching the
file. Objects (``conveyor:database``, ``conveyor:relay``, ``conveyor:alarms``) may be given as JSON text on the
command line. Any mistake stops the synth with a :class:`ConfigError` naming the key, the value and what is
allowed — not a CloudFormation failure twenty minutes into a deploy.

Keys (see README "Deploying"):

``conveyor:stage``             environment name, part of every resource name (``dev``, ``prod``; 1-16 a-z0-9)
``conveyor:registry``          ``module:attribute`` of the job registry (default ``shared.jobs:registry``)
``conveyor:architecture``      ``arm64`` (default) or ``x86_64``
``conveyor:logRetentionDays``  CloudWatch Logs retention for every function (default 30)
``conveyor:database``          ``{"mode": "existing", "secretArn", "vpcId", "subnetIds", "securityGroupId",
                               "proxyEndpoint"?, "host"?, "dbname"?, "secretKmsKeyArn"?}`` or
                               ``{"mode": "create", "minCapacity"?, "maxCapacity"?}``
``conveyor:relay``             ``{"mode": "resident" | "on-demand", "reservedConcurrency"?}`` (no reservation unless
                               given: a reservation needs the account's unreserved concurrency to stay >= 100 after it)
``conveyor:alarms``            ``{"email"?, "oldestMessageAgeSeconds"?, "relayLagSeconds"?}``
``conveyor:emailFrom``         the From address of ``email.send``: a verified SES identity (required by jobs that send
                               email; their IAM policy allows sending only as this address)
``conveyor:api``               the operations API: ``{"issuer"?, "audience"?, "rateLimit"?, "burstLimit"?}``. With an
                               ``issuer`` (the https URL of a JWT issuer) and its ``audience`` (a client id, or a list),
                               every data route takes a JWT authorizer with per-route scopes; without one, every data
                               route requires IAM (SigV4) auth instead, so an unconfigured API is never open.
                               ``rateLimit``/``burstLimit``: the stage's throttling (default 10 requests/s, burst 20)
``conveyor:integrations``      ``{"<name>": {"url": "https://..."}}`` for the HTTP integrations (``push``, ``receipts``,
                               ``pos``, ``bank``, ``sms``): each URL goes to the functions of the jobs that declare the
                               integration in the registry, as ``CONVEYOR_<NAME>_URL``; a job's required integration
                               without a URL stops the synth (``sms`` is optional: SNS unless a gateway URL is set).
                               The token stays in Secrets Manager, secret ``conveyor/<stage>/<name>``
``conveyor:opsEmail``          where ``orders.digest`` sends the operations digest (``CONVEYOR_OPS_EMAIL``; required by
                               jobs that read it)
"""

from __future__ import annotations

import json
import re
from urllib.parse import urlsplit
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.integrations import INTEGRATIONS
from shared.names import ResourceNameError, check_stage
from shared.settings import DEFAULT_REGISTRY, OPS_EMAIL

PREFIX = "conveyor:"
ARCHITECTURES = ("arm64", "x86_64")
RELAY_MODES = ("resident", "on-demand")
# The values CloudWatch Logs accepts for a retention period.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)

# The complete ARN, with the 6-character suffix Secrets Manager adds (a partial ARN cannot be told apart from a
# complete one whose name ends in "-" and six characters, and IAM would then deny reads). RDS-managed secrets are
# named "rds!…".
SECRET_ARN_RE = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@!-]+-[A-Za-z0-9]{6}$")
KMS_KEY_ARN_RE = re.compile(r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}$")
DBNAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,62}$")
VPC_ID_RE = re.compile(r"^vpc-[0-9a-f]{8,17}$")
SUBNET_ID_RE = re.compile(r"^subnet-[0-9a-f]{8,17}$")
SECURITY_GROUP_ID_RE = re.compile(r"^sg-[0-9a-f]{8,17}$")
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Domains reserved for documentation and testing (RFC 2606): no one can verify them in SES, so a sender there is a
# placeholder that makes every email fail.
PLACEHOLDER_DOMAINS = ("example.com", "example.net", "example.org")
PLACEHOLDER_TLDS = ("example", "test", "invalid", "localhost")


class ConfigError(ValueError):
    """A context value the app cannot use; the message names the key and what it accepts."""


@dataclass(frozen=True)
class ExistingDatabase:
    """A PostgreSQL the user runs: Conveyor's functions join its VPC and read its RDS-format secret."""

    secret_arn: str
    vpc_id: str
    subnet_ids: tuple[str, ...]
    security_group_id: str
    proxy_endpoint: str | None = None
    host: str | None = None
    dbname: str | None = None
    secret_kms_key_arn: str | None = None


@dataclass(frozen=True)
class CreatedDatabase:
    """Aurora Serverless v2 PostgreSQL, an RDS Proxy and a rotating secret, created by the stack."""

    min_capacity: float = 0.5
    max_capacity: float = 4.0


@dataclass(frozen=True)
class RelayConfig:
    mode: str = "resident"
    # None reserves nothing. Lambda refuses a reservation that leaves the account fewer than 100 unreserved
    # executions, and new accounts start with a limit of 10, so a default reservation would fail their first deploy;
    # none is needed for safety either, since relays running at once claim different rows.
    reserved_concurrency: int | None = None


@dataclass(frozen=True)
class AlarmConfig:
    email: str | None = None
    oldest_message_age_seconds: int = 300
    relay_lag_seconds: int = 60


@dataclass(frozen=True)
class ApiConfig:
    """The operations API's caller authentication (``infra.operations``): JWT when an issuer is set, else IAM."""

    issuer: str | None = None
    audience: tuple[str, ...] = ()
    # Put before each scope name in the routes and stripped by the function: Cognito's "<resource server>/".
    scope_prefix: str = ""
    rate_limit: int = 10
    burst_limit: int = 20

    @property
    def uses_jwt(self) -> bool:
        return self.issuer is not None


@dataclass(frozen=True)
class IntegrationConfig:
    """One HTTP integration's endpoint: its base URL (the client appends each request's path)."""

    url: str


@dataclass(frozen=True)
class ConveyorConfig:
    stage: str
    database: ExistingDatabase | CreatedDatabase
    registry: str = DEFAULT_REGISTRY
    architecture: str = "arm64"
    log_retention_days: int = 30
    relay: RelayConfig = RelayConfig()
    alarms: AlarmConfig = AlarmConfig()
    email_from: str | None = None
    api: ApiConfig = ApiConfig()
    integrations: Mapping[str, IntegrationConfig] = field(default_factory=dict)
    ops_email: str | None = None

    def job_setting(self, variable: str) -> tuple[str, str | None]:
        """The context key and configured value behind a setting a job reads (``JobSpec.environment``)."""
        keys = {OPS_EMAIL: ("opsEmail", self.ops_email)}
        key, configured = keys[variable]
        return PREFIX + key, configured


def load_config(context: Callable[[str], Any] | Mapping[str, Any]) -> ConveyorConfig:
    """Read the ``conveyor:*`` keys from a CDK node's ``try_get_context`` (or a plain mapping, in tests)."""
    get = context.get if isinstance(context, Mapping) else context

    def value(name: str) -> Any:
        return get(PREFIX + name)

    stage = _string(value("stage"), "stage", default="dev")
    try:
        check_stage(stage)
    except ResourceNameError as exc:
        raise ConfigError(f"{PREFIX}stage: {exc}") from None
    registry = _string(value("registry"), "registry", default=DEFAULT_REGISTRY)
    if ":" not in registry:
        raise ConfigError(f"{PREFIX}registry must look like 'package.module:attribute', got {registry!r}")
    architecture = _choice(value("architecture"), "architecture", ARCHITECTURES, default="arm64")
    retention = _integer(value("logRetentionDays"), "logRetentionDays", default=30)
    if retention not in LOG_RETENTION_DAYS:
        raise ConfigError(
            f"{PREFIX}logRetentionDays={retention} is not a CloudWatch Logs retention; use one of "
            f"{', '.join(map(str, LOG_RETENTION_DAYS))}"
        )
    email_from = value("emailFrom")
    if email_from is not None and (not isinstance(email_from, str) or not EMAIL_RE.match(email_from)):
        raise ConfigError(f"{PREFIX}emailFrom={email_from!r} is not an email address")
    ops_email = value("opsEmail")
    if ops_email is not None and (not isinstance(ops_email, str) or not EMAIL_RE.match(ops_email)):
        raise ConfigError(f"{PREFIX}opsEmail={ops_email!r} is not an email address")
    return ConveyorConfig(
        stage=stage,
        registry=registry,
        architecture=architecture,
        log_retention_days=retention,
        database=_database(_object(value("database"), "database")),
        relay=_relay(_object(value("relay"), "relay", default={})),
        alarms=_alarms(_object(value("alarms"), "alarms", default={})),
        email_from=email_from,
        api=_api(_object(value("api"), "api", default={})),
        integrations=_integrations(_object(value("integrations"), "integrations", default={})),
        ops_email=ops_email,
    )


def is_placeholder_email(address: str) -> bool:
    """Whether ``address`` is at a domain reserved for examples (``no-reply@example.com``), not a real sender."""
    return is_placeholder_domain(address.rpartition("@")[2])


def is_placeholder_url(url: str) -> bool:
    """Whether ``url``'s host is a domain reserved for examples (``https://receipts.example.com``)."""
    return is_placeholder_domain(urlsplit(url).hostname or "")


def is_placeholder_domain(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return domain.rpartition(".")[2] in PLACEHOLDER_TLDS or any(
        domain == reserved or domain.endswith("." + reserved) for reserved in PLACEHOLDER_DOMAINS
    )


# -- sections --------------------------------------------------------------------------------------------------


def _database(raw: dict[str, Any]) -> ExistingDatabase | CreatedDatabase:
    key = f"{PREFIX}database"
    mode = _choice(raw.get("mode"), "database.mode", ("existing", "create"))
    if mode == "create":
        _no_extra(raw, {"mode", "minCapacity", "maxCapacity"}, key)
        low = _number(raw.get("minCapacity"), "database.minCapacity", default=0.5)
        high = _number(raw.get("maxCapacity"), "database.maxCapacity", default=4.0)
        for name, capacity in (("minCapacity", low), ("maxCapacity", high)):
            if not 0 <= capacity <= 256 or (capacity * 2) != int(capacity * 2):
                raise ConfigError(f"{key}.{name}={capacity} must be 0-256 ACUs in steps of 0.5")
        if high < max(low, 1):
            raise ConfigError(f"{key}.maxCapacity={high} must be at least 1 and at least minCapacity ({low})")
        return CreatedDatabase(min_capacity=low, max_capacity=high)
    _no_extra(
        raw, {"mode", "secretArn", "vpcId", "subnetIds", "securityGroupId", "proxyEndpoint", "host", "dbname", "secretKmsKeyArn"}, key
    )
    secret_arn = _matching(
        raw.get("secretArn"), "database.secretArn", SECRET_ARN_RE,
        "the complete ARN of a Secrets Manager secret (ending in '-' and the 6 characters AWS adds)",
    )  # fmt: skip
    vpc_id = _matching(raw.get("vpcId"), "database.vpcId", VPC_ID_RE, "a VPC id like vpc-0abc…")
    subnets = raw.get("subnetIds")
    if not isinstance(subnets, list) or not subnets:
        raise ConfigError(f"{key}.subnetIds must be a non-empty list of subnet ids (private subnets that reach the database)")
    subnet_ids = tuple(_matching(s, "database.subnetIds[]", SUBNET_ID_RE, "a subnet id like subnet-0abc…") for s in subnets)
    if len(set(subnet_ids)) != len(subnet_ids):
        raise ConfigError(f"{key}.subnetIds lists a subnet more than once: {list(subnet_ids)}")
    group = _matching(raw.get("securityGroupId"), "database.securityGroupId", SECURITY_GROUP_ID_RE, "a security group id like sg-0abc…")
    proxy = _optional(raw, "proxyEndpoint", HOSTNAME_RE, "a hostname (the RDS Proxy endpoint)")
    host = _optional(raw, "host", HOSTNAME_RE, "a hostname")
    dbname = _optional(raw, "dbname", DBNAME_RE, "a PostgreSQL database name")
    key_arn = _optional(raw, "secretKmsKeyArn", KMS_KEY_ARN_RE, "a KMS key ARN")
    return ExistingDatabase(secret_arn, vpc_id, subnet_ids, group, proxy, host, dbname, key_arn)


def _relay(raw: dict[str, Any]) -> RelayConfig:
    _no_extra(raw, {"mode", "reservedConcurrency"}, f"{PREFIX}relay")
    mode = _choice(raw.get("mode"), "relay.mode", RELAY_MODES, default="resident")
    reserved = raw.get("reservedConcurrency")
    if reserved is not None:
        reserved = _integer(reserved, "relay.reservedConcurrency", default=0)
        if not 1 <= reserved <= 10:
            raise ConfigError(
                f"{PREFIX}relay.reservedConcurrency={reserved} must be 1-10 (each relay holds a database connection), "
                "or left out to reserve none"
            )
    return RelayConfig(mode=mode, reserved_concurrency=reserved)


def _alarms(raw: dict[str, Any]) -> AlarmConfig:
    _no_extra(raw, {"email", "oldestMessageAgeSeconds", "relayLagSeconds"}, f"{PREFIX}alarms")
    email = raw.get("email")
    if email is not None and (not isinstance(email, str) or not EMAIL_RE.match(email)):
        raise ConfigError(f"{PREFIX}alarms.email={email!r} is not an email address")
    age = _integer(raw.get("oldestMessageAgeSeconds"), "alarms.oldestMessageAgeSeconds", default=300)
    lag = _integer(raw.get("relayLagSeconds"), "alarms.relayLagSeconds", default=60)
    for name, seconds in (("oldestMessageAgeSeconds", age), ("relayLagSeconds", lag)):
        if seconds < 1:
            raise ConfigError(f"{PREFIX}alarms.{name}={seconds} must be a positive number of seconds")
    return AlarmConfig(email=email, oldest_message_age_seconds=age, relay_lag_seconds=lag)


def _api(raw: dict[str, Any]) -> ApiConfig:
    key = f"{PREFIX}api"
    _no_extra(raw, {"issuer", "audience", "scopePrefix", "rateLimit", "burstLimit"}, key)
    issuer, audience = raw.get("issuer"), raw.get("audience")
    if issuer is not None:
        issuer = _issuer(issuer)
        if isinstance(audience, str):
            audience = [audience]
        if not isinstance(audience, list) or not audience or not all(isinstance(a, str) and a.strip() for a in audience):
            raise ConfigError(
                f"{key}.audience={audience!r} must be the audience your tokens carry (a client id, or a list of them): "
                "API Gateway's JWT authorizer refuses a token whose aud (or client_id) is not one of them"
            )
    elif audience is not None:
        raise ConfigError(f"{key}.audience is set but {key}.issuer is not: a JWT audience needs the issuer of the tokens")
    prefix = raw.get("scopePrefix", "")
    if prefix != "":
        if issuer is None:
            raise ConfigError(f"{key}.scopePrefix is set but {key}.issuer is not: scopes come with JWT tokens")
        if not isinstance(prefix, str) or len(prefix) > 200 or any(c.isspace() for c in prefix) or not prefix.endswith("/"):
            raise ConfigError(
                f"{key}.scopePrefix={prefix!r} must be what your identity provider puts before each scope name, "
                "ending in '/' (Cognito: the resource server identifier and '/', e.g. 'conveyor/' for conveyor/jobs:read)"
            )
    rate = _integer(raw.get("rateLimit"), "api.rateLimit", default=10)
    burst = _integer(raw.get("burstLimit"), "api.burstLimit", default=20)
    for name, limit in (("rateLimit", rate), ("burstLimit", burst)):
        if not 1 <= limit <= 10_000:
            raise ConfigError(f"{key}.{name}={limit} must be 1-10000 requests (per second for rateLimit)")
    return ApiConfig(
        issuer=issuer, audience=tuple(audience or ()), scope_prefix=prefix, rate_limit=rate, burst_limit=burst
    )


def _integrations(raw: dict[str, Any]) -> dict[str, IntegrationConfig]:
    key = f"{PREFIX}integrations"
    unknown = sorted(set(raw) - set(INTEGRATIONS))
    if unknown:
        raise ConfigError(f"{key} names unknown integrations {unknown}; known: {', '.join(INTEGRATIONS)}")
    configured = {}
    for name in INTEGRATIONS:
        if name not in raw:
            continue
        entry = raw[name]
        if not isinstance(entry, dict):
            raise ConfigError(f'{key}.{name} must be an object like {{"url": "https://{name}.example.net/v1"}}, got {entry!r}')
        _no_extra(entry, {"url"}, f"{key}.{name}")
        configured[name] = IntegrationConfig(url=_https_url(entry.get("url"), f"integrations.{name}.url"))
    return configured


def _https_url(
    raw: Any, name: str, *, what: str = "an https base URL like https://api.example.net/v1 (no user, query or fragment)"
) -> str:
    """An https URL (a token travels with every request) with a host that has a dot, a path at most: no credentials,
    query or fragment (an integration's client appends each request's path to it)."""
    if not isinstance(raw, str):
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {what}")
    try:
        parts = urlsplit(raw)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {what}") from None
    usable = parts.scheme == "https" and "." in (parts.hostname or "") and port_ok
    if not usable or parts.username or parts.query or parts.fragment or any(c.isspace() for c in raw):
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {what}")
    return raw


def _issuer(raw: Any) -> str:
    """The JWT issuer: API Gateway fetches its keys from ``<issuer>/.well-known/openid-configuration`` over HTTPS and
    compares it with each token's ``iss`` claim, so it must be an https URL without query or fragment."""
    return _https_url(
        raw,
        "api.issuer",
        what="an https URL of a JWT issuer, exactly as the tokens' iss claim has it (e.g. "
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbCdEf123 or https://example.eu.auth0.com/)",
    )


# -- values --------------------------------------------------------------------------------------------------------


def _object(raw: Any, name: str, *, default: dict[str, Any] | None = None) -> dict[str, Any]:
    if raw is None:
        if default is None:
            raise ConfigError(
                f"{PREFIX}{name} is missing: set it in cdk.json context (see README 'Deploying'), e.g. "
                '{"mode": "existing", "secretArn": "arn:aws:secretsmanager:…", "vpcId": "vpc-…", '
                '"subnetIds": ["subnet-…"], "securityGroupId": "sg-…"} or {"mode": "create"}'
            )
        return dict(default)
    if isinstance(raw, str):  # from the command line: -c 'conveyor:relay={"mode": "on-demand"}'
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{PREFIX}{name} is not valid JSON: {exc.msg} at position {exc.pos}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{PREFIX}{name} must be an object, got {type(raw).__name__}")
    return raw


def _no_extra(raw: Mapping[str, Any], allowed: set[str], key: str) -> None:
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{key} has unknown keys {unknown}; allowed: {sorted(allowed)}")


def _string(raw: Any, name: str, *, default: str) -> str:
    if raw is None:
        return default
    if not isinstance(raw, str) or not raw:
        raise ConfigError(f"{PREFIX}{name} must be a non-empty string, got {raw!r}")
    return raw


def _choice(raw: Any, name: str, allowed: tuple[str, ...], *, default: str | None = None) -> str:
    if raw is None and default is not None:
        return default
    if raw not in allowed:
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not one of {', '.join(allowed)}")
    return raw


def _integer(raw: Any, name: str, *, default: int) -> int:
    if raw is None:
        return default
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ConfigError(f"{PREFIX}{name} must be a whole number, got {raw!r}")
    return raw


def _number(raw: Any, name: str, *, default: float) -> float:
    if raw is None:
        return default
    if isinstance(raw, str):
        try:
            raw = float(raw)
        except ValueError:
            raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{PREFIX}{name} must be a number, got {raw!r}")
    return float(raw)


def _optional(raw: Mapping[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str | None:
    """An optional ``conveyor:database`` field: absent is None, present must match."""
    value = raw.get(key)
    return None if value is None else _matching(value, f"database.{key}", pattern, what)


def _matching(raw: Any, name: str, pattern: re.Pattern[str], what: str) -> str:
    if not isinstance(raw, str) or not pattern.match(raw):
        raise ConfigError(f"{PREFIX}{name}={raw!r} is not {what}")
    return raw
