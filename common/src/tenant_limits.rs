//! Per-tenant fairness limits: how many jobs a tenant may start per minute and how many of its
//! jobs may run at once, enforced by the ingress (`api/src/dispatch/admission.rs::admit_tenant`).
//!
//! Each tenant row may override the api's defaults (`RAGQ_TENANT_RATE_PER_MINUTE`,
//! `RAGQ_TENANT_MAX_JOBS`): `NULL` = the default, `0` = unlimited, `N > 0` = the limit. Set with
//! `ragq set-tenant-limits`, listed with `ragq list-tenants`.

use sqlx::PgPool;

/// Largest value either limit may be given.
pub const MAX_LIMIT: i32 = 1_000_000;

/// A tenant's stored overrides (`None` = the configured default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    pub rate_per_minute: Option<i32>,
    pub max_concurrent_jobs: Option<i32>,
}

/// One limit's effective value: `None` = unlimited.
pub fn effective(over: Option<i32>, default: u32) -> Option<u32> {
    let v = over.map_or(default, |v| u32::try_from(v).unwrap_or(0));
    (v > 0).then_some(v)
}

/// A change to one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Leave as it is.
    Keep,
    /// Back to the configured default (`NULL`).
    Default,
    /// This value (0 = unlimited).
    Set(i32),
}

impl std::str::FromStr for Change {
    type Err = String;
    /// `default` or a number from 0 (unlimited) to [`MAX_LIMIT`].
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("default") {
            return Ok(Change::Default);
        }
        match s.parse::<i32>() {
            Ok(n) if (0..=MAX_LIMIT).contains(&n) => Ok(Change::Set(n)),
            _ => Err(format!(
                "expected `default` or a number from 0 (unlimited) to {MAX_LIMIT}"
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    #[error("the tenant {0} does not exist")]
    NoTenant(String),
}

/// A tenant with its overrides.
#[derive(Clone, Debug)]
pub struct TenantRow {
    pub id: String,
    pub name: String,
    pub limits: Overrides,
}

/// The tenant's overrides, `None` if there is no such tenant.
pub async fn get(db: &PgPool, tenant_id: &str) -> Result<Option<Overrides>, sqlx::Error> {
    let row: Option<(Option<i32>, Option<i32>)> =
        sqlx::query_as("SELECT rate_per_minute, max_concurrent_jobs FROM tenants WHERE id = $1")
            .bind(tenant_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|(rate_per_minute, max_concurrent_jobs)| Overrides {
        rate_per_minute,
        max_concurrent_jobs,
    }))
}

/// Changes the tenant's overrides; returns them as stored now. The api sees a change within its
/// cache's lifetime (`api/src/fairness.rs::LimitsCache::TTL`).
pub async fn set(
    db: &PgPool,
    tenant_id: &str,
    rate_per_minute: Change,
    max_concurrent_jobs: Change,
) -> Result<Overrides, LimitsError> {
    // $2/$4: whether to change the column; $3/$5: the new value (NULL = default).
    let value = |c: Change| match c {
        Change::Set(n) => Some(n),
        Change::Keep | Change::Default => None,
    };
    let row: Option<(Option<i32>, Option<i32>)> = sqlx::query_as(
        "UPDATE tenants SET
             rate_per_minute = CASE WHEN $2 THEN $3 ELSE rate_per_minute END,
             max_concurrent_jobs = CASE WHEN $4 THEN $5 ELSE max_concurrent_jobs END
         WHERE id = $1
         RETURNING rate_per_minute, max_concurrent_jobs",
    )
    .bind(tenant_id)
    .bind(rate_per_minute != Change::Keep)
    .bind(value(rate_per_minute))
    .bind(max_concurrent_jobs != Change::Keep)
    .bind(value(max_concurrent_jobs))
    .fetch_optional(db)
    .await?;
    let (rate_per_minute, max_concurrent_jobs) =
        row.ok_or_else(|| LimitsError::NoTenant(tenant_id.to_string()))?;
    Ok(Overrides {
        rate_per_minute,
        max_concurrent_jobs,
    })
}

/// Every tenant, by name.
pub async fn list(db: &PgPool) -> Result<Vec<TenantRow>, sqlx::Error> {
    let rows: Vec<(String, String, Option<i32>, Option<i32>)> = sqlx::query_as(
        "SELECT id, name, rate_per_minute, max_concurrent_jobs FROM tenants ORDER BY name, id",
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, name, rate_per_minute, max_concurrent_jobs)| TenantRow {
                id,
                name,
                limits: Overrides {
                    rate_per_minute,
                    max_concurrent_jobs,
                },
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_limits() {
        assert_eq!(effective(None, 0), None);
        assert_eq!(effective(None, 5), Some(5));
        assert_eq!(effective(Some(0), 5), None);
        assert_eq!(effective(Some(3), 0), Some(3));
    }

    #[test]
    fn changes_parse() {
        assert_eq!("default".parse::<Change>(), Ok(Change::Default));
        assert_eq!("0".parse::<Change>(), Ok(Change::Set(0)));
        assert_eq!("12".parse::<Change>(), Ok(Change::Set(12)));
        assert!("-1".parse::<Change>().is_err());
        assert!("x".parse::<Change>().is_err());
    }
}
