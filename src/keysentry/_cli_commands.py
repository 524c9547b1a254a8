"""The ``keysentry`` command line: its parser, and the handlers its subcommands call
(:mod:`keysentry.cli` runs them)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any, NoReturn

from keysentry._cli_format import integer
from keysentry._cli_serve import add_server_parsers
from keysentry._cli_usage import add_usage_parser, duration, stale_keys
from keysentry.errors import ValidationError
from keysentry.models import RateLimitRule
from keysentry.service import KeySentry
from keysentry.settings import DATABASE_URL_ENV

__all__ = ["Handler", "build_parser"]

Handler = Callable[[KeySentry, argparse.Namespace], Any]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError('must be a JSON object, e.g. \'{"team": "billing"}\'')
    return value


def _rule(text: str) -> RateLimitRule | dict[str, Any]:
    # a JSON object is validated by the service along with the rest, and named rules.N
    if text.lstrip().startswith("{"):
        return _json_object(text)
    try:
        return RateLimitRule.from_short(text)
    except ValidationError as exc:  # argparse would hide a ValueError's message
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------ handlers
# Which call keyword each flag fills (flag attribute on the right). Flags left out are not
# passed at all, so the service's defaults apply on create and fields stay as they are on update.
_APP_FLAGS = {
    "name": "name", "key_prefix": "key_prefix", "description": "description",
    "permissions": "permission", "resources": "resource", "rate_limit_scheme_slug": "scheme",
    "is_active": "active", "user_id": "user_id", "organization_id": "organization_id",
    "workspace_id": "workspace_id", "allowed_ips": "allowed_ip",
}  # fmt: skip
_KEY_FLAGS = {
    "name": "name",
    "permissions": "permission", "metadata": "metadata", "expires_at": "expires_at",
    "owner": "owner", "environment": "environment", "rate_limit_scheme_slug": "scheme",
    "owner_user_id": "owner_user_id", "organization_id": "organization_id",
    "workspace_id": "workspace_id", "allowed_ips": "allowed_ip", "credits": "credits",
}  # fmt: skip


def _given(a: argparse.Namespace, flags: dict[str, str]) -> dict[str, Any]:
    values = {field: getattr(a, attr, None) for field, attr in flags.items()}
    return {field: value for field, value in values.items() if value is not None}


def _apps_update(ks: KeySentry, a: argparse.Namespace) -> Any:
    fields = _given(a, _APP_FLAGS)
    if a.clear_permissions:
        fields["permissions"] = []
    if a.clear_resources:
        fields["resources"] = []
    if a.no_scheme:
        fields["rate_limit_scheme_slug"] = None
    if a.any_ip:
        fields["allowed_ips"] = []
    return ks.update_api_auth_app(a.app_slug, **fields)


def _schemes_update(ks: KeySentry, a: argparse.Namespace) -> Any:
    fields = {"name": a.name, "description": a.description, "rules": a.rule}
    return ks.update_rate_limit_scheme(a.slug, **{k: v for k, v in fields.items() if v})


# -------------------------------------------------------------------- parser
def _keys_list(ks: KeySentry, a: argparse.Namespace) -> Any:
    """``keysentry keys list APP [--owner-user-id ID]``"""
    return ks.list_api_keys(a.app_slug, owner_user_id=a.owner_user_id)


def _common() -> argparse.ArgumentParser:
    # Accepted both before and after the subcommand: `keysentry --json apps list` and
    # `keysentry apps list --json`. SUPPRESS keeps a leaf from overwriting the global value.
    common = _Parser(add_help=False)
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"store URL (default: ${DATABASE_URL_ENV}, else sqlite:///./keysentry.db)",
    )
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON")
    return common


def _app_fields(p: argparse.ArgumentParser, *, update: bool) -> None:
    p.add_argument("--description")
    p.add_argument(
        "--permission",
        action="append",
        metavar="PATTERN",
        help="granted permission pattern, e.g. users:* (repeat for more)",
    )
    p.add_argument(
        "--resource",
        action="append",
        metavar="PATTERN",
        help="granted resource pattern, e.g. users/* (repeat for more)",
    )
    p.add_argument("--scheme", metavar="SLUG", help="rate-limit scheme slug")
    for field in ("user-id", "organization-id", "workspace-id"):
        p.add_argument(f"--{field}")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="where the app's keys may be used from, e.g. 10.0.0.0/8 "
                   "(repeat for more; default: anywhere)")  # fmt: skip
    if update:
        p.add_argument("--any-ip", action="store_true", help="drop the address list")
        p.add_argument("--name")
        p.add_argument("--key-prefix", help="prefix for keys issued from now on")
        p.add_argument("--clear-permissions", action="store_true")
        p.add_argument("--clear-resources", action="store_true")
        p.add_argument("--no-scheme", action="store_true", help="detach the scheme")
        state = p.add_mutually_exclusive_group()
        state.add_argument("--active", dest="active", action="store_const", const=True)
        state.add_argument("--inactive", dest="active", action="store_const", const=False)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: every group and subcommand."""
    common = _common()
    parser = _Parser(
        prog="keysentry",
        parents=[common],
        description="Manage keysentry API auth apps, rate-limit schemes and API keys.",
    )
    groups: Any = parser.add_subparsers(
        dest="group", metavar="{apps,schemes,keys,usage,events,admin-key,verify,serve,demo}"
    )
    for add in (_apps, _schemes, _keys, add_usage_parser, _events_admin_verify, add_server_parsers):
        add(groups, common)
    return parser


