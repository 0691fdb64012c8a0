//! Concurrent sessions per client, as seen by this gateway: a session counts against the client
//! that created it through this gateway, from the moment its creation is reserved until this
//! gateway learns it ended — `DELETE` (through this gateway), `GET` answering not found, its
//! WebSocket closing with 4404, or a re-check when the client is at its limit (below).
//!
//! Sessions that expire quietly (TTL with no socket) are not announced to gateways; rather than
//! poll every session, the gateway asks the engine about a client's sessions only when that
//! client is at its limit, at most once per [`RECHECK`], and forgets those that are gone. Limits
//! of this choice: each gateway counts separately (N gateways allow N × the limit), and a
//! session ended elsewhere holds its slot here until one of the above happens.
//!
//! One mutex, not shards: this is the create/delete path, already limited to a few per second
//! per client, and each critical section is a couple of hash operations. Bounded: at most
//! `max_clients` clients are tracked; past it the least recently active eighth is forgotten (fail
//! open for them, never refuse everyone), and each client holds at most its limit.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tickstream_api::SessionId;
use tokio::time::Instant;

use super::ClientKey;

/// How often a client at its limit may trigger a re-check of its sessions.
pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Client {
    sessions: HashSet<SessionId>,
    /// Creations reserved and not yet answered by the engine.
    reserved: usize,
    last_active: Instant,
    last_recheck: Option<Instant>,
}

impl Client {
    fn count(&self) -> usize {
        self.sessions.len() + self.reserved
    }
}

#[derive(Debug, Default)]
struct State {
    clients: HashMap<ClientKey, Client>,
    owner: HashMap<SessionId, ClientKey>,
}

/// Sessions per client (see the module docs).
#[derive(Debug)]
pub struct Owners {
    state: Mutex<State>,
    max_per_client: usize,
    max_clients: usize,
}

/// Why a creation may not be reserved now.
#[derive(Debug, PartialEq, Eq)]
pub enum Full {
    /// At the limit, and a re-check may free slots: these are the sessions to ask about.
    Recheck(Vec<SessionId>),
    /// At the limit, and a re-check ran less than [`RECHECK`] ago.
    Limited,
}

/// A reserved creation: [`Reservation::commit`] it with the new session's id, or drop it (the
/// creation failed) to give the slot back.
#[derive(Debug)]
pub struct Reservation {
    owners: Arc<Owners>,
    key: Option<ClientKey>,
}

impl Owners {
    pub fn new(max_per_client: usize, max_clients: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), max_per_client, max_clients: max_clients.max(1) })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves one session for `key`.
    ///
    /// # Errors
    /// The client is at its limit ([`Full`]).
    pub fn reserve(self: &Arc<Self>, key: &ClientKey) -> Result<Reservation, Full> {
        let now = Instant::now();
        let mut st = self.lock();
        if !st.clients.contains_key(key) && st.clients.len() >= self.max_clients {
            evict(&mut st, self.max_clients);
        }
        let client = st.clients.entry(key.clone()).or_insert_with(|| Client {
            sessions: HashSet::new(),
            reserved: 0,
            last_active: now,
            last_recheck: None,
        });
        client.last_active = now;
        if client.count() < self.max_per_client {
            client.reserved += 1;
            return Ok(Reservation { owners: Arc::clone(self), key: Some(key.clone()) });
        }
        if client.last_recheck.is_some_and(|at| now.duration_since(at) < RECHECK) {
            return Err(Full::Limited);
        }
        client.last_recheck = Some(now);
        Err(Full::Recheck(client.sessions.iter().copied().collect()))
    }

    /// The session ended (or is unknown): its owner gets the slot back. Idempotent.
    pub fn release(&self, id: SessionId) {
        let mut st = self.lock();
        let Some(key) = st.owner.remove(&id) else { return };
        if let Some(client) = st.clients.get_mut(&key) {
            client.sessions.remove(&id);
            if client.count() == 0 {
                st.clients.remove(&key);
            }
        }
    }

    /// Sessions `key` holds here (reserved ones included).
    pub fn held(&self, key: &ClientKey) -> usize {
        self.lock().clients.get(key).map_or(0, Client::count)
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.lock().clients.len()
    }

    fn settle(&self, key: &ClientKey, id: Option<SessionId>) {
        let mut st = self.lock();
        let State { clients, owner } = &mut *st;
        // The client may have been evicted meanwhile: then the session is not counted.
        let Some(client) = clients.get_mut(key) else { return };
        client.reserved = client.reserved.saturating_sub(1);
        if let Some(id) = id {
            client.sessions.insert(id);
            owner.insert(id, key.clone());
        }
        if client.count() == 0 {
            clients.remove(key);
        }
    }
}

/// Forgets the least recently active eighth of the clients (at least one).
fn evict(st: &mut State, max_clients: usize) {
    let n = (max_clients / 8).max(1).min(st.clients.len());
    let mut ages: Vec<Instant> = st.clients.values().map(|c| c.last_active).collect();
    let (_, cutoff, _) = ages.select_nth_unstable(n - 1);
    let cutoff = *cutoff;
    let State { clients, owner } = st;
    clients.retain(|_, c| {
        let keep = c.last_active > cutoff;
        if !keep {
            for id in &c.sessions {
                owner.remove(id);
            }
        }
        keep
    });
}

impl Reservation {
    /// The engine created `id`: it now counts until released.
    pub fn commit(mut self, id: SessionId) {
        if let Some(key) = self.key.take() {
            self.owners.settle(&key, Some(id));
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owners.settle(&key, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn key(n: u8) -> ClientKey {
        ClientKey::Ip(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)))
    }

    #[tokio::test(start_paused = true)]
    async fn sessions_count_until_released_and_failures_give_slots_back() {
        let owners = Owners::new(2, 100);
        let (a, b) = (key(1), key(2));
        let (s1, s2) = (SessionId::random(), SessionId::random());
        owners.reserve(&a).unwrap().commit(s1);
        drop(owners.reserve(&a).unwrap()); // the engine refused: slot back
        owners.reserve(&a).unwrap().commit(s2);
        assert_eq!(owners.held(&a), 2);
        // At the limit: the first refusal asks for a re-check of exactly its sessions.
        let Err(Full::Recheck(mut ids)) = owners.reserve(&a) else { panic!("expected a re-check") };
        ids.sort_by_key(|id| id.to_string());
        let mut want = vec![s1, s2];
        want.sort_by_key(|id| id.to_string());
        assert_eq!(ids, want);
        // ...and the next ones within RECHECK are refused outright.
        assert_eq!(owners.reserve(&a).unwrap_err(), Full::Limited);
        // Another client is unaffected.
        assert!(owners.reserve(&b).is_ok());
        owners.release(s1);
        owners.release(s1); // idempotent
        assert_eq!(owners.held(&a), 1);
        assert!(owners.reserve(&a).is_ok());
        tokio::time::advance(RECHECK).await;
    }

    #[test]
    fn tracked_clients_stay_bounded() {
        let owners = Owners::new(10, 64);
        for n in 0..=255u8 {
            owners.reserve(&key(n)).unwrap().commit(SessionId::random());
            assert!(owners.clients() <= 64);
        }
        assert!(owners.lock().owner.len() <= 64 * 10);
        // Releasing a forgotten client's session is harmless.
        owners.release(SessionId::random());
    }
}
