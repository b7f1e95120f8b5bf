"""CX Hub: the public API a plugin imports.

    from hub import hookimpl, ConnectorType, Connector, Secret, TransientError, ...

Everything a connector or channel needs is re-exported here; anything not exported is internal.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        MessageDescriber,
        PhoneEmulator,
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
        RecipientOptedOut,
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
        DeliveryStatus,
        FetchResult,
        InboundAnswer,
        InboundReply,
        InvitationRecord,
        NpsCategory,
        OutboundMessage,
        PersonOptOut,
        PersonRecord,
        PersonSummary,
        Recipient,
        ReplyMessage,
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
    from hub.secrets import EnvStr, Secret

__version__ = "0.1.0"

if TYPE_CHECKING:
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
    "DeliveryStatus",
    "DemoCase",
    "Emulator",
    "EmulatorType",
    "EnvStr",
    "FetchResult",
    "HubError",
    "InboundAnswer",
    "InboundReply",
    "InvitationRecord",
    "MessageDescriber",
    "NpsCategory",
    "OutboundMessage",
    "PersonOptOut",
    "PersonRecord",
    "PersonSummary",
    "PhoneEmulator",
    "PluginContext",
    "Recipient",
    "RecipientOptedOut",
    "RegisterChannel",
    "RegisterConnector",
    "RegisterEmulator",
    "ReplyMessage",
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


#: where each public name lives. Importing ``hub`` stays cheap (``cxhub --help`` must not load pydantic,
#: httpx or SQLAlchemy); a name is imported from its module the first time a plugin asks for it.
_EXPORTS: dict[str, str] = {
    "Channel": "hub.contracts",
    "ChannelEmulator": "hub.contracts",
    "PhoneEmulator": "hub.contracts",
    "ChannelType": "hub.contracts",
    "Connector": "hub.contracts",
    "ConnectorEmulator": "hub.contracts",
    "ConnectorType": "hub.contracts",
    "DemoCase": "hub.contracts",
    "Emulator": "hub.contracts",
    "EmulatorType": "hub.contracts",
    "MessageDescriber": "hub.contracts",
    "PluginContext": "hub.contracts",
    "RegisterChannel": "hub.contracts",
    "RegisterConnector": "hub.contracts",
    "RegisterEmulator": "hub.contracts",
    "UsageLedger": "hub.contracts",
    "WebhookRegistrar": "hub.contracts",
    "AddressRejected": "hub.errors",
    "AuthError": "hub.errors",
    "BadInput": "hub.errors",
    "ConfigError": "hub.errors",
    "HubError": "hub.errors",
    "RecipientOptedOut": "hub.errors",
    "SkippableError": "hub.errors",
    "TransientError": "hub.errors",
    "AlertMessage": "hub.models",
    "Branding": "hub.models",
    "CaseEvent": "hub.models",
    "CaseFeedback": "hub.models",
    "CheckResult": "hub.models",
    "Delivery": "hub.models",
    "DeliveryStatus": "hub.models",
    "FetchResult": "hub.models",
    "InboundAnswer": "hub.models",
    "InboundReply": "hub.models",
    "InvitationRecord": "hub.models",
    "NpsCategory": "hub.models",
    "OutboundMessage": "hub.models",
    "PersonOptOut": "hub.models",
    "PersonRecord": "hub.models",
    "PersonSummary": "hub.models",
    "Recipient": "hub.models",
    "ReplyMessage": "hub.models",
    "ResponseRecord": "hub.models",
    "ScaleOption": "hub.models",
    "SurveyKind": "hub.models",
    "SurveyMessage": "hub.models",
    "TimelineEntry": "hub.models",
    "WebhookReply": "hub.models",
    "WebhookRequest": "hub.models",
    "WriteBackItem": "hub.models",
    "WriteBackResult": "hub.models",
    "net_promoter_score": "hub.models",
    "nps_category": "hub.models",
    "EnvStr": "hub.secrets",
    "Secret": "hub.secrets",
}


def __getattr__(name: str) -> Any:
    if name == "hookimpl":
        import pluggy

        value: Any = pluggy.HookimplMarker("cxhub")
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hub' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
