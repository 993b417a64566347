//! Readiness: are PostgreSQL, RabbitMQ and Redis reachable? One check for every binary's
//! `/readyz`.
//!
//! Where this sits: outside the job path. Orchestrators probe `/readyz` on the ingress and on
//! each worker; a process that cannot reach one of the three is taken out of rotation (HTTP 503)
//! rather than accepting work it would fail. Each binary knows how it reaches the broker and the
//! bus (a connection flag, a ping); it passes those answers in, and the database is asked here.

use serde_json::{Value, json};
use sqlx::PgPool;

/// The answer of a readiness probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub database: bool,
    pub broker: bool,
    pub bus: bool,
}

impl Readiness {
    /// Asks the database (`SELECT 1`) and takes the broker's and the bus's state as given.
    pub async fn check(db: &PgPool, broker: bool, bus: bool) -> Readiness {
        let database = sqlx::query("SELECT 1").execute(db).await.is_ok();
        Readiness {
            database,
            broker,
            bus,
        }
    }

    /// Ready only when all three are reachable.
    pub fn is_ready(&self) -> bool {
        self.database && self.broker && self.bus
    }

    /// 200 when ready, else 503.
    pub fn http_status(&self) -> u16 {
        if self.is_ready() { 200 } else { 503 }
    }

    /// `{"database": …, "broker": …, "bus": …}` (this key order).
    pub fn json(&self) -> Value {
        json!({"database": self.database, "broker": self.broker, "bus": self.bus})
    }

    /// [`Self::json`] as text, with Python's separators (`{"database": true, …}`).
    pub fn body(&self) -> String {
        format!(
            "{{\"database\": {}, \"broker\": {}, \"bus\": {}}}",
            self.database, self.broker, self.bus
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_body() {
        let r = Readiness {
            database: true,
            broker: false,
            bus: true,
        };
        assert_eq!(r.http_status(), 503);
        assert_eq!(
            r.body(),
            r#"{"database": true, "broker": false, "bus": true}"#
        );
        assert_eq!(r.json()["broker"], false);
        let up = Readiness { broker: true, ..r };
        assert_eq!(up.http_status(), 200);
    }
}
