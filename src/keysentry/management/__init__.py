"""Management: apps, rate-limit schemes, keys and the event log, over a key store.

Every rule about apps, schemes and keys lives here, once: the store only loads and saves.
Each call validates its input, then reads, checks and writes inside one serialized write
session, so a call that raises has written nothing; then it evicts what changed from the
verification cache (:class:`~keysentry.management._common.Invalidation`).
"""

from __future__ import annotations

from keysentry.errors import ValidationError
from keysentry.management._common import MAX_GRACE_SECONDS, Invalidation
from keysentry.management.apps import AppManagement
from keysentry.management.keys import KeyManagement
from keysentry.management.portal import PortalSessions
from keysentry.management.schemes import SchemeManagement
from keysentry.management.usage import UsageQueries
from keysentry.models import Event

__all__ = ["MAX_GRACE_SECONDS", "Invalidation", "Management"]


class Management(AppManagement, SchemeManagement, KeyManagement, UsageQueries, PortalSessions):
    """Every management call; :class:`~keysentry.KeySentry` is one."""

    def list_events(self, after_seq: int = 0, limit: int = 100) -> list[Event]:
        """Return the audit trail: events with ``seq`` above *after_seq*, oldest first.

        Raises:
            ValidationError: *after_seq* or *limit* is not a suitable integer.
        """
        if not isinstance(after_seq, int) or after_seq < 0:
            raise ValidationError.single("after_seq", "must be an integer >= 0")
        if not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise ValidationError.single("limit", "must be an integer from 1 to 10000")
        with self.store.read() as session:
            return session.events_after(after_seq, limit)
