"""``python -m recsys_pipeline.provision``: create the warehouse's databases, users and role; nothing else.

This is the one step that needs the MySQL administrator's password
(``RECSYS_MYSQL_ADMIN_USER``/``RECSYS_MYSQL_ADMIN_PASSWORD``). docker-compose.yaml runs it
in its ``warehouse-init`` service, the only container given that password; the Airflow
containers then connect as the pipeline's own user. Natively ``recsys services`` does
the same (and starts the local S3 server).
"""

from __future__ import annotations

import sys

from recsys_pipeline import services, warehouse
from recsys_pipeline.settings import mysql_admin_settings, mysql_settings, warehouse_access_settings


def main() -> int:
    app = mysql_settings()
    access = warehouse_access_settings()
    if not services.wait_for_port(app.host, app.port, 120):
        print(f"MySQL at {app.host}:{app.port} does not answer", file=sys.stderr)
        return 1
    databases = [app.database, app.raw_database]
    warehouse.bootstrap(mysql_admin_settings(), app, databases, access)
    print(f"MySQL {app.host}:{app.port}: databases {', '.join(databases)}")
    print(f"  pipeline user {app.user} from {', '.join(access.client_hosts)}")
    analysts = f"login {access.analyst_user}" if access.analyst_password else "no login (no password set)"
    print(f"  analysts' read-only role {access.analyst_role} on {app.database}: {analysts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
