"""A Flask app behind KeySentryWSGIMiddleware on the store named by KEYSENTRY_DATABASE_URL,
for tests that serve it from its own process: ``python -m tests.servers.wsgi_app werkzeug
PORT`` or ``waitress PORT`` (the server runs in the main thread, as in production), or
``gunicorn tests.servers.wsgi_app:app``. ``last_used_at`` is written only at shutdown, so a
test can tell whether a stop lost it. Prints ``ready`` once it listens."""

from __future__ import annotations

import os
import sys

from flask import Flask, jsonify

from keysentry import KeySentry
from keysentry.flask import current_api_key
from keysentry.wsgi import KeySentryWSGIMiddleware
from tests.servers import PERMISSIONS

ks = KeySentry(os.environ["KEYSENTRY_DATABASE_URL"], usage_interval=3600)
flask_app = Flask(__name__)


@flask_app.route("/users/<user_id>", methods=["GET", "POST", "DELETE"])
def user(user_id: str) -> object:
    from flask import request

    return jsonify({"method": request.method, "key": current_api_key.key_id})


flask_app.wsgi_app = KeySentryWSGIMiddleware(  # type: ignore[method-assign]
    flask_app.wsgi_app, sentry=ks, permissions=PERMISSIONS
)
app = flask_app


def main(server: str, port: int) -> None:
    if server == "werkzeug":
        from werkzeug.serving import make_server

        httpd = make_server("127.0.0.1", port, app, threaded=True)
        print("ready", flush=True)
        httpd.serve_forever()
    else:
        import waitress

        print("ready", flush=True)
        waitress.serve(app, host="127.0.0.1", port=port, threads=2, _quiet=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
