"""connbudget for psycopg_pool: size a ConnectionPool from its pod's share
of the PostgreSQL server's connection budget.

    pool = ConnectionPool(conninfo, kwargs=connbudget.connect_kwargs("api"),
                          max_size=20, open=False)
    with connbudget.follow(pool) as budget:
        ...
"""

from .pool import Budget, IdentityError, Refused, check_id, connect_kwargs, follow

__version__ = "0.1.0"

__all__ = ["Budget", "IdentityError", "Refused", "check_id", "connect_kwargs", "follow"]
