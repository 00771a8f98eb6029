"""The reference email sender (``journey sender``): what a shop would otherwise write first.

It consumes ``journey.triggers``, drops a trigger it has handled before (by ``trigger_id``,
remembered in a SQLite outbox, so across restarts too), renders the trigger type's template in
the customer's language (``templates/<locale>/<TRIGGER_TYPE>.txt.j2``; Dutch or English, from the
locale in ``shop.customers``), sends it over SMTP, and publishes ``MessageEngagement`` DELIVERED
or BOUNCED back to ``shop.engagement``, so the journey learns about bounces (which stop
marketing) like from any real sender.

Delivery guarantees: at least once. A trigger's offset is committed only after its email was
accepted by the SMTP server (or definitively refused: BOUNCED), recorded in the outbox and its
engagement acknowledged by Kafka. A crash between the SMTP server's acceptance and the outbox
write sends that one email again on restart; its ``Message-ID`` is derived from the
``trigger_id``, so a mail system that deduplicates by Message-ID drops it. A temporary SMTP
failure (4xx, connection refused, timeout) is backpressure: the sender waits and retries.
"""

from streams.sender.outbox import Outbox, SentEmail
from streams.sender.render import Email, Renderer

__all__ = ["Email", "Outbox", "Renderer", "SentEmail"]
