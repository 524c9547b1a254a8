"""What every adapter shares, written once: options compiled at construction
(:mod:`.config`), request facts from a scope or an environ (:mod:`.facts`), the identity put
where each framework looks (:mod:`.identity`), refusals rendered for ASGI, WSGI, Starlette and
Flask (:mod:`.render`), one handler's requirements and the unexpected-error guard
(:mod:`.guard`), and the trusted-proxy rule for client addresses (:mod:`.proxies`).

The adapters (``keysentry.asgi``, ``.wsgi``, ``.decorators``, ``.fastapi``, ``.flask``,
``.admin``) import from here and never from each other.
"""
