"""Campaigns: broadcasts to segments and lists, A/B tests that pick and send the winner,
and their reports."""
