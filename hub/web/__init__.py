"""The HTTP face of the hub: webhooks in, survey pages, channel replies, the admin API, health and metrics."""

from hub.web.app import create_app

__all__ = ["create_app"]
