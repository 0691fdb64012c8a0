//! The command connection of a shard, whichever Redis deployment it talks to: a
//! `ConnectionManager` on one `redis-server` (client-side shards), or the redis crate's
//! cluster connection on a Redis Cluster (`redis+cluster://`), which routes each command to the
//! master of its key's slot and follows `MOVED`/`ASK` and reconnects by itself.
//!
//! [`Commands`] implements the crate's `ConnectionLike`, so every caller (`prices`, `shard`,
//! `store`) sends its commands the same way; what differs between the two modes is only which
//! keys and scripts they send (`keys`, `cluster`). Sits below `shard`.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::{BACKOFF_MAX, RedisConfig};

/// A shard's multiplexed command connection. Cheap to clone (a handle).
#[derive(Clone)]
pub(crate) enum Commands {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Commands {
    /// The command connection of one `redis-server`, connecting lazily.
    pub fn single(client: redis::Client, config: &RedisConfig) -> redis::RedisResult<Self> {
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.command_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX);
        ConnectionManager::new_lazy_with_config(client, manager_config).map(Self::Single)
    }

    /// The command connection of a Redis Cluster, connecting in the background (the node starts
    /// while the cluster is down; commands fail until it is reachable).
    pub fn cluster(config: &RedisConfig) -> redis::RedisResult<Self> {
        let client = cluster_builder(config).build()?;
        Ok(Self::Cluster(
            client.get_pending_async_connection_with_config(
                redis::cluster::ClusterConfig::new()
                    .set_connection_timeout(config.command_timeout)
                    .set_response_timeout(config.command_timeout),
            ),
        ))
    }
}

/// A cluster client for `config`'s seed nodes, with its timeouts and TLS certificates.
pub(crate) fn cluster_builder(config: &RedisConfig) -> ClusterClientBuilder {
    let mut builder = ClusterClientBuilder::new(config.cluster_seeds())
        .connection_timeout(config.command_timeout)
        .response_timeout(config.command_timeout)
        // A few quick retries per command (MOVED after a failover, a master coming back), well
        // inside the command timeout the callers put around them.
        .retries(2)
        .min_retry_wait(20)
        .max_retry_wait(u64::try_from(BACKOFF_MAX.as_millis()).unwrap_or(500));
    if let Some(tls) = &config.tls {
        builder = builder.certs(tls.certificates());
    }
    builder
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
