"""Contacts, tags, custom fields, behaviour events, consent, import and GDPR."""
