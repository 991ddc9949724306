"""Contract events posted to the business system's URL: signed (HMAC-SHA256, timestamped), queued
durably in SQLite in the transaction of the change they report, retried with backoff, delivered
by any number of sender threads or processes without one event going out twice at once."""

from __future__ import annotations

from .queue import DELIVERED, FAILED, QUEUED, SENDING, WebhookQueue, WebhookStatus, enqueue
from .sender import DeliveryFailed, WebhookSender
from .signature import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header, verify
from .urls import MAX_URL_LENGTH, check_webhook_url

__all__ = [
    "DELIVERED", "EVENT_ID_HEADER", "FAILED", "MAX_URL_LENGTH", "QUEUED", "SENDING", "SIGNATURE_HEADER",
    "DeliveryFailed", "WebhookQueue", "WebhookSender", "WebhookStatus", "check_webhook_url", "enqueue",
    "signature_header", "verify",
]
