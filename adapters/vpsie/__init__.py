"""The VPSie adapter: the `Cloud` port over VPSie's HTTP API (aiohttp)."""

from adapters.vpsie.client import VpsieClient
from adapters.vpsie.settings import SettingsError, VpsieSettings

__all__ = ["SettingsError", "VpsieClient", "VpsieSettings"]
