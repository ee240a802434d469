//! The connection pool: a small checkout of open connections shared by the requests.

use super::open;
use rusqlite::Connection;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A small checkout of open connections. Each request takes one and gives it back; at most
/// `max` are open at once, so a burst waits briefly instead of opening files without bound.
pub struct Pool {
    path: PathBuf,
    max: usize,
    state: Mutex<PoolState>,
    available: Condvar,
}

struct PoolState {
    idle: Vec<Connection>,
    open: usize,
    /// Requests waiting for a connection: only then is a returned one announced (waking
    /// nobody still costs a system call per request).
    waiting: usize,
}

impl Pool {
    pub fn new(path: PathBuf, max: usize) -> Pool {
        Pool {
            path,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                waiting: 0,
            }),
            available: Condvar::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes a connection, waiting up to `wait` for one to come back when all are in use.
    pub fn get(&self, wait: Duration) -> Result<PooledConn<'_>, crate::error::AppError> {
        let deadline = std::time::Instant::now() + wait;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(PooledConn {
                    pool: self,
                    conn: Some(conn),
                });
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return match open(&self.path) {
                    Ok(conn) => Ok(PooledConn {
                        pool: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                        state.open -= 1;
                        if state.waiting > 0 {
                            self.available.notify_one();
                        }
                        Err(e.into())
                    }
                };
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(crate::error::AppError::Unavailable(
                    "The server is busy; try again in a moment".into(),
                ));
            }
            state.waiting += 1;
            state = self
                .available
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            state.waiting -= 1;
        }
    }

    fn put_back(&self, conn: Connection) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if conn.is_autocommit() {
            state.idle.push(conn);
        } else {
            // Left inside a transaction (a panic mid-request): do not reuse it.
            state.open -= 1;
            drop(conn);
        }
        if state.waiting > 0 {
            self.available.notify_one();
        }
    }
}

/// A connection checked out of the [`Pool`]; returned on drop.
pub struct PooledConn<'a> {
    pool: &'a Pool,
    conn: Option<Connection>,
}

impl PooledConn<'_> {
    /// Gives the connection back to the pool while the request waits on something slow
    /// (password hashing, a throttle, a call to GitLab), so that a flood of such requests
    /// cannot starve everyone else of connections. [`PooledConn::reacquire`] takes one again;
    /// using the connection in between is a bug (it panics, and the request answers 500).
    /// Outside a transaction only: an open transaction would be rolled back.
    pub fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }

    /// Takes a connection again after [`PooledConn::release`], waiting up to `wait`; a no-op
    /// when one is held.
    pub fn reacquire(&mut self, wait: Duration) -> Result<(), crate::error::AppError> {
        if self.conn.is_none() {
            let mut fresh = self.pool.get(wait)?;
            self.conn = fresh.conn.take();
        }
        Ok(())
    }

    /// Runs `slow` with the connection given back to the pool, then takes one again.
    pub fn released<T>(
        &mut self,
        wait: Duration,
        slow: impl FnOnce() -> T,
    ) -> Result<T, crate::error::AppError> {
        self.release();
        let out = slow();
        self.reacquire(wait)?;
        Ok(out)
    }
}

impl Deref for PooledConn<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("connection used while released to the pool")
    }
}

impl DerefMut for PooledConn<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("connection used while released to the pool")
    }
}

impl Drop for PooledConn<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.pool.put_back(conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::temp_db;

    #[test]
    fn pool_reuses_connections_and_never_opens_more_than_its_size() {
        let pool = Pool::new(temp_db("size"), 2);
        let a = pool.get(Duration::from_millis(10)).unwrap();
        let b = pool.get(Duration::from_millis(10)).unwrap();
        let third = pool.get(Duration::from_millis(20));
        assert!(matches!(third, Err(crate::error::AppError::Unavailable(_))));
        drop(a);
        let c = pool
            .get(Duration::from_millis(10))
            .expect("a returned connection is reused");
        drop((b, c));
        assert_eq!(pool.state.lock().unwrap().open, 2);
    }

    #[test]
    fn pool_waits_for_a_connection_to_come_back() {
        let pool = std::sync::Arc::new(Pool::new(temp_db("wait"), 1));
        let held = pool.get(Duration::from_millis(10)).unwrap();
        let other = std::sync::Arc::clone(&pool);
        let waiter =
            std::thread::spawn(move || other.get(Duration::from_secs(10)).map(|_| ()).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        assert!(waiter.join().unwrap());
    }

    #[test]
    fn a_connection_left_inside_a_transaction_is_not_reused() {
        let pool = Pool::new(temp_db("tx"), 2);
        {
            let conn = pool.get(Duration::from_millis(10)).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        }
        let state = pool.state.lock().unwrap();
        assert_eq!((state.idle.len(), state.open), (0, 0));
    }
}
