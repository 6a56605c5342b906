"""The HTTP API and the web page: a thin FastAPI shell over `lookalike.Collection` (see app.py)."""

from .app import create_app
from .guard import LOCAL_HOSTS, hosts_for_bind
from .service import THUMB_SIZE

__all__ = ["LOCAL_HOSTS", "THUMB_SIZE", "create_app", "hosts_for_bind"]
