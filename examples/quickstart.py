"""The README's quick start, runnable: python examples/quickstart.py"""

from __future__ import annotations

from keysentry import KeySentry, RateLimitRule, ValidationError

ks = KeySentry("sqlite:///./keysentry.db")   # or "postgresql://…", or "memory://"
ks.create_rate_limit_scheme(slug="standard", name="Standard",
                            rules=[RateLimitRule(unit="minute", max_requests=100)])
ks.create_api_auth_app(app_slug="internal-api", name="Internal API", key_prefix="sk_live",
                       permissions=["users:read", "users:write"], resources=["users/*"],
                       rate_limit_scheme_slug="standard")
issued = ks.create_api_key("internal-api", name="Primary", permissions=["users:read"],
                           metadata={"owner": "billing"})
print("secret, shown once:", issued.secret)
print("stored as:", issued.key.display, issued.key.rate_limits[0].short)
try:
    ks.create_api_key("internal-api", name="Too much", permissions=["admin"])
except ValidationError as exc:
    print("refused:", exc)
rotated = ks.rotate_api_key(issued.key.id)              # new secret, same key id
print("revoked at:", ks.revoke_api_key(issued.key.id, reason="leaked").revoked_at)
ks.delete_api_auth_app("internal-api")                 # clean up, so it can run again
ks.delete_rate_limit_scheme("standard")
