"""HTTP face of the service: schemas, limits, batching and routes. It never packs a bit."""

from service.api.main import create_app
from service.settings import Settings

__all__ = ["Settings", "create_app"]
