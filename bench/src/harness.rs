//! What every scenario starts from: a gateway on a free loopback port, a temporary store
//! (SQLite, or the PostgreSQL URL given) and one tenant, `bench`, whose API key is [`KEY`].

use std::collections::HashMap;
use std::net::SocketAddr;

use switchboard_core::secret::Cipher;
use switchboard_gateway::{Gateway, config};

pub(crate) const KEY: &str = "sk_bench_key_0123456789abcdefghij";

pub(crate) struct BenchGateway {
    pub gateway: Gateway,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// The store's directory, removed when dropped.
    pub dir: tempfile::TempDir,
}

/// Starts a gateway. `sections(listen)` is the rest of the config (`[server]` with
/// `listen`, `[outbox]`, `[[bots]]`...); `[storage]`, `[security]` and the tenant are
/// added here.
pub(crate) async fn start(
    store: &str,
    sqlite_synchronous: &str,
    sections: impl FnOnce(SocketAddr) -> String,
) -> anyhow::Result<BenchGateway> {
    let dir = tempfile::tempdir()?;
    let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
    let listen = probe.local_addr()?;
    drop(probe);
    let url = if store == "sqlite" {
        format!("sqlite://{}/bench.db", dir.path().display())
    } else {
        store.to_owned()
    };
    let toml = format!(
        "[storage]\nurl = \"env:BENCH_STORE\"\nsqlite_synchronous = \"{sqlite_synchronous}\"\n\
         [security]\nmaster_key = \"env:BENCH_MASTER_KEY\"\n\
         [[tenants]]\nid = \"bench\"\napi_keys = [\"{KEY}\"]\n{}",
        sections(listen)
    );
    let env: HashMap<String, String> = [
        ("BENCH_STORE".to_string(), url),
        ("BENCH_MASTER_KEY".to_string(), Cipher::generate_key()),
    ]
    .into_iter()
    .collect();
    let registry = switchboard_connectors::registry();
    let config = config::parse(&toml, dir.path(), &env, &registry).map_err(|p| {
        anyhow::anyhow!(
            "{}",
            p.iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        )
    })?;
    let gateway = Gateway::start(config, registry).await?;
    Ok(BenchGateway {
        base: format!("http://{}", gateway.addr),
        gateway,
        dir,
    })
}

/// Peak resident set size of a process (`"self"` or a pid), MiB; 0 when unknown.
pub(crate) fn peak_rss_mib_of(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}
