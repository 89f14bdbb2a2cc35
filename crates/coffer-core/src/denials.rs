//! Denied attempts (401/403), coalesced before they reach the audit log.
//!
//! Every refused request is reported to [`Coffer::record_denial`]; identical attempts
//! within one window (the time between two flushes, [`DENIAL_WINDOW`]) become one
//! [`Denial`] whose `count` says how many there were. Two attempts are identical when they
//! have the same key id (or, for a key that did not authenticate, the same remote IP), the
//! same route, the same environment and the same status. A window holds at most
//! [`MAX_DENIALS_PER_WINDOW`] distinct entries; attempts past it fold into one overflow
//! entry (route `*`). [`Coffer::flush_denials`] writes a window in one store transaction,
//! so whatever a client sends, one window costs at most `MAX_DENIALS_PER_WINDOW + 1` audit
//! rows and a bounded amount of memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use coffer_store::{ApiKeyId, Denial, EnvName, Origin, Timestamp};

use crate::{Coffer, CoreError};

/// How often the coalesced denials are written (the coalescing window).
pub const DENIAL_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

/// Distinct denial entries one window keeps; attempts past it fold into one overflow row.
pub const MAX_DENIALS_PER_WINDOW: usize = 256;

/// Distinct entries one source (a key, or an address without a key) has per window; its
/// further distinct attempts fold into one row of its own (route `*`).
pub const MAX_DENIALS_PER_SOURCE: usize = 8;

/// The route an overflow row names: many routes, folded.
pub const OVERFLOW_ROUTE: &str = "*";

/// One refused request, as the HTTP layer reports it.
#[derive(Clone, Debug)]
pub struct DeniedAttempt {
    /// The key presented, when it authenticated (403); `None` for 401.
    pub key_id: Option<ApiKeyId>,
    /// `METHOD /route/{template}`.
    pub route: String,
    /// The environment the route names, if any.
    pub environment: Option<EnvName>,
    /// 401 or 403.
    pub status: u16,
    /// Where the request came from.
    pub origin: Origin,
}

/// What makes two attempts the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    who: Who,
    route: String,
    environment: Option<EnvName>,
    status: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Who {
    Key(ApiKeyId),
    /// A caller without an authenticated key, by remote IP (the port changes per
    /// connection); the remote text itself when it is not `ip:port`.
    Ip(IpAddr),
    Remote(String),
    Nowhere,
}

impl Who {
    fn of(key_id: &Option<ApiKeyId>, origin: &Origin) -> Who {
        match (key_id, &origin.remote) {
            (Some(id), _) => Who::Key(id.clone()),
            (None, Some(remote)) => match remote.parse::<std::net::SocketAddr>() {
                Ok(addr) => Who::Ip(addr.ip()),
                Err(_) => Who::Remote(remote.clone()),
            },
            (None, None) => Who::Nowhere,
        }
    }
}

/// The current window: distinct entries, in arrival order, per-source counts, and the
/// overflow rows (one per status).
#[derive(Default)]
struct Window {
    entries: HashMap<Identity, usize>,
    /// Per source: how many distinct entries it has, and its own overflow row, if any.
    sources: HashMap<Who, (usize, Option<usize>)>,
    rows: Vec<Denial>,
    overflow: Vec<Denial>,
}

/// Coalesces denied attempts between flushes; bounded whatever is reported.
#[derive(Default)]
pub struct DenialCoalescer {
    window: Mutex<Window>,
    /// The rows of the last window whose write failed (a full writer queue): written with
    /// the next one. At most one window's rows, so it stays bounded.
    carried: Mutex<Vec<Denial>>,
}

