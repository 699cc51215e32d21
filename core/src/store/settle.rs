//! Handing a committed batch out (replies to its writers, new outbox entries, live events)
//! once it is durable.
//!
//! On PostgreSQL, and on SQLite with `synchronous = NORMAL`, a batch is as durable as it
//! gets when its commit returns, and is handed out at once. With SQLite's `FULL` (or
//! `EXTRA`) the writer's connection commits with `NORMAL` instead, which writes the WAL but
//! does not flush it, and a syncer thread flushes the WAL file (one `fdatasync` for every
//! batch committed meanwhile) before handing the batches out in commit order. The writer
//! applies the next batch while the last one reaches the disk, and a reply still means the
//! write survives a power loss. A WAL file that is gone was checkpointed into the database
//! file, which SQLite syncs when it checkpoints.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

use super::writer::{Announce, Output};
use super::*;

pub(super) type Reply = oneshot::Sender<Result<Output, StoreError>>;

/// What a batch owes once it is durable: each job's reply (in job order) and the events it
/// committed.
pub(super) struct Settled {
    pub replies: Vec<(Reply, Result<Output, StoreError>)>,
    pub published: Vec<Arc<Event>>,
}

impl Settled {
    /// Announces the new outbox entries, replies, then publishes the events.
    fn deliver(self, announce: &Announce) {
        for (reply, result) in self.replies {
            if let Ok(Output::Enqueued(e)) = &result
                && !e.replayed
            {
                let _ = announce.enqueued.send(OutboxEntry {
                    message: e.message.clone(),
                    conversation: e.conversation.clone(),
                    reply_to_external_id: None,
                });
            }
            let result = match result {
                Ok(Output::Fanout { id, entries }) => {
                    for entry in entries {
                        let _ = announce.enqueued.send(entry);
                    }
                    Ok(Output::Id(id))
                }
                other => other,
            };
            let _ = reply.send(result);
        }
        for e in self.published {
            let _ = announce.events.send(e);
        }
    }

    /// The batch was committed but could not be made durable: its writers get an error and
    /// nothing is announced.
    fn fail(self, why: &str) {
        for (reply, _) in self.replies {
            let _ = reply.send(Err(StoreError::Unavailable(format!(
                "the write was not made durable: {why}"
            ))));
        }
    }
}

/// Where committed batches go.
pub(super) enum Settle {
    /// Handed out as soon as they commit.
    AtCommit(Announce),
    /// Handed to the syncer thread.
    AfterSync {
        batches: std_mpsc::Sender<Settled>,
        thread: std::thread::JoinHandle<()>,
    },
}

impl Settle {
    /// Flushes `wal` (the WAL file of the writer's SQLite database) before handing batches
    /// out.
    pub fn after_sync(wal: PathBuf, announce: Announce) -> Result<Settle, StoreError> {
        let (batches, rx) = std_mpsc::channel::<Settled>();
        let thread = std::thread::Builder::new()
            .name("store-sync".into())
            .spawn(move || syncer(&wal, &rx, &announce))
            .map_err(|e| StoreError::Unavailable(format!("the store's sync thread: {e}")))?;
        Ok(Settle::AfterSync { batches, thread })
    }

    pub fn batch(&self, settled: Settled) {
        match self {
            Settle::AtCommit(announce) => settled.deliver(announce),
            Settle::AfterSync { batches, .. } => {
                if let Err(std_mpsc::SendError(settled)) = batches.send(settled) {
                    settled.fail("the store's sync thread has stopped");
                }
            }
        }
    }

    /// Waits until every batch handed over has been handed out.
    pub fn finish(self) {
        if let Settle::AfterSync { batches, thread } = self {
            drop(batches);
            if thread.join().is_err() {
                tracing::error!("the store's sync thread ended abnormally");
            }
        }
    }
}

fn syncer(wal: &std::path::Path, rx: &std_mpsc::Receiver<Settled>, announce: &Announce) {
    while let Ok(first) = rx.recv() {
        let mut ready = vec![first];
        ready.extend(rx.try_iter());
        match sync_file(wal) {
            Ok(()) => ready.into_iter().for_each(|s| s.deliver(announce)),
            Err(e) => {
                tracing::error!(error = %e, wal = %wal.display(), "cannot flush the SQLite WAL to disk");
                let why = e.to_string();
                ready.into_iter().for_each(|s| s.fail(&why));
            }
        }
    }
}

/// `fdatasync` of the file at `path` (any descriptor of a file flushes all its data on
/// Linux); a file that does not exist has nothing to flush.
fn sync_file(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The WAL file of the writer's SQLite database, or `None` for an in-memory one.
pub(super) async fn wal_path(
    conn: &mut sqlx::AnyConnection,
) -> Result<Option<PathBuf>, StoreError> {
    let rows: Vec<(i64, String, String)> = sqlx::query_as("PRAGMA database_list")
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .find(|(_, name, _)| name == "main")
        .map(|(_, _, file)| file)
        .filter(|file| !file.is_empty())
        .map(|file| PathBuf::from(format!("{file}-wal"))))
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;
    use tokio::sync::{broadcast, mpsc};

    use super::*;

    fn event(seq: i64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            kind: crate::model::event_type::MESSAGE_SENT.into(),
            tenant: "acme".into(),
            at: chrono::Utc::now(),
            bot_id: None,
            data: event_data(&seq),
            json: Default::default(),
        })
    }

    #[tokio::test]
    async fn synced_batches_are_answered_and_published_in_commit_order() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("store.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        let (events, mut live) = broadcast::channel(16);
        let (enqueued, _outbox) = mpsc::unbounded_channel();
        let announce = Announce {
            events,
            enqueued,
            stats: Default::default(),
        };
        let settle = Settle::after_sync(wal, announce).unwrap();
        let mut answers = Vec::new();
        for seq in 1..=3 {
            let (reply, answer) = oneshot::channel();
            settle.batch(Settled {
                replies: vec![(reply, Ok(Output::Id(format!("job-{seq}"))))],
                published: vec![event(seq)],
            });
            answers.push(answer);
        }
        settle.finish();
        for (i, answer) in answers.into_iter().enumerate() {
            match answer.await.unwrap() {
                Ok(Output::Id(id)) => assert_eq!(id, format!("job-{}", i + 1)),
                _ => panic!("batch {i} was not answered with its result"),
            }
        }
        for seq in 1..=3 {
            assert_eq!(live.recv().await.unwrap().seq, seq);
        }
    }

    #[test]
    fn a_wal_that_was_checkpointed_away_has_nothing_to_flush() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sync_file(&dir.path().join("gone.db-wal")).is_ok());
    }

    #[tokio::test]
    async fn the_wal_is_found_next_to_a_file_database_and_not_for_memory() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let url = format!("sqlite://{}?mode=rwc", db.display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let wal = wal_path(&mut conn).await.unwrap().unwrap();
        assert_eq!(wal.file_name().unwrap(), "store.db-wal");
        assert_eq!(
            std::fs::canonicalize(wal.parent().unwrap()).unwrap(),
            std::fs::canonicalize(dir.path()).unwrap()
        );
        let mut memory = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        assert!(wal_path(&mut memory).await.unwrap().is_none());
    }
}
