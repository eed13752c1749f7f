"""The data model. Importing this package registers every table on SQLModel.metadata."""

from engine.models.audit import AppSetting, AuditEntry, KpiEvent
from engine.models.calls import (
    LONG_CALL_SECONDS,
    Call,
    CallEventRecord,
    CallStatus,
    MissedCallDismissal,
)
from engine.models.campaigns import (
    Arm,
    Campaign,
    CampaignKind,
    CampaignMember,
    CampaignStatus,
)
from engine.models.clients import Client, ClientNote, ClientPhone, SegmentClass
from engine.models.followups import FollowUp, FollowUpStatus
from engine.models.segments import (
    Group,
    GroupMember,
    ImportJob,
    ImportRowError,
    ImportStatus,
    SavedFilter,
)
from engine.models.users import Role, User
from engine.models.workflow import TransitionRecord, WorkflowVersion

__all__ = [
    "LONG_CALL_SECONDS",
    "AppSetting",
    "Arm",
    "AuditEntry",
    "Call",
    "CallEventRecord",
    "CallStatus",
    "Campaign",
    "CampaignKind",
    "CampaignMember",
    "CampaignStatus",
    "Client",
    "ClientNote",
    "ClientPhone",
    "FollowUp",
    "FollowUpStatus",
    "Group",
    "GroupMember",
    "ImportJob",
    "ImportRowError",
    "ImportStatus",
    "KpiEvent",
    "MissedCallDismissal",
    "Role",
    "SavedFilter",
    "SegmentClass",
    "TransitionRecord",
    "User",
    "WorkflowVersion",
]