impl DenialCoalescer {
    /// Counts one attempt at `at`.
    pub fn record(&self, attempt: DeniedAttempt, at: Timestamp) {
        let identity = Identity {
            who: Who::of(&attempt.key_id, &attempt.origin),
            route: attempt.route,
            environment: attempt.environment,
            status: attempt.status,
        };
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = window.entries.get(&identity) {
            window.rows[i].count = window.rows[i].count.saturating_add(1);
            return;
        }
        let (distinct, own_overflow) = window
            .sources
            .get(&identity.who)
            .copied()
            .unwrap_or((0, None));
        // One source varying routes or environments folds into a row of its own (route
        // `*`, its key or address kept) instead of crowding out everyone else's.
        if distinct >= MAX_DENIALS_PER_SOURCE
            && let Some(i) = own_overflow
        {
            window.rows[i].count = window.rows[i].count.saturating_add(1);
            return;
        }
        if window.rows.len() >= MAX_DENIALS_PER_WINDOW {
            match window
                .overflow
                .iter_mut()
                .find(|r| r.status == identity.status)
            {
                Some(row) => row.count = row.count.saturating_add(1),
                None => window.overflow.push(Denial {
                    at,
                    key_id: None,
                    route: OVERFLOW_ROUTE.to_owned(),
                    environment: None,
                    status: identity.status,
                    origin: Origin::default(),
                    count: 1,
                }),
            }
            return;
        }
        let i = window.rows.len();
        let folded = distinct >= MAX_DENIALS_PER_SOURCE;
        window.rows.push(Denial {
            at,
            key_id: match &identity.who {
                Who::Key(id) => Some(id.clone()),
                _ => None,
            },
            route: if folded {
                OVERFLOW_ROUTE.to_owned()
            } else {
                identity.route.clone()
            },
            environment: if folded {
                None
            } else {
                identity.environment.clone()
            },
            status: identity.status,
            origin: attempt.origin,
            count: 1,
        });
        if folded {
            window.sources.insert(identity.who, (distinct, Some(i)));
        } else {
            window
                .sources
                .insert(identity.who.clone(), (distinct + 1, own_overflow));
            window.entries.insert(identity, i);
        }
    }

    /// Ends the window: its rows (overflow last), leaving an empty one.
    pub fn take(&self) -> Vec<Denial> {
        let window = std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()));
        let mut rows = std::mem::take(&mut *self.carried.lock().unwrap_or_else(|p| p.into_inner()));
        rows.extend(window.rows);
        rows.extend(window.overflow);
        rows
    }

    /// Keeps `rows`, whose write failed, for the next flush. Only the latest failed batch is
    /// kept, folded to one window's size: older rows fold into one row per status.
    fn carry(&self, mut rows: Vec<Denial>) {
        let keep = MAX_DENIALS_PER_WINDOW + 2;
        if rows.len() > keep {
            let folded = rows.split_off(keep - 2);
            for row in folded {
                match rows[keep - 2..].iter_mut().find(|r| r.status == row.status) {
                    Some(into) => into.count = into.count.saturating_add(row.count),
                    None => rows.push(Denial {
                        key_id: None,
                        route: OVERFLOW_ROUTE.to_owned(),
                        environment: None,
                        origin: Origin::default(),
                        ..row
                    }),
                }
            }
        }
        *self.carried.lock().unwrap_or_else(|p| p.into_inner()) = rows;
    }
}

impl Coffer {
    /// Counts a refused request (401/403) for the audit log; written by the next
    /// [`Coffer::flush_denials`].
    pub fn record_denial(&self, attempt: DeniedAttempt) {
        self.denials.record(attempt, Timestamp::now());
    }

    /// Writes the denials counted since the last flush, in one store transaction; returns
    /// how many rows that was. Call it every [`DENIAL_WINDOW`] and at shutdown. Rows whose
    /// write fails (a full writer queue) go with the next flush, folded so they stay within
    /// one window's size.
    pub async fn flush_denials(&self) -> Result<usize, CoreError> {
        let rows = self.denials.take();
        if rows.is_empty() {
            return Ok(0);
        }
        let n = rows.len();
        let attempts: u64 = rows.iter().map(|r| r.count).sum();
        if let Err(e) = self.catalog().record_denials(rows.clone()).await {
            tracing::warn!(error = %e, rows = n, attempts, "could not audit denied attempts yet; they go with the next flush");
            self.denials.carry(rows);
            return Err(e.into());
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(key: Option<&str>, remote: &str, route: &str, status: u16) -> DeniedAttempt {
        DeniedAttempt {
            key_id: key.map(|k| ApiKeyId::new(k).unwrap()),
            route: route.into(),
            environment: Some(EnvName::new("prod").unwrap()),
            status,
            origin: Origin::new(Some(remote.into()), Some("curl/8")),
        }
    }

    #[test]
    fn identical_attempts_become_one_row_with_their_count() {
        let c = DenialCoalescer::default();
        for port in 0..50u16 {
            // Unknown keys from one IP on many connections: one caller.
            c.record(
                attempt(None, &format!("10.0.0.1:{}", 1000 + port), "GET /v1/x", 401),
                Timestamp::from_millis(1),
            );
        }
        for _ in 0..7 {
            c.record(
                attempt(Some("ak_0123456789abcdef"), "10.0.0.2:1", "GET /v1/x", 403),
                Timestamp::from_millis(2),
            );
        }
        c.record(
            attempt(None, "10.0.0.3:1", "GET /v1/x", 401),
            Timestamp::from_millis(3),
        );
        let rows = c.take();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].count, 50);
        assert_eq!(rows[0].key_id, None);
        assert_eq!(rows[0].origin.remote.as_deref(), Some("10.0.0.1:1000"));
        assert_eq!(rows[0].at, Timestamp::from_millis(1));
        assert_eq!(rows[1].count, 7);
        assert_eq!(
            rows[1].key_id.as_ref().unwrap().as_str(),
            "ak_0123456789abcdef"
        );
        assert_eq!(rows[2].count, 1);
        assert!(c.take().is_empty(), "a flush starts a new window");
    }

