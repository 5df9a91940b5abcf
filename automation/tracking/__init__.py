"""Tracking: signed public links (tokens), and later open/click/unsubscribe recording."""
