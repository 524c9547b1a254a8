"""The ``keysentry`` command: manage apps, rate-limit schemes and keys from a shell.

A thin shell over :class:`~keysentry.KeySentry`: each subcommand parses its flags, makes one
call and prints the result as a table (default) or as JSON (``--json``). The store comes from
``--database-url``, else ``$KEYSENTRY_DATABASE_URL``, else ``sqlite:///./keysentry.db``.

User mistakes print one ``keysentry: error: …`` line and exit 1 (2 for bad flags); they
never print a traceback. A key's secret is printed only by ``keys create`` and ``keys rotate``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from keysentry._cli_commands import Handler, build_parser
from keysentry._cli_format import render
from keysentry.errors import KeySentryError
from keysentry.service import KeySentry
from keysentry.settings import LIMITER_URL_ENV, database_url_from_env

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with *argv* (default: ``sys.argv[1:]``) and return the exit status."""
    try:
        status = _main(argv)
        sys.stdout.flush()  # a closed pipe shows here, not at exit where it would print
    except BrokenPipeError:
        # the reader went away (`keysentry keys list APP | head`): stop quietly, as a filter
        # killed by SIGPIPE would; later writes to stdout go nowhere
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    return status


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or --help)
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], int] | None = getattr(args, "command", None)
    if command is not None:  # serve, demo: long-running, no store opened here
        try:
            return command(args)
        except KeySentryError as exc:
            print(f"keysentry: error: {exc}", file=sys.stderr)
            return 1
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        url = database_url_from_env(getattr(args, "database_url", None))
        # with $KEYSENTRY_LIMITER_URL on Redis, changes are announced to running apps at once
        with KeySentry(url, limiter_url=os.environ.get(LIMITER_URL_ENV) or None) as ks:
            result = handler(ks, args)
    except KeySentryError as exc:
        print(f"keysentry: error: {exc}", file=sys.stderr)
        return 1
    if getattr(args, "json", False):
        print(json.dumps(_jsonable(result), indent=2))
    else:
        print(render(result))
    if hasattr(result, "secret"):
        print("Store this secret now: it is shown only once.", file=sys.stderr)
    if getattr(result, "allowed", True) is False:
        return 3  # `keysentry verify`: refused
    return 0


def _jsonable(result: Any) -> Any:
    if isinstance(result, list):
        return [_jsonable(item) for item in result]
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    to_json = getattr(result, "to_json", None)  # the usage reports
    return to_json() if to_json is not None else result
