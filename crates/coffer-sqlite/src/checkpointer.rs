//! Copies the write-ahead log into the database on a thread of its own.
//!
//! SQLite's default checkpoints on the committing connection: once the log holds 1,000
//! pages, the commit that crossed the mark copies every page not yet copied into
//! `coffer.db`, flushes that file, and only then returns. For Coffer's one writer thread
//! that meant every write queued meanwhile waited for a flush of up to 4 MB of scattered
//! pages: 25 to 450 ms on this project's VM disk, several times a minute at 900 writes/s,
//! which set the write latency p99 (docs/BENCHMARKS.md, issue 7, "2026-11-30 night").
//!
//! So this thread runs a `PASSIVE` checkpoint every [`INTERVAL`] on a connection of its
//! own: it copies the log's new pages and flushes the database while the writer goes on
//! (a passive checkpoint takes no lock that a writer or a reader waits for; it copies what
//! no open read still needs). The writer keeps SQLite's own checkpoint at 1,000 pages,
//! which now finds all but the last few pages copied: it copies those and, the log being
//! copied whole, the writer can start the log over at its next transaction (when no read
//! still uses the log). Without it a busy log is rarely copied whole at the moment a
//! transaction starts, and it grew (18 MB in a minute of paced writes, and 12 % fewer
//! writes/s at saturation).
//!
//! With `synchronous = FULL` a checkpoint flushes the log before it copies and the
//! database after, so a crash at any point leaves a database SQLite recovers from the log
//! as before; one with nothing new to copy writes and flushes nothing.
//!
//! Every checkpoint takes SQLite's checkpoint lock, and one that finds it taken gives up
//! at once (no busy timeout applies). So [`SqliteStore::checkpoint`], the truncating
//! checkpoint after dev mode's migration and at shutdown, first takes [`Checkpointer::hold`]
//! (the thread holds it around each of its checkpoints) and then tries again while the
//! writer's own checkpoint is in the way.
//!
//! [`SqliteStore::checkpoint`]: crate::SqliteStore::checkpoint

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied into the database.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// The checkpoint thread; dropping it stops the thread, after the checkpoint in progress
/// (and, if its connection is the file's last, the full checkpoint SQLite runs at close).
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
    /// Held by the thread around each checkpoint: see [`Checkpointer::hold`].
    turn: Arc<Mutex<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing the database at `path` every [`INTERVAL`].
    pub(crate) fn start(path: PathBuf) -> std::io::Result<Checkpointer> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let turn = Arc::new(Mutex::new(()));
        let (stopped, turns) = (stop.clone(), turn.clone());
        let thread = std::thread::Builder::new()
            .name("coffer-sqlite-checkpoint".into())
            .spawn(move || run(&path, &stopped, &turns))?;
        Ok(Checkpointer {
            stop,
            turn,
            thread: Some(thread),
        })
    }

    /// Keeps the thread from starting a checkpoint while the guard lives; waits for the
    /// one in progress, if any.
    pub(crate) fn hold(&self) -> std::sync::MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flag, wake) = &*self.stop;
        *flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(path: &std::path::Path, stop: &(Mutex<bool>, Condvar), turn: &Mutex<()>) {
    let mut conn = None;
    // Whether the last try failed: a failure is logged when it starts, not at every tick.
    let mut failing = false;
    let (flag, wake) = stop;
    loop {
        {
            let stopped = flag.lock().unwrap_or_else(|p| p.into_inner());
            let (stopped, _) = wake
                .wait_timeout_while(stopped, INTERVAL, |stopped| !*stopped)
                .unwrap_or_else(|p| p.into_inner());
            if *stopped {
                return;
            }
        }
        let outcome = {
            let _turn = turn.lock().unwrap_or_else(|p| p.into_inner());
            checkpoint(&mut conn, path)
        };
        match outcome {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("the write-ahead log is copied into the database again");
            }
            Ok(()) => {}
            Err(e) => {
                // A connection that failed may be broken: the next try opens another.
                conn = None;
                if !failing {
                    failing = true;
                    tracing::warn!(error = %e, "cannot copy the write-ahead log into the database off the writer thread; commits copy it themselves meanwhile");
                }
            }
        }
    }
}

/// One passive checkpoint on `conn`, opened first if needed.
fn checkpoint(conn: &mut Option<Connection>, path: &std::path::Path) -> rusqlite::Result<()> {
    let conn = match conn {
        Some(conn) => conn,
        None => conn.insert(crate::checkpoint_connection(path)?),
    };
    // One row: (whether it was blocked, frames in the log, frames copied). A passive
    // checkpoint that could not copy everything (a read still needs older pages) simply
    // copies the rest next time.
    conn.prepare_cached("PRAGMA wal_checkpoint(PASSIVE)")?
        .query_row([], |_| Ok(()))
}
