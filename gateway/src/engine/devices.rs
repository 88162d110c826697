//! The engine's device API: acknowledged positions and shadows. A patch is
//! read, merged and written back under the version it was read at; a
//! desired change is then announced on the device's reserved topic, so its
//! streams on every replica get the new delta.

use std::sync::Arc;

use super::delivery::SHADOW_EVENT;
use super::node::Node;
use crate::core::device::{Acked, DeviceId};
use crate::core::shadow::{self, Patch, Shadow, Side};
use crate::store::{now_ms, NewEvent, StoreError};

/// Read-merge-write rounds before a patch without an expected version gives up.
const ROUNDS: usize = 16;

/// Why a shadow was not read or changed.
#[derive(Debug)]
pub enum ShadowError {
    /// The store failed (already counted).
    Store(StoreError),
    /// The stored document does not parse.
    Unreadable,
    /// The expected version is not the current one.
    Conflict {
        /// The current version.
        current: u64,
    },
    /// The document would grow past `limits.max_shadow_bytes`.
    TooLarge {
        /// Its size after the patch.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Other writers kept coming first.
    KeptChanging,
}

impl From<StoreError> for ShadowError {
    fn from(e: StoreError) -> Self {
        ShadowError::Store(e)
    }
}

impl Node {
    /// Stores `acks` as the newest positions `device` has processed (an
    /// older one never moves a topic back); gives the merged positions.
    pub async fn ack(&self, device: &DeviceId, acks: Vec<Acked>) -> Result<Vec<Acked>, StoreError> {
        self.storage_open()?;
        let stored = self
            .store
            .ack(device, acks)
            .await
            .map_err(|e| self.store_error(e))?;
        self.metrics.device_acks_total.inc();
        Ok(stored)
    }

    /// The stored shadow, or an empty one at version 0.
    pub async fn shadow(&self, device: &DeviceId) -> Result<Shadow, ShadowError> {
        let stored = self
            .store
            .shadow(device)
            .await
            .map_err(|e| self.store_error(e))?;
        match stored {
            None => Ok(Shadow::default()),
            Some(stored) => Shadow::from_stored(stored).ok_or(ShadowError::Unreadable),
        }
    }

    /// Merges `patch` into `device`'s shadow, at version `expected` if
    /// given (else merged again into whatever is newer), and announces a
    /// desired change. Gives the document as stored.
    pub async fn patch_shadow(
        &self,
        device: &DeviceId,
        patch: &Patch,
        expected: Option<u64>,
    ) -> Result<Shadow, ShadowError> {
        let limit = self.config.limits.max_shadow_bytes;
        self.storage_open()?;
        for _ in 0..ROUNDS {
            let mut doc = self.shadow(device).await?;
            if expected.is_some_and(|v| v != doc.version) {
                return Err(ShadowError::Conflict {
                    current: doc.version,
                });
            }
            let read_at = doc.version;
            let now = now_ms();
            let applied = doc.apply(patch, now);
            if applied.keys.is_empty() {
                return Ok(doc);
            }
            let text = serde_json::to_string(&doc).expect("a shadow serializes");
            if text.len() > limit {
                return Err(ShadowError::TooLarge {
                    size: text.len(),
                    limit,
                });
            }
            let written = self
                .store
                .put_shadow(device, read_at, doc.version, text)
                .await
                .map_err(|e| self.store_error(e))?;
            if !written {
                // Another writer came first: with an expected version that is
                // a conflict, without one the patch is merged again.
                if expected.is_some() {
                    return Err(ShadowError::Conflict {
                        current: read_at + 1,
                    });
                }
                continue;
            }
            self.metrics
                .shadow_patches_total
                .with_label_values(&[patch.side.as_str()])
                .inc();
            if patch.side == Side::Desired {
                self.announce_shadow(device, &doc, &applied.keys, now).await;
            }
            return Ok(doc);
        }
        Err(ShadowError::KeptChanging)
    }

    /// Publishes the new delta on the device's reserved topic. The document
    /// is stored already: if this fails the device still gets the current
    /// delta when it next connects, so the patch is not failed for it.
    async fn announce_shadow(&self, device: &DeviceId, doc: &Shadow, keys: &[String], now: u64) {
        let (ttl, priority) = doc.announcement(keys);
        let event = NewEvent {
            event_type: Some(Arc::from(SHADOW_EVENT)),
            ttl,
            priority,
            ..NewEvent::new(
                shadow::topic(device),
                shadow::event_data(doc.version, &doc.delta(now)),
            )
        };
        if let Err(e) = self.store.append(vec![event]).await {
            self.store_error(e);
            tracing::warn!(%device, version = doc.version, "shadow change stored but not announced; the device gets it on reconnect");
        }
    }
}