    #[test]
    fn route_environment_and_status_each_tell_attempts_apart() {
        let c = DenialCoalescer::default();
        let at = Timestamp::from_millis(1);
        c.record(attempt(None, "10.0.0.1:1", "GET /v1/a", 401), at);
        c.record(attempt(None, "10.0.0.1:1", "GET /v1/b", 401), at);
        c.record(attempt(None, "10.0.0.1:1", "GET /v1/a", 403), at);
        let mut other_env = attempt(None, "10.0.0.1:1", "GET /v1/a", 401);
        other_env.environment = None;
        c.record(other_env, at);
        assert_eq!(c.take().len(), 4);
    }

    #[test]
    fn a_window_is_bounded_and_its_overflow_folds_into_one_row() {
        let c = DenialCoalescer::default();
        let at = Timestamp::from_millis(1);
        let sent = MAX_DENIALS_PER_WINDOW * 4;
        for i in 0..sent {
            let remote = format!("10.{}.{}.{}:1", i / 65536, (i / 256) % 256, i % 256);
            c.record(attempt(None, &remote, "GET /v1/a", 401), at);
        }
        let rows = c.take();
        assert_eq!(rows.len(), MAX_DENIALS_PER_WINDOW + 1);
        let overflow = rows.last().unwrap();
        assert_eq!(overflow.route, OVERFLOW_ROUTE);
        assert_eq!(overflow.count as usize, sent - MAX_DENIALS_PER_WINDOW);
        assert_eq!(rows.iter().map(|r| r.count as usize).sum::<usize>(), sent);
    }

    /// One address varying routes and environments cannot crowd out the others: past
    /// [`MAX_DENIALS_PER_SOURCE`] distinct entries its attempts fold into one row that
    /// still names it, and another caller's denial keeps its own row.
    #[test]
    fn one_source_folds_into_its_own_row_and_leaves_room_for_others() {
        let c = DenialCoalescer::default();
        let at = Timestamp::from_millis(1);
        let sent = 1000;
        for i in 0..sent {
            let mut a = attempt(None, "10.9.9.9:1", &format!("GET /v1/r{i}"), 401);
            a.environment = Some(EnvName::new(&format!("e{i}")).unwrap());
            c.record(a, at);
        }
        let probe = attempt(Some("ak_00000000000000aa"), "10.0.0.7:1", "PUT /v1/p", 403);
        c.record(probe, at);
        let rows = c.take();
        assert_eq!(rows.len(), MAX_DENIALS_PER_SOURCE + 2, "{rows:?}");
        let folded = &rows[MAX_DENIALS_PER_SOURCE];
        assert_eq!(folded.route, OVERFLOW_ROUTE);
        assert_eq!(folded.origin.remote.as_deref(), Some("10.9.9.9:1"));
        assert_eq!(folded.count as usize, sent - MAX_DENIALS_PER_SOURCE);
        let probe = rows.last().unwrap();
        assert_eq!(
            probe.key_id.as_ref().unwrap().as_str(),
            "ak_00000000000000aa"
        );
        assert_eq!(probe.route, "PUT /v1/p");
        assert_eq!(
            rows.iter().map(|r| r.count as usize).sum::<usize>(),
            sent + 1
        );
    }

    /// Rows whose write failed go with the next window, folded to one window's size.
    #[test]
    fn a_failed_window_is_carried_to_the_next_and_stays_bounded() {
        let c = DenialCoalescer::default();
        let at = Timestamp::from_millis(1);
        let failed: Vec<Denial> = (0..1000)
            .map(|i| Denial {
                at,
                key_id: None,
                route: format!("GET /v1/r{i}"),
                environment: None,
                status: if i % 2 == 0 { 401 } else { 403 },
                origin: Origin::default(),
                count: 2,
            })
            .collect();
        c.carry(failed);
        c.record(attempt(None, "10.0.0.1:1", "GET /v1/x", 401), at);
        let rows = c.take();
        assert!(rows.len() <= MAX_DENIALS_PER_WINDOW + 3, "{}", rows.len());
        assert_eq!(rows.iter().map(|r| r.count).sum::<u64>(), 2001);
        assert!(c.take().is_empty(), "carried once");
    }
}
