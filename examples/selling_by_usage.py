"""The README's "Selling by usage": a key with 1,000 monthly credits, a 10-credit endpoint,
and the 429 when they run out. ``python examples/selling_by_usage.py``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from keysentry import KeySentry
from keysentry.asgi import KeySentryMiddleware
from keysentry.models import CreditRefill

ks = KeySentry("memory://")
ks.create_api_auth_app("ai-api", "AI API", "sk_ai")
issued = ks.create_api_key(
    "ai-api",
    "Acme's key",
    owner_user_id="acme",
    refill=CreditRefill(interval="monthly", amount=1000, refill_day=1),
)


async def generate(request: Request) -> JSONResponse:  # costs 10 credits
    return JSONResponse({"text": "...", "credits_left": request.state.api_key.credits_remaining})


async def status(request: Request) -> JSONResponse:  # costs 1 (the default)
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[Route("/v1/generate", generate, methods=["POST"]), Route("/v1/status", status)],
    middleware=[Middleware(KeySentryMiddleware, sentry=ks, costs={"POST /v1/generate": 10})],
)
client = TestClient(app, headers={"Authorization": f"Bearer {issued.secret}"})
for _ in range(100):
    response = client.post("/v1/generate")
print(response.status_code, response.json()["credits_left"])  # 200 0
refused = client.post("/v1/generate")
print(refused.status_code, refused.json()["errors"][0]["reason"])  # 429 usage_exceeded
print("retry after", refused.headers["retry-after"], "s: the 1st of next month, 00:00 UTC")
ks.update_credits(issued.key.id, increment=500)  # a top-up, sold separately
print(client.get("/v1/status").headers["x-credits-remaining"])  # 499
