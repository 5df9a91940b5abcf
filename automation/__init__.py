"""Nurture: marketing automation and email sequence engine (domain layer, no Flask)."""
