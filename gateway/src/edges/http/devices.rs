//! Devices: `POST /v1/devices/{device}/ack` stores the position a device has
//! processed, so a stream it opens without `Last-Event-ID` resumes there.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::caller::Caller;
use super::publish::read_body;
use crate::core::cursor::{Cursor, MAX_CURSOR_LEN};
use crate::core::device::{Acked, DeviceId};
use crate::edges::shared::error::{ApiError, ErrorCode};
use crate::engine::node::Node;

/// Largest acknowledgement body: one cursor in a small JSON object.
const MAX_ACK_BYTES: usize = MAX_CURSOR_LEN + 256;

/// A device id from a path or query, or the 400 that says why not.
pub fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    DeviceId::parse(text).map_err(|e| ApiError::new(ErrorCode::BadDevice, e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    id: String,
}

/// The device's acknowledged position after the request, as a cursor: an
/// older cursor leaves it where it was, and the reply says so.
#[derive(Serialize)]
pub struct AckReply {
    device: String,
    id: String,
}

pub async fn ack(
    State(node): State<Arc<Node>>,
    Caller(who): Caller,
    Path(device): Path<String>,
    body: Body,
) -> Result<Json<AckReply>, ApiError> {
    let device = parse_device(&device)?;
    who.may_act_for(&device)?;
    let bytes = read_body(body, MAX_ACK_BYTES).await?;
    let req: AckRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            ErrorCode::BadAck,
            format!("an acknowledgement is {{\"id\": \"<cursor>\"}}: {e}"),
        )
    })?;
    let cursor = Cursor::decode(req.id.trim())
        .map_err(|e| ApiError::new(ErrorCode::BadCursor, e.to_string()))?;
    let acks = Acked::from_cursor(&cursor);
    if acks.is_empty() {
        return Err(ApiError::new(
            ErrorCode::BadCursor,
            "the cursor points at no event to acknowledge",
        ));
    }
    let stored = node
        .ack(&device, acks)
        .await
        .map_err(|e| ApiError::store(e, node.retry_after_secs()))?;
    Ok(Json(AckReply {
        device: device.as_str().to_owned(),
        id: Acked::to_cursor(&stored).encode(),
    }))
}
