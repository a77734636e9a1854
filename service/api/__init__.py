"""HTTP face of the service: schemas, limits, batching and routes. It never packs a bit."""

from service.api.config import Settings
from service.api.main import create_app

__all__ = ["Settings", "create_app"]
