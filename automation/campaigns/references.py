"""What a campaign not yet sent refers to, for the guards that refuse a delete.

Once a campaign has frozen its audience the segments it named no longer matter to it, so
only drafts and scheduled campaigns count. Installed into ``automation.references`` by the
wiring module.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from automation.campaigns.service import campaigns_using_segment
from automation.references import Finder, Target, User


def _using_segment(session: Session, segment_id: int) -> list[User]:
    return [User("campaign", name) for name in campaigns_using_segment(session, segment_id)]


FINDERS: dict[Target, Finder] = {Target.SEGMENT: _using_segment}
