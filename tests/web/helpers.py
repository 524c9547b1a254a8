"""A browser-like client for the pages: it keeps the cookies, reads each form's CSRF token,
and collects every page it was shown (to look for secrets)."""

from __future__ import annotations

import re
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.dashboard import create_dashboard_app
from keysentry.portal import create_portal_app

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SECRET = re.compile(r'id="new-secret" type="text" readonly value="([^"]+)"')
FIELD_ERROR = re.compile(r'class="field-error"[^>]*>([^<]+)<')


def pages_app(ks: KeySentry, **portal: Any) -> Starlette:
    """The dashboard and the portal, mounted as ``keysentry serve`` mounts them."""
    return Starlette(routes=[Mount("/dashboard", create_dashboard_app(ks)),
                             Mount("/portal", create_portal_app(ks, **portal))])  # fmt: skip


class Browser:
    """Cookies, CSRF tokens and every page seen."""

    def __init__(self, app: Starlette, base_url: str = "http://testserver") -> None:
        self.client = TestClient(app, base_url=base_url, follow_redirects=False)
        self.seen: list[str] = []
        self.csrf = ""

    def get(self, path: str, follow: bool = True) -> Any:
        response = self.client.get(path, follow_redirects=follow)
        self._saw(response)
        return response

    def post(self, path: str, data: dict[str, Any], *, csrf: bool = True,
             follow: bool = True) -> Any:  # fmt: skip
        body = {"csrf": self.csrf, **data} if csrf else dict(data)
        response = self.client.post(path, data=body, follow_redirects=follow)
        self._saw(response)
        return response

    def _saw(self, response: Any) -> None:
        text = response.text
        self.seen.append(text)
        found = CSRF.search(text)
        if found:
            self.csrf = found.group(1)

    def sign_in(self, secret: str) -> Any:
        self.get("/dashboard/login")
        return self.post("/dashboard/login", {"api_key": secret})

    def open_link(self, url: str) -> Any:
        """Open a portal link as a browser without JavaScript does: its page (which spends
        nothing), then its Continue button; the page that answers."""
        page = self.get(url)
        assert page.status_code == 200, page.text
        assert 'name="csrf"' in page.text
        assert "Continue" in page.text
        return self.post(url, {})


def errors(html: str) -> list[str]:
    """The field errors a page shows."""
    return FIELD_ERROR.findall(html)


def new_secret(html: str) -> str:
    """The one-time secret a page shows."""
    found = SECRET.search(html)
    assert found, "no secret on the page"
    return found.group(1)
