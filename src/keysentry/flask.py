"""Flask helpers: ``current_api_key``, the identity of the request being handled.

Needs :class:`keysentry.wsgi.KeySentryWSGIMiddleware` around ``app.wsgi_app`` (or the
``ks.require`` decorator) to have verified the request::

    from keysentry.flask import current_api_key

    @app.get("/me")
    def me():
        return {"key": current_api_key.key_id, "app": current_api_key.app_slug}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from flask import request
from werkzeug.local import LocalProxy

from keysentry.toolkit.identity import ENVIRON_KEY

if TYPE_CHECKING:
    from keysentry.core.decision import Identity

__all__ = ["current_api_key", "get_api_key"]


def get_api_key() -> Identity | None:
    """The verified identity of the current request, or ``None`` outside one."""
    return cast("Identity | None", request.environ.get(ENVIRON_KEY))


#: A proxy to the current request's :class:`~keysentry.core.decision.Identity`.
current_api_key = cast("Identity", LocalProxy(get_api_key))  # reads as the Identity it stands for
