//! The gateway side of a connector's inbound path: durable storage first, then counters.
//! Platforms are acknowledged by the connector only after [`Inbound::deliver`] returned.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_core::connector::{CursorStore, InboundEvent, InboundSink, IngestOutcome};
use switchboard_core::{Store, StoreError};

use crate::counters::{Count, Counters};

pub struct Inbound {
    pub store: Arc<Store>,
    pub counters: Arc<Counters>,
}

#[async_trait]
impl InboundSink for Inbound {
    async fn deliver(
        &self,
        bot_id: &str,
        events: Vec<InboundEvent>,
    ) -> Result<Vec<IngestOutcome>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = self.store.ingest(bot_id, events).await?;
        let stored = outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Stored(_)))
            .count();
        let dups = outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Duplicate(_)))
            .count();
        self.counters.add(bot_id, Count::Received, stored as u64);
        self.counters.add(bot_id, Count::Duplicate, dups as u64);
        Ok(outcomes)
    }
}

#[async_trait]
impl CursorStore for Inbound {
    async fn get(&self, bot_id: &str, name: &str) -> Result<Option<String>, StoreError> {
        self.store.get_cursor(bot_id, name).await
    }
    async fn set(&self, bot_id: &str, name: &str, value: &str) -> Result<(), StoreError> {
        self.store.set_cursor(bot_id, name, value).await
    }
}
