"""Imports every model module so the metadata is complete (Alembic, create_all)."""

from automation import leases as leases_models
from automation import policy as policy_models
from automation.accounts import models as accounts_models
from automation.campaigns import models as campaigns_models
from automation.contacts import models as contacts_models
from automation.contacts import suppressions as suppressions_models
from automation.db import Base
from automation.email import models as email_models
from automation.forms import models as forms_models
from automation.segments import models as segments_models
from automation.tracking import models as tracking_models
from automation.workflows import models as workflows_models

__all__ = [
    "Base",
    "accounts_models",
    "campaigns_models",
    "contacts_models",
    "email_models",
    "forms_models",
    "leases_models",
    "policy_models",
    "segments_models",
    "suppressions_models",
    "tracking_models",
    "workflows_models",
]
