"""Verification: the two drivers of the pure pipeline (:mod:`.driver`) and stored records
compiled into what they check (:mod:`.entries`). The cache, the limiters and the
``last_used_at`` recorder they use live in ``keysentry.stores`` and ``keysentry.limiters``."""
