"""Segments: one filter-tree language compiled to SQL, evaluated in Python, explained.

The API other areas use (documented in docs/segments.md):

- ``validate_filter(session, raw)``: parse and check a tree; InvalidInput names JSON paths.
- ``matching_ids(session, tree, among_ids=None)``: a ``Select`` of matching contact ids.
- ``count_matching(session, tree)``, ``contact_matches(session, tree, contact_id)``.
- ``explain(session, tree, contact_id)``: each node's result and the values observed.
- ``audience_ids(session, include=[...], exclude=[...])``: contacts in any included segment
  and in no excluded one (campaign audiences).
"""
