from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from automation.db import Base, UTCDateTime


class Lease(Base):
    """A named, expiring claim: which process runs a singleton job (a periodic tick).

    Several beat schedulers may fire the same periodic task; the task body runs only in
    the process holding the lease, so losing a scheduler host never stops the work and
    two schedulers never double it.
    """

    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
