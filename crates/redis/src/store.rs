//! The [`SessionStore`] impl on Redis: session records as string keys with an expiry
//! (`tickstream:session:<id>`), and the control messages that tell other engines about them.
//!
//! Uses the command connection of the home shard (the first `--redis` URL): every record and
//! every control message lives there, so a session never depends on more than one shard and
//! the control channel needs no fan-in. On a Redis Cluster both carry the hash tag
//! `{tickstream}` (`keys`), so they live on that slot's master, pipelines of records stay in one
//! slot, and a `DEL` and its `ended` message still go to one Redis in order. The record and
//! message forms are in [`crate::wire`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tickstream_api::SessionId;
use tickstream_broker::{BrokerError, ClusterListener, SessionRecord, SessionStore};

use crate::RedisBroker;
use crate::config::BATCH;
use crate::keys::{self, session_key, ttl_ms};
use crate::shard::unavailable;
use crate::wire::{self, ControlMessage};

impl RedisBroker {
    fn key(&self, id: SessionId) -> String {
        session_key(id, self.home().is_cluster())
    }

    async fn publish_control(
        &self,
        ended: Option<SessionId>,
        attached: Option<SessionId>,
    ) -> Result<(), BrokerError> {
        let msg = ControlMessage {
            node: self.home().node.clone(),
            ended: ended.map(|id| id.to_string()),
            attached: attached.map(|id| id.to_string()),
        };
        // On a cluster: sharded, on the master of `{tickstream}`, beside the session records.
        let (command, channel) = if self.home().is_cluster() {
            ("SPUBLISH", keys::CLUSTER_CONTROL_CHANNEL)
        } else {
            ("PUBLISH", keys::CONTROL_CHANNEL)
        };
        redis::cmd(command)
            .arg(channel)
            .arg(wire::encode_control(&msg, &self.home().config.control_auth))
            .query_async::<i64>(&mut self.home().conn())
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

impl SessionStore for RedisBroker {
    fn listen(&self, listener: Arc<dyn ClusterListener>) {
        let _ = self.home().listener.set(listener);
    }

    fn put(&self, records: Vec<(SessionRecord, Duration)>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            for batch in records.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for (r, ttl) in batch {
                    pipe.cmd("SET")
                        .arg(self.key(r.id))
                        .arg(wire::encode_session(r))
                        .arg("PX")
                        .arg(ttl_ms(*ttl))
                        .ignore();
                }
                pipe.query_async::<()>(&mut self.home().conn()).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn replace(
        &self,
        record: SessionRecord,
        ttl: Option<Duration>,
    ) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            let mut cmd = redis::cmd("SET");
            cmd.arg(self.key(record.id)).arg(wire::encode_session(&record)).arg("XX");
            match ttl {
                Some(ttl) => cmd.arg("PX").arg(ttl_ms(ttl)),
                None => cmd.arg("KEEPTTL"),
            };
            let done: Option<String> = cmd.query_async(&mut self.home().conn()).await.map_err(unavailable)?;
            Ok(done.is_some())
        })
    }

    fn get(&self, id: SessionId) -> BoxFuture<'_, Result<Option<SessionRecord>, BrokerError>> {
        Box::pin(async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.key(id))
                .query_async(&mut self.home().conn())
                .await
                .map_err(unavailable)?;
            Ok(raw.and_then(|raw| wire::decode_session(id, &raw, &self.home().config.bounds)))
        })
    }

    fn touch(&self, ids: Vec<SessionId>, ttl: Duration) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            for batch in ids.chunks(BATCH) {
                let mut pipe = redis::pipe();
                for &id in batch {
                    pipe.cmd("PEXPIRE").arg(self.key(id)).arg(ttl_ms(ttl)).ignore();
                }
                pipe.query_async::<()>(&mut self.home().conn()).await.map_err(unavailable)?;
            }
            Ok(())
        })
    }

    fn remove(&self, id: SessionId) -> BoxFuture<'_, Result<bool, BrokerError>> {
        Box::pin(async move {
            let removed: i64 = redis::cmd("DEL")
                .arg(self.key(id))
                .query_async(&mut self.home().conn())
                .await
                .map_err(unavailable)?;
            self.publish_control(Some(id), None).await?;
            Ok(removed > 0)
        })
    }

    fn announce_attached(&self, id: SessionId) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move { self.publish_control(None, Some(id)).await })
    }
}
