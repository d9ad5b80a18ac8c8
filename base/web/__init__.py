"""``bodycam-base serve``: the operators' web app (live alerts, fleet, markers) on the store of ``listen``.

Structure (later pages plug in the same way): ``db`` (the web tables and the gunshot trigger, on the
marker store's own connection), ``auth`` (users, argon2 passwords, sessions, CSRF, login rate limit,
roles), ``alerts`` (the hub that reads open alerts, woken by PostgreSQL's NOTIFY through ``alert_wake`` or on its poll, and fans them out to every page over server-sent
events), ``pages`` (one function per page), ``app`` (the Starlette app: routes, middleware, error
pages), ``cli`` (``serve`` and ``user`` subcommands). Templates (Jinja2, autoescaped) and static
assets (vendored, no CDN) are package data under ``templates/`` and ``static/``.
"""
