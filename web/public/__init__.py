"""The public endpoints, open to anyone with a link or on a customer's site: tracking,
unsubscribe and preferences (``tracking``), the site snippet, collect and lead-form posts
(``site``), and what both share (``pages``, ``state``). Mounted by ``create_app`` and by
``create_tracking_app`` (a process that serves only these)."""