def _leaf(
    common: argparse.ArgumentParser, sub: Any, name: str, handler: Handler, help_text: str
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, parents=[common], help=help_text)
    p.set_defaults(handler=handler)
    return p


def _apps(groups: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry apps …``"""
    apps = groups.add_parser("apps", help="API auth apps").add_subparsers(
        metavar="COMMAND", required=True
    )
    p = _leaf(
        common,
        apps,
        "create",
        lambda ks, a: ks.create_api_auth_app(a.app_slug, **_given(a, _APP_FLAGS)),
        "create an app",
    )
    p.add_argument("app_slug")
    p.add_argument("--name", required=True)
    p.add_argument("--key-prefix", required=True, help="e.g. sk_live")
    _app_fields(p, update=False)
    _leaf(common, apps, "list", lambda ks, a: ks.list_api_auth_apps(), "list live apps")
    _leaf(
        common, apps, "show", lambda ks, a: ks.get_api_auth_app(a.app_slug), "show an app"
    ).add_argument("app_slug")
    p = _leaf(common, apps, "update", _apps_update, "change an app's fields")
    p.add_argument("app_slug")
    _app_fields(p, update=True)
    _leaf(
        common,
        apps,
        "delete",
        lambda ks, a: ks.delete_api_auth_app(a.app_slug),
        "delete an app; its keys stop working",
    ).add_argument("app_slug")


def _schemes(groups: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry schemes …``"""
    schemes = groups.add_parser("schemes", help="rate-limit schemes").add_subparsers(
        metavar="COMMAND", required=True
    )
    rule_help = "100/minute[:MODE][@ENDPOINT] or a JSON rule object (repeat for more)"
    p = _leaf(
        common,
        schemes,
        "create",
        lambda ks, a: ks.create_rate_limit_scheme(
            a.slug, a.name, a.rule, description=a.description
        ),
        "create a scheme",
    )
    p.add_argument("slug")
    p.add_argument("--name", required=True)
    p.add_argument("--description")
    p.add_argument("--rule", type=_rule, action="append", required=True, help=rule_help)
    _leaf(common, schemes, "list", lambda ks, a: ks.list_rate_limit_schemes(), "list schemes")
    _leaf(
        common, schemes, "show", lambda ks, a: ks.get_rate_limit_scheme(a.slug), "show a scheme"
    ).add_argument("slug")
    p = _leaf(common, schemes, "update", _schemes_update, "change a scheme")
    p.add_argument("slug")
    p.add_argument("--name")
    p.add_argument("--description")
    p.add_argument("--rule", type=_rule, action="append", help="replaces all rules; " + rule_help)
    _leaf(
        common,
        schemes,
        "delete",
        lambda ks, a: ks.delete_rate_limit_scheme(a.slug),
        "delete an unused scheme",
    ).add_argument("slug")


def _keys(groups: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry keys …``"""
    keys = groups.add_parser("keys", help="API keys").add_subparsers(
        metavar="COMMAND", required=True
    )
    _keys_create(keys, common)
    p = _leaf(common, keys, "list", _keys_list, "list an app's keys")
    p.add_argument("app_slug")
    p.add_argument("--owner-user-id", metavar="ID", help="only the keys of this owner_user_id")
    p = _leaf(common, keys, "stale", stale_keys, "keys unused for a while, or never used")
    p.add_argument("app_slug")
    p.add_argument("--unused-for", type=duration, default=timedelta(days=30),
                   metavar="DURATION", help="e.g. 30d (default), 12w, 36h")  # fmt: skip
    _leaf(common, keys, "show", lambda ks, a: ks.get_api_key(a.key_id), "show a key").add_argument(
        "key_id"
    )
    p = _leaf(
        common,
        keys,
        "revoke",
        lambda ks, a: ks.revoke_api_key(a.key_id, reason=a.reason),
        "revoke a key",
    )
    p.add_argument("key_id")
    p.add_argument("--reason")
    p = _leaf(
        common,
        keys,
        "rotate",
        lambda ks, a: ks.rotate_api_key(a.key_id, grace_seconds=a.grace_seconds),
        "give a key a new secret (printed once)",
    )
    p.add_argument("key_id")
    p.add_argument(
        "--grace-seconds",
        type=integer,
        default=0,
        help="keep the old secret valid this long (default 0)",
    )
    _credit_commands(keys, common)


def _keys_create(keys: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry keys create APP_SLUG --name NAME …``"""
    p = _leaf(
        common,
        keys,
        "create",
        lambda ks, a: ks.create_api_key(a.app_slug, refill=_refill(a), **_given(a, _KEY_FLAGS)),
        "issue a key (prints its secret once)",
    )
    p.add_argument("app_slug")
    p.add_argument("--name", required=True)
    p.add_argument(
        "--permission",
        action="append",
        metavar="PATTERN",
        help="permission (repeat for more); default: the app's",
    )
    p.add_argument("--metadata", type=_json_object, metavar="JSON")
    p.add_argument("--expires-at", metavar="ISO8601", help="e.g. 2026-12-31T23:59:59Z")
    p.add_argument("--owner")
    p.add_argument("--environment")
    p.add_argument("--scheme", metavar="SLUG")
    for field in ("owner-user-id", "organization-id", "workspace-id"):
        p.add_argument(f"--{field}")
    p.add_argument("--allowed-ip", action="append", metavar="CIDR",
                   help="where the key may be used from, within the app's list "
                   "(repeat for more; default: the app's)")  # fmt: skip
    p.add_argument("--credits", type=integer, metavar="N",
                   help="requests the key may make (default: unlimited)")  # fmt: skip
    refill = p.add_mutually_exclusive_group()
    refill.add_argument("--refill-daily", type=integer, metavar="N",
                        help="set the credits to N at every UTC midnight")  # fmt: skip
    refill.add_argument("--refill-monthly", type=integer, metavar="N",
                        help="set the credits to N monthly, on --refill-day")  # fmt: skip
    p.add_argument("--refill-day", type=integer, metavar="DAY", help="1-28")


def _credit_commands(keys: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry keys credits KEY_ID --set N | --increment N | --decrement N``"""
    p = _leaf(common, keys, "credits", _credits, "set, add to or take from a key's credits")
    p.add_argument("key_id")
    change = p.add_mutually_exclusive_group(required=True)
    for flag in ("set", "increment", "decrement"):
        change.add_argument(f"--{flag}", type=integer, metavar="N")


def _credits(ks: KeySentry, a: argparse.Namespace) -> Any:
    changes = {k: getattr(a, k) for k in ("set", "increment", "decrement")}
    return ks.update_credits(a.key_id, **{k: v for k, v in changes.items() if v is not None})


def _refill(a: argparse.Namespace) -> dict[str, Any] | None:
    if a.refill_daily is None and a.refill_monthly is None:
        if a.refill_day is not None:
            raise ValidationError.single("refill.refill_day", "needs --refill-monthly")
        return None
    if a.refill_daily is not None:
        return {"interval": "daily", "amount": a.refill_daily, "refill_day": a.refill_day}
    return {"interval": "monthly", "amount": a.refill_monthly, "refill_day": a.refill_day}


def _events_admin_verify(groups: Any, common: argparse.ArgumentParser) -> None:
    """``keysentry events list``, ``admin-key create`` and ``verify``"""
    events = groups.add_parser("events", help="the audit log").add_subparsers(
        metavar="COMMAND", required=True
    )
    p = _leaf(common, events, "list", lambda ks, a: ks.list_events(a.after, a.limit), "list events")
    p.add_argument("--after", type=integer, default=0, metavar="SEQ")
    p.add_argument("--limit", type=integer, default=100)

    admin_keys = groups.add_parser("admin-key", help="keys for the admin HTTP API").add_subparsers(
        metavar="COMMAND", required=True
    )
    p = _leaf(common, admin_keys, "create", _admin_key_create,
             "issue a key for the admin API (prints its secret once)")  # fmt: skip
    p.add_argument("--name", default="admin")
    p.add_argument("--verify-only", action="store_true",
                   help="grant only keysentry:verify (POST /v1/authz/check)")  # fmt: skip

    p = _leaf(
        common, groups, "verify", _verify, "check a key as a request would (exit 0 if allowed)"
    )
    p.add_argument("key", help="the key, or '-' to read it from stdin (keeps it out of ps)")
    p.add_argument("--method", default="GET")
    p.add_argument("--path", default="/")
    p.add_argument("--permission", action="append", default=[], metavar="PERMISSION")
    p.add_argument("--resource")


def _admin_key_create(ks: KeySentry, a: argparse.Namespace) -> Any:
    from keysentry.admin import create_admin_key

    return create_admin_key(ks, a.name, verify_only=a.verify_only)


def _verify(ks: KeySentry, a: argparse.Namespace) -> Any:
    key = sys.stdin.readline().strip() if a.key == "-" else a.key
    decision = ks.verify(key, method=a.method, path=a.path, permissions=a.permission,
                         resource=a.resource)  # fmt: skip
    from keysentry.admin.authz import verdict

    return verdict(decision)
