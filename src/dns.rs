//! DNS service discovery: one task per upstream with `dns_refresh`, on the control runtime.
//! Each period it resolves the upstream's endpoint names to all their addresses (at most
//! `MAX_ADDRESSES_PER_NAME` each) and, when a set changed, asks the runtime to publish a
//! snapshot with them (`Follow::publish_resolved`, the reload path). A name that fails keeps
//! its last good set; the failure is logged once, and its recovery once.

use crate::config::dns::{names, Resolved, MAX_ADDRESSES_PER_NAME};
use crate::config::DnsConfig;
use crate::snapshot::Snapshot;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;
use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// What the resolver tasks need of the running levee (`crate::runtime::Levee`).
pub trait Follow: Send + Sync + 'static {
    /// The snapshot now serving.
    fn current(&self) -> Arc<Snapshot>;
    /// Publishes a snapshot in which `upstream`'s names resolve to `resolved`, as a reload does.
    fn publish_resolved<'a>(
        &'a self,
        upstream: &'a str,
        resolved: Resolved,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

/// The running resolver tasks, by upstream name.
#[derive(Default)]
pub struct Tasks {
    running: Arc<parking_lot::Mutex<HashSet<String>>>,
}

impl Tasks {
    /// Starts a task for each upstream of `snapshot` with `dns_refresh` that has none; a task
    /// ends by itself once its upstream is gone or no longer has `dns_refresh`.
    pub fn follow(&self, levee: Weak<dyn Follow>, snapshot: &Snapshot) {
        for u in &snapshot.config.upstreams {
            if u.dns_refresh.is_none() || names(u).is_empty() {
                continue;
            }
            if !self.running.lock().insert(u.name.clone()) {
                continue;
            }
            let running = self.running.clone();
            let name = u.name.clone();
            let levee = levee.clone();
            tokio::spawn(async move {
                run(levee, &name).await;
                running.lock().remove(&name);
            });
        }
    }
}

async fn run(levee: Weak<dyn Follow>, upstream: &str) {
    let mut resolver: Option<(DnsConfig, TokioResolver)> = None;
    let mut failing: HashSet<String> = HashSet::new();
    loop {
        let Some(levee) = levee.upgrade() else { return };
        let snapshot = levee.current();
        let Some(u) = snapshot
            .config
            .upstreams
            .iter()
            .find(|u| u.name == upstream && u.dns_refresh.is_some())
        else {
            return;
        };
        let period = u.dns_refresh.unwrap_or(Duration::from_secs(5));
        let dns = &snapshot.config.dns;
        if resolver.as_ref().is_none_or(|(c, _)| c != dns) {
            match new_resolver(dns) {
                Ok(r) => resolver = Some((dns.clone(), r)),
                Err(e) => {
                    if failing.insert(String::new()) {
                        tracing::error!(upstream, error = %e, "cannot read the system's DNS config; endpoints stay as they are");
                    }
                }
            }
        }
        if let Some((_, r)) = &resolver {
            let last = snapshot.resolved.get(upstream);
            let mut now = Resolved::new();
            for (host, port) in names(u) {
                let endpoint = format!("{host}:{port}");
                match lookup(r, &host, port).await {
                    Ok(addresses) => {
                        if failing.remove(&endpoint) {
                            tracing::info!(upstream, endpoint, "DNS lookup succeeds again");
                        }
                        now.insert(endpoint, addresses);
                    }
                    Err(e) => {
                        if failing.insert(endpoint.clone()) {
                            tracing::warn!(upstream, endpoint, error = %e, "DNS lookup failed; keeping the last addresses (logged once until it succeeds)");
                        }
                        if let Some(kept) = last.and_then(|l| l.get(&endpoint)) {
                            now.insert(endpoint, kept.clone());
                        }
                    }
                }
            }
            if last != Some(&now) {
                tracing::info!(upstream, resolved = ?now, "DNS: endpoint addresses changed");
                levee.publish_resolved(upstream, now).await;
            }
        }
        drop(snapshot);
        drop(levee);
        tokio::time::sleep(period).await;
    }
}

fn new_resolver(dns: &DnsConfig) -> Result<TokioResolver, String> {
    let (config, mut opts) = if dns.nameservers.is_empty() {
        hickory_resolver::system_conf::read_system_conf().map_err(|e| e.to_string())?
    } else {
        let servers: Vec<NameServerConfig> = dns
            .nameservers
            .iter()
            .map(|a| NameServerConfig::new(*a, Protocol::Udp))
            .collect();
        (
            ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers)),
            ResolverOpts::default(),
        )
    };
    // Every period asks again: the records' TTLs are the DNS server's business, the period ours.
    opts.cache_size = 0;
    opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    opts.timeout = opts.timeout.min(Duration::from_secs(2));
    Ok(
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build(),
    )
}

/// All addresses of `host` as `ip:port`, sorted, at most `MAX_ADDRESSES_PER_NAME`; an empty
/// answer is an error (an upstream never loses all its endpoints to DNS).
async fn lookup(r: &TokioResolver, host: &str, port: u16) -> Result<Vec<String>, String> {
    let answer = r.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let mut ips: Vec<std::net::IpAddr> = answer.iter().collect();
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    if ips.len() > MAX_ADDRESSES_PER_NAME {
        tracing::warn!(
            host,
            addresses = ips.len(),
            "DNS answer has more than {MAX_ADDRESSES_PER_NAME} addresses; using the first {MAX_ADDRESSES_PER_NAME}"
        );
        ips.truncate(MAX_ADDRESSES_PER_NAME);
    }
    Ok(ips
        .into_iter()
        .map(|ip| std::net::SocketAddr::new(ip, port).to_string())
        .collect())
}
