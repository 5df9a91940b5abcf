"""site tracking: an identify call links a visitor only with proof; drop the links made without

Until this revision ``nurture.identify({email})`` linked any visitor to the contact with
that address, proof or not, so anyone could attach browsing (and the workflows it
triggers) to a known contact. Those links (``site_visitors.source = 'identify'``) are
removed: the visitors' later events stay anonymous until they identify with proof (an
email click's signed id, or the site's identity hash). Events already stored stay.

Revision ID: 0761
Revises: 0760
Create Date: 2026-12-08 03:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0761"
down_revision: str | Sequence[str] | None = "0760"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    visitors = sa.table("site_visitors", sa.column("source", sa.String))
    op.execute(sa.delete(visitors).where(visitors.c.source == "identify"))


def downgrade() -> None:
    """The links removed were unproven; nothing brings them back."""
