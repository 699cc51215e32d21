//! Fetching a media URL ourselves (to upload it to a platform), guarded against SSRF: http(s)
//! only, the host resolved once and refused when it is loopback, private, link-local (cloud
//! metadata), unspecified or multicast unless the operator allows private addresses; the
//! connection is pinned to the address checked; size and time are capped.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use switchboard_core::error::ConnectorError;

/// Operator-level options for the connectors of a build.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// Allow media URLs on loopback and private networks (tests, on-premise media servers).
    pub allow_private_media: bool,
    /// Largest media fetched for an upload.
    pub max_media_bytes: usize,
}

impl Default for ConnectorOptions {
    fn default() -> Self {
        ConnectorOptions {
            allow_private_media: false,
            max_media_bytes: 50 << 20,
        }
    }
}

/// A fetched file.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
    pub file_name: String,
}

/// Not a public unicast address: loopback, private, link-local (cloud metadata),
/// unspecified ("this network"), multicast, broadcast, CGNAT, benchmarking, IETF protocol
/// assignments, reserved; in IPv6 also unique-local, site-local, and the IPv4 addresses
/// embedded in mapped, compatible, NAT64 and 6to4 addresses.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
                || o[0] == 0 // "this network", 0.0.0.0/8
                || (o[0] == 100 && (64..128).contains(&o[1])) // carrier-grade NAT
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19)) // benchmarking
                || o[0] >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let embedded = |a: u16, b: u16| {
                let [x, y] = a.to_be_bytes();
                let [z, w] = b.to_be_bytes();
                is_private(IpAddr::V4(std::net::Ipv4Addr::new(x, y, z, w)))
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated)
                || v6.to_ipv4_mapped().is_some_and(|v4| is_private(IpAddr::V4(v4)))
                || (s[..6] == [0; 6] && embedded(s[6], s[7])) // IPv4-compatible
                || (s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] && embedded(s[6], s[7])) // NAT64
                || (s[0] == 0x2002 && embedded(s[1], s[2])) // 6to4
        }
    }
}

/// Resolves `url`'s host once, for a connection pinned to the address returned (no second
/// lookup that DNS rebinding could answer differently). A host resolving to a private or local
/// address is refused unless `allowed` names the host or one of its addresses.
pub async fn resolve_public(
    url: &url::Url,
    allowed: &[String],
) -> Result<(String, SocketAddr), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs".into());
    }
    let host = url.host_str().ok_or("the URL has no host")?;
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {bare}: {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| format!("{bare} has no address"))?;
    let listed = |a: &SocketAddr| {
        allowed.iter().any(|h| {
            h.eq_ignore_ascii_case(&bare) || h.parse::<IpAddr>().is_ok_and(|ip| ip == a.ip())
        })
    };
    // The address itself is not named: a tenant must not map internal names through this.
    if addrs.iter().any(|a| is_private(a.ip()) && !listed(a)) {
        return Err(format!(
            "{bare} resolves to a private or local address (security.webhook_allowed_hosts can allow it)"
        ));
    }
    Ok((bare, addr))
}

/// Fetches `url` under `options`.
pub async fn fetch_media(url: &str, options: &ConnectorOptions) -> Result<Fetched, ConnectorError> {
    let parsed =
        url::Url::parse(url).map_err(|e| ConnectorError::permanent(format!("media url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConnectorError::permanent("media url must be http or https"));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| ConnectorError::permanent("media url has no host"))?
        .to_string();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare_host.as_str(), port))
        .await
        .map_err(|e| ConnectorError::transient(format!("cannot resolve the media host: {e}")))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| ConnectorError::permanent("the media host has no address"))?;
    if !options.allow_private_media && addrs.iter().any(|a| is_private(a.ip())) {
        return Err(ConnectorError::permanent(format!(
            "media url {host} resolves to a private or local address; refused"
        )));
    }
    let client = reqwest::Client::builder()
        .resolve(&bare_host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| ConnectorError::transient(format!("http client: {e}")))?;
    let mut resp = client.get(parsed.clone()).send().await.map_err(|e| {
        ConnectorError::transient(format!(
            "media fetch: {}",
            if e.is_timeout() {
                "timed out"
            } else {
                "failed"
            }
        ))
    })?;
    if !resp.status().is_success() {
        let status = resp.status().as_u16();
        let msg = format!("media url answered HTTP {status}");
        return Err(if status >= 500 {
            ConnectorError::transient(msg)
        } else {
            ConnectorError::permanent(msg)
        });
    }
    if resp
        .content_length()
        .is_some_and(|n| n as usize > options.max_media_bytes)
    {
        return Err(ConnectorError::permanent(format!(
            "media is larger than {} bytes",
            options.max_media_bytes
        )));
    }
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|_| ConnectorError::transient("media download interrupted"))?
    {
        if bytes.len() + chunk.len() > options.max_media_bytes {
            return Err(ConnectorError::permanent(format!(
                "media is larger than {} bytes",
                options.max_media_bytes
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    let file_name = parsed
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "file".into());
    Ok(Fetched {
        bytes,
        content_type,
        file_name,
    })
}

#[cfg(test)]
mod tests {
    use super::is_private;

    #[test]
    fn private_and_embedded_private_addresses_are_refused_and_public_ones_pass() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.1.2.3",
            "100.64.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "fec0::1",
            "::ffff:10.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
        ] {
            assert!(is_private(a.parse().unwrap()), "{a} passed");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(!is_private(a.parse().unwrap()), "{a} refused");
        }
    }

    use super::*;

    #[test]
    fn private_and_metadata_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn loopback_urls_are_refused_unless_allowed() {
        let err = fetch_media("http://127.0.0.1:9/x.png", &ConnectorOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("private or local"), "{err}");
        let err = fetch_media("file:///etc/passwd", &ConnectorOptions::default())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
    }
}
