"""The pure core: domain values and the rules that decide, from values, what happens next.

Nothing here touches a database, a socket, a clock, SIP or a terminal: each function takes the
facts (times included) and returns a decision. The adapters around it (``dialer.storage``,
``sip``, ``dialer.metrics``, ``cli``...) gather the facts and carry the decisions out.
``lint-imports`` (pyproject.toml) keeps it so.
"""
