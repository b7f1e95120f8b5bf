"""CX Hub: the public API a plugin imports.

    from hub import hookimpl, ConnectorType, Connector, Secret, TransientError, ...

Everything a connector or channel needs is re-exported here; anything not exported is internal.
"""

from __future__ import annotations

import pluggy

from hub.contracts import (
    Channel,
    ChannelEmulator,
    ChannelType,
    Connector,
    ConnectorEmulator,
    ConnectorType,
    DemoCase,
    Emulator,
    EmulatorType,
    PluginContext,
    RegisterChannel,
    RegisterConnector,
    RegisterEmulator,
    UsageLedger,
    WebhookRegistrar,
)
from hub.errors import (
    AddressRejected,
    AuthError,
    BadInput,
    ConfigError,
    HubError,
    SkippableError,
    TransientError,
)
from hub.models import (
    AlertMessage,
    Branding,
    CaseEvent,
    CaseFeedback,
    CheckResult,
    Delivery,
    FetchResult,
    InboundAnswer,
    InboundReply,
    InvitationRecord,
    NpsCategory,
    OutboundMessage,
    PersonRecord,
    PersonSummary,
    Recipient,
    ResponseRecord,
    ScaleOption,
    SurveyKind,
    SurveyMessage,
    TimelineEntry,
    WebhookReply,
    WebhookRequest,
    WriteBackItem,
    WriteBackResult,
    net_promoter_score,
    nps_category,
)
from hub.secrets import Secret

__version__ = "0.1.0"

#: decorate a plugin's hook implementations with this
hookimpl = pluggy.HookimplMarker("cxhub")

__all__ = [
    "AddressRejected",
    "AlertMessage",
    "AuthError",
    "BadInput",
    "Branding",
    "CaseEvent",
    "CaseFeedback",
    "Channel",
    "ChannelEmulator",
    "ChannelType",
    "CheckResult",
    "ConfigError",
    "Connector",
    "ConnectorEmulator",
    "ConnectorType",
    "Delivery",
    "DemoCase",
    "Emulator",
    "EmulatorType",
    "FetchResult",
    "HubError",
    "InboundAnswer",
    "InboundReply",
    "InvitationRecord",
    "NpsCategory",
    "OutboundMessage",
    "PersonRecord",
    "PersonSummary",
    "PluginContext",
    "Recipient",
    "RegisterChannel",
    "RegisterConnector",
    "RegisterEmulator",
    "ResponseRecord",
    "ScaleOption",
    "Secret",
    "SkippableError",
    "SurveyKind",
    "SurveyMessage",
    "TimelineEntry",
    "TransientError",
    "UsageLedger",
    "WebhookRegistrar",
    "WebhookReply",
    "WebhookRequest",
    "WriteBackItem",
    "WriteBackResult",
    "__version__",
    "hookimpl",
    "net_promoter_score",
    "nps_category",
]
