"""Gateway webhooks: a signed, deduplicated inbox (acknowledged only once stored, I11) and the
processor that applies each event to the local payment through the monotonic state machine
(domain.payment_state), so duplicates, reorderings and stale events never move money twice or
move an object backward (I8).
"""
