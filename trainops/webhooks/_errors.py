"""The two ways a webhook delivery is refused.

They live here until ``trainops.errors`` takes them in; import them from
``trainops.webhooks`` so that move changes nothing for callers.
"""

from __future__ import annotations

from trainops.errors import TrainopsError


class WebhookRejected(TrainopsError):
    """The delivery cannot be shown to come from the forge (HTTP 401).

    A bad or missing signature or token. Nothing of the body has been read
    when this is raised, so the message never describes its content.
    """


class MalformedDelivery(TrainopsError):
    """An authenticated delivery that cannot be read (HTTP 400).

    The body is not a JSON object, or a header or field the event needs is
    missing or of the wrong type; the message names the header or field.
    """
