"""What the web pages (:mod:`keysentry.dashboard`, :mod:`keysentry.portal`) share: templates,
signed cookie sessions, CSRF tokens, form bodies, security headers, static files.

Needs the ``web`` extra (Jinja2 and itsdangerous); importing :mod:`keysentry` does not load it.
"""
