"""Interaction callbacks and interaction webhooks (follow-ups, @original), with Discord's rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .components import validate_modal
from .errors import UNKNOWN_INTERACTION, UNKNOWN_MESSAGE, UNKNOWN_WEBHOOK, RestError, form_error, unknown
from .interactions import (
    APPLICATION_COMMAND,
    AUTOCOMPLETE,
    AUTOCOMPLETE_RESULT,
    CHANNEL_MESSAGE,
    DEFERRED_CHANNEL_MESSAGE,
    DEFERRED_UPDATE,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    UPDATE_MESSAGE,
    InteractionHandle,
)
from .messages import (
    EPHEMERAL,
    LOADING,
    MESSAGE_TYPE_CHAT_INPUT_COMMAND,
    MESSAGE_TYPE_CONTEXT_MENU_COMMAND,
    MESSAGE_TYPE_DEFAULT,
    StoredMessage,
    Upload,
)
from .payloads import JSON, user_payload
from .rest import RecordedRequest, Reply, Router

if TYPE_CHECKING:
    from .server import FakeDiscord

router = Router()

ALLOWED_RESPONSES = {
    APPLICATION_COMMAND: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, MODAL},
    MESSAGE_COMPONENT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE, MODAL},
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {CHANNEL_MESSAGE, DEFERRED_CHANNEL_MESSAGE, DEFERRED_UPDATE, UPDATE_MESSAGE},
}


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true")


def _interaction_metadata(fake: FakeDiscord, handle: InteractionHandle) -> JSON:
    owners = handle.payload.get("authorizing_integration_owners", {})
    data: JSON = {"id": str(handle.id), "type": handle.type, "user": user_payload(handle.user)}
    data["authorizing_integration_owners"] = owners
    if handle.type == APPLICATION_COMMAND:
        data["name"] = handle.command_name
        data["command_type"] = handle.payload["data"].get("type", 1)
    if handle.source_message_id is not None:
        data["interacted_message_id"] = str(handle.source_message_id)
    if handle.original_message_id is not None:
        data["original_response_message_id"] = str(handle.original_message_id)
    return data


async def _create_response_message(
    fake: FakeDiscord, handle: InteractionHandle, body: JSON, files: list[Upload], flags: int
) -> StoredMessage:
    message_type = MESSAGE_TYPE_DEFAULT
    if handle.type == APPLICATION_COMMAND:
        command_type = handle.payload["data"].get("type", 1)
        message_type = MESSAGE_TYPE_CHAT_INPUT_COMMAND if command_type == 1 else MESSAGE_TYPE_CONTEXT_MENU_COMMAND
    extra = {
        "webhook_id": str(fake.application_id),
        "application_id": str(fake.application_id),
        "interaction_metadata": _interaction_metadata(fake, handle),
    }
    return await fake.create_message(
        handle.channel_id, fake.bot_user, body, files, extra=extra, flags=flags, message_type=message_type
    )


@router.route("POST", "/interactions/{interaction_id}/{token}/callback", auth=False)
async def create_callback(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Acknowledge an interaction (once, within the ack deadline)."""
    raw_id = params["interaction_id"]
    handle = fake.interactions.handles.get(int(raw_id)) if raw_id.isdigit() else None
    if handle is None or handle.token != params["token"]:
        raise unknown("interaction", UNKNOWN_INTERACTION)
    if handle.response_type is not None:
        raise RestError(400, 40060, "Interaction has already been acknowledged.")
    if fake.interaction_ack_timeout is not None and fake.now() - handle.created_at > fake.interaction_ack_timeout:
        raise unknown("interaction", UNKNOWN_INTERACTION)
    body = req.json or {}
    kind = body.get("type")
    data = body.get("data") or {}
    allowed = set(ALLOWED_RESPONSES.get(handle.type, set()))
    if handle.type == MODAL_SUBMIT and handle.source_message_id is None:
        allowed -= {DEFERRED_UPDATE, UPDATE_MESSAGE}
    if kind not in allowed:
        raise form_error(["type"], "INTERACTION_RESPONSE_TYPE_INVALID", f"Response type {kind} is not valid here")
    message: StoredMessage | None = None
    if kind == CHANNEL_MESSAGE:
        message = await _create_response_message(fake, handle, data, req.files, int(data.get("flags") or 0) & EPHEMERAL)
    elif kind == DEFERRED_CHANNEL_MESSAGE:
        flags = LOADING | (int(data.get("flags") or 0) & EPHEMERAL)
        message = await _create_response_message(fake, handle, {}, [], flags)
    elif kind in (DEFERRED_UPDATE, UPDATE_MESSAGE):
        message = fake.store.get(handle.source_message_id or 0)
        if message is None:
            raise unknown("Message", UNKNOWN_MESSAGE)
        if kind == UPDATE_MESSAGE:
            await fake.edit_message(message, data, req.files)
    elif kind == AUTOCOMPLETE_RESULT:
        choices = data.get("choices") or []
        if len(choices) > 25:
            raise form_error(["data", "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        handle.choices = choices
    elif kind == MODAL:
        validate_modal(data)
        handle.modal = data
    if message is not None:
        handle.original_message_id = message.id
    handle.response_type = kind
    handle.callback = body
    fake.signal.notify()
    if not _truthy(req.query.get("with_response")):
        return Reply(204)
    interaction: JSON = {"id": str(handle.id), "type": handle.type}
    resource: JSON = {"type": kind}
    if message is not None:
        interaction.update(
            response_message_id=str(message.id),
            response_message_loading=bool(message.data["flags"] & LOADING),
            response_message_ephemeral=message.ephemeral,
        )
        if kind != DEFERRED_UPDATE:
            resource["message"] = message.data
    return Reply(200, {"interaction": interaction, "resource": resource})


def _webhook_handle(fake: FakeDiscord, params: dict[str, str]) -> InteractionHandle:
    handle = fake.interactions.by_token(params["token"])
    if handle is None or params["app_id"] != str(fake.application_id):
        raise unknown("Webhook", UNKNOWN_WEBHOOK)
    if fake.now() - handle.created_at > fake.interaction_token_ttl:
        raise RestError(401, 50027, "Invalid Webhook Token")
    if handle.response_type in (None, AUTOCOMPLETE_RESULT, MODAL):
        raise unknown("Webhook", UNKNOWN_WEBHOOK)
    return handle


def _webhook_message(fake: FakeDiscord, handle: InteractionHandle, ref: str) -> StoredMessage:
    if ref == "@original":
        message_id = handle.original_message_id
    elif ref.isdigit() and (int(ref) == handle.original_message_id or int(ref) in handle.followup_ids):
        message_id = int(ref)
    else:
        message_id = None
    message = fake.store.get(message_id) if message_id else None
    if message is None:
        raise unknown("Message", UNKNOWN_MESSAGE)
    return message


@router.route("POST", "/webhooks/{app_id}/{token}", auth=False)
async def execute_webhook(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """A follow-up; right after a deferred response it replaces the loading message instead."""
    handle = _webhook_handle(fake, params)
    body = req.json or {}
    original = fake.store.get(handle.original_message_id or 0)
    if handle.response_type == DEFERRED_CHANNEL_MESSAGE and original is not None and original.data["flags"] & LOADING:
        await fake.edit_message(original, body, req.files, clear_loading=True)
        message = original
    else:
        message = await _create_response_message(fake, handle, body, req.files, int(body.get("flags") or 0) & EPHEMERAL)
        handle.followup_ids.append(message.id)
    fake.signal.notify()
    return Reply(200, message.data) if _truthy(req.query.get("wait")) else Reply(204)


@router.route("GET", "/webhooks/{app_id}/{token}/messages/{message_ref}", auth=False)
async def get_webhook_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """GET @original or a follow-up."""
    handle = _webhook_handle(fake, params)
    return Reply(200, _webhook_message(fake, handle, params["message_ref"]).data)


@router.route("PATCH", "/webhooks/{app_id}/{token}/messages/{message_ref}", auth=False)
async def edit_webhook_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Edit @original or a follow-up (editing a loading @original finishes it)."""
    handle = _webhook_handle(fake, params)
    message = _webhook_message(fake, handle, params["message_ref"])
    await fake.edit_message(message, req.json or {}, req.files, clear_loading=True)
    return Reply(200, message.data)


@router.route("DELETE", "/webhooks/{app_id}/{token}/messages/{message_ref}", auth=False)
async def delete_webhook_message(fake: FakeDiscord, req: RecordedRequest, params: dict[str, str]) -> Reply:
    """Delete @original or a follow-up."""
    handle = _webhook_handle(fake, params)
    await fake.delete_message(_webhook_message(fake, handle, params["message_ref"]))
    return Reply(204)
