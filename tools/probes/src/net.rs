//! Guard rails: the probes create queues, write Redis keys and fill databases, so they only ever
//! talk to services on this machine.

use std::net::IpAddr;

use anyhow::{Context, bail};

/// Fails unless `url`'s host is a loopback address or `localhost`.
pub fn ensure_loopback(what: &str, url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("{what}: bad URL"))?;
    let host = parsed.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !local {
        bail!("{what}: the probes only talk to 127.0.0.1 (got host `{host}`)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        for ok in [
            "postgres://postgres@127.0.0.1:5432/ragq_probe",
            "amqp://guest:guest@localhost:5672/%2f",
            "redis://127.0.0.1:6379/",
            "http://[::1]:9380",
        ] {
            assert!(ensure_loopback("x", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://10.0.0.5:9380",
            "redis://cache.example.com/",
            "not a url",
        ] {
            assert!(ensure_loopback("x", bad).is_err(), "{bad}");
        }
    }
}
