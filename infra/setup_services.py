#!/usr/bin/env python
"""Create the production profile's PostgreSQL databases (and optionally a role) and check Redis; idempotent.

Same as `ltrr infra setup`. Reads LTRR_PG_DSN (default postgresql://postgres@127.0.0.1:5432/postgres),
LTRR_REDIS_URL (default redis://127.0.0.1:6379/0), LTRR_DB_PREFIX / LTRR_DB_SUFFIX, LTRR_PG_ROLE_PASSWORD.

    .venv/bin/python infra/setup_services.py setup [--role ltrr_app]
    .venv/bin/python infra/setup_services.py check
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ltrr.infra import infra_app

if __name__ == "__main__":
    infra_app()
