"""Signed pushes of the event feed to the accounts' webhook endpoints
(Standard Webhooks): endpoint management (``endpoints``), where a request
may go (``policy``, ``guard``), signing (``signing``), the httpx seam
(``transport``) and the worker's delivery loop (``dispatcher``)."""

from mailer.webhooks.dispatcher import Dispatcher
from mailer.webhooks.endpoints import Created, Webhooks

__all__ = ["Created", "Dispatcher", "Webhooks"]
