//! The SSRF guard: which MCP URLs a tenant may give us, and which addresses the HTTP client may
//! connect to. `check` runs on the URL text; `address_allowed` runs on every address a host name
//! resolves to (see `GuardedResolver`), because a listed name can still point at 127.0.0.1 or
//! the cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use url::{Host, Url};

use crate::config::{Config, DEFAULT_MCP_URL};

/// Longest host name echoed back in an error, so a hostile URL cannot fill a response.
const MAX_HOST_IN_MESSAGE: usize = 100;

/// Why an MCP URL (or the address it resolved to) was refused. Messages are written for the
/// tenant who pasted the URL: they say what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the MCP URL is not a valid URL")]
    Invalid,
    #[error("the MCP URL must use https (got {scheme}:)")]
    Scheme { scheme: String },
    #[error("the MCP URL must not contain a user name or password")]
    UserInfo,
    #[error("the MCP URL has no host")]
    NoHost,
    #[error("the MCP URL must name a Bitrix24 host, not an IP address")]
    IpLiteral,
    #[error("host {host} is not an allowed Bitrix24 domain")]
    HostNotAllowed { host: String },
    #[error("the MCP URL must not contain a fragment (#...)")]
    Fragment,
    #[error(
        "host {host} resolved to a private or reserved address; only public Bitrix24 servers are allowed"
    )]
    PrivateAddress { host: String },
    #[error(
        "the MCP server answered with a redirect (HTTP {status}); redirects are not followed, use the final URL"
    )]
    Redirect { status: u16 },
}

/// Allowed host patterns plus the local-development loopback switch. Cheap to clone.
#[derive(Debug, Clone)]
pub struct UrlGuard {
    inner: Arc<GuardInner>,
}

#[derive(Debug)]
struct GuardInner {
    /// Lower-case patterns: `host` (exact) or `*.suffix` (any sub-domain, not the suffix itself).
    patterns: Vec<String>,
    allow_loopback: bool,
}

impl UrlGuard {
    /// `allowed_hosts` are patterns such as `*.bitrix24.com` or `mcp.bitrix24.com`
    /// (case-insensitive). `allow_loopback` is the local-development switch (sandbox on 127.0.0.1).
    pub fn new(allowed_hosts: &[String], allow_loopback: bool) -> Self {
        let patterns = allowed_hosts
            .iter()
            .map(|p| p.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        Self {
            inner: Arc::new(GuardInner {
                patterns,
                allow_loopback,
            }),
        }
    }

    pub fn from_config(cfg: &Config) -> Self {
        Self::new(&cfg.mcp_allowed_hosts, cfg.mcp_allow_loopback)
    }

    pub fn allow_loopback(&self) -> bool {
        self.inner.allow_loopback
    }

    /// Normalises and checks a tenant's MCP URL: trimmed, empty means the default,
    /// https only, no user info, no IP literal in any spelling (the `url` crate turns
    /// `2130706433`, `0177.0.0.1`, `0x7f.0.0.1` and `127.1` into IPv4 hosts, so one match on the
    /// parsed host catches them all), host on the allow-list, no fragment. The path is kept.
    /// IP literals are refused because they never reach the resolver that filters addresses.
    pub fn check(&self, raw: Option<&str>) -> Result<Url, UrlError> {
        let text = raw
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_MCP_URL);
        let url = Url::parse(text).map_err(|_| UrlError::Invalid)?;
        let loopback_ok = self.inner.allow_loopback;
        let host = url.host().ok_or(UrlError::NoHost)?;
        let is_loopback_host = match &host {
            Host::Ipv4(ip) => *ip == Ipv4Addr::LOCALHOST && literal_loopback_spelling(text),
            Host::Ipv6(ip) => *ip == Ipv6Addr::LOCALHOST && literal_loopback_spelling(text),
            Host::Domain(d) => is_localhost_name(d),
        };
        match url.scheme() {
            "https" => {}
            "http" if loopback_ok && is_loopback_host => {}
            other => {
                return Err(UrlError::Scheme {
                    scheme: bounded(other),
                });
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlError::UserInfo);
        }
        match host {
            Host::Ipv4(_) | Host::Ipv6(_) => {
                if !(loopback_ok && is_loopback_host) {
                    return Err(UrlError::IpLiteral);
                }
            }
            Host::Domain(d) => {
                let name = d.trim_end_matches('.').to_ascii_lowercase();
                if name.is_empty() {
                    return Err(UrlError::NoHost);
                }
                let listed = self.host_listed(&name);
                if !(listed || (loopback_ok && is_localhost_name(&name))) {
                    return Err(UrlError::HostNotAllowed {
                        host: bounded(&name),
                    });
                }
            }
        }
        if url.fragment().is_some() {
            return Err(UrlError::Fragment);
        }
        Ok(url)
    }

    fn host_listed(&self, name: &str) -> bool {
        self.inner
            .patterns
            .iter()
            .any(|p| match p.strip_prefix("*.") {
                Some(suffix) => name
                    .strip_suffix(suffix)
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                None => p == name,
            })
    }

    /// Is this resolved address one we may connect to? Refuses every non-public range; IPv6
    /// forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by it.
    /// Loopback passes only with the local-development switch.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => self.v4_allowed(v4),
            IpAddr::V6(v6) => self.v6_allowed(v6),
        }
    }

    fn v4_allowed(&self, ip: Ipv4Addr) -> bool {
        if ip.is_loopback() {
            return self.inner.allow_loopback;
        }
        let [a, b, c, _] = ip.octets();
        let refused = a == 0                                  // "this network" 0/8
            || a == 10                                        // private
            || (a == 100 && (64..=127).contains(&b))          // CGNAT 100.64/10
            || (a == 169 && b == 254)                         // link-local, cloud metadata
            || (a == 172 && (16..=31).contains(&b))           // private
            || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
            || (a == 192 && b == 0 && c == 2)                 // TEST-NET-1
            || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
            || (a == 192 && b == 168)                         // private
            || (a == 198 && (b == 18 || b == 19))             // benchmarking 198.18/15
            || (a == 198 && b == 51 && c == 100)              // TEST-NET-2
            || (a == 203 && b == 0 && c == 113)               // TEST-NET-3
            || a >= 224; // multicast 224/4, reserved 240/4, broadcast
        !refused
    }

    fn v6_allowed(&self, ip: Ipv6Addr) -> bool {
        if ip.is_loopback() {
            return self.inner.allow_loopback;
        }
        if ip.is_unspecified() {
            return false;
        }
        let seg = ip.segments();
        let embedded_low = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        if seg[..5] == [0; 5] && (seg[5] == 0xffff || seg[5] == 0) {
            return self.v4_allowed(embedded_low);
        }
        // 64:ff9b::/96 well-known NAT64 prefix.
        if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
            return self.v4_allowed(embedded_low);
        }
        // 2002::/16 6to4 carries the IPv4 address in bits 16..48.
        if seg[0] == 0x2002 {
            let v4 = Ipv4Addr::new(
                (seg[1] >> 8) as u8,
                seg[1] as u8,
                (seg[2] >> 8) as u8,
                seg[2] as u8,
            );
            return self.v4_allowed(v4);
        }
        let refused = (seg[0] == 0x64 && seg[1] == 0xff9b && seg[2] == 1) // local-use NAT64 64:ff9b:1::/48
            || seg[..4] == [0x100, 0, 0, 0]                   // discard-only 100::/64
            || (seg[0] & 0xfe00) == 0xfc00                    // unique local fc00::/7 (incl. fd00:ec2::254)
            || (seg[0] & 0xffc0) == 0xfe80                    // link-local fe80::/10
            || (seg[0] & 0xffc0) == 0xfec0                    // site-local (deprecated) fec0::/10
            || (seg[0] & 0xff00) == 0xff00                    // multicast ff00::/8
            || (seg[0] == 0x2001 && seg[1] < 0x200)           // IETF assignments 2001::/23 (Teredo, benchmarking)
            || (seg[0] == 0x2001 && seg[1] == 0xdb8)          // documentation 2001:db8::/32
            || (seg[0] & 0xfff0) == 0x3ff0; // documentation 3fff::/20
        !refused
    }
}

/// `localhost` and its sub-domains always resolve to loopback (RFC 6761).
fn is_localhost_name(name: &str) -> bool {
    let n = name.trim_end_matches('.').to_ascii_lowercase();
    n == "localhost" || n.ends_with(".localhost")
}

/// With the loopback switch only the canonical spellings pass, so `http://2130706433/` stays an
/// "IP literal" even in local runs.
fn literal_loopback_spelling(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    let Some((_, rest)) = lower.split_once("://") else {
        return false;
    };
    ["127.0.0.1", "[::1]"].iter().any(|h| {
        rest.strip_prefix(h)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with([':', '/', '?']))
    })
}

fn bounded(s: &str) -> String {
    s.chars().take(MAX_HOST_IN_MESSAGE).collect()
}

/// The resolution of a host name gave no address the guard accepts. Travels through reqwest's
/// error chain; the transport turns it into [`UrlError::PrivateAddress`].
#[derive(Debug, thiserror::Error)]
#[error("host {host} resolved only to refused addresses")]
pub(crate) struct AddressRefused {
    pub(crate) host: String,
}

/// reqwest resolver that drops every address the guard refuses, so the connection can only go
/// to an address that was checked (no time-of-check/time-of-use gap: the checked list is the list
/// hyper connects to).
#[derive(Debug, Clone)]
pub(crate) struct GuardedResolver {
    pub(crate) guard: UrlGuard,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.guard.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed: Vec<SocketAddr> =
                found.filter(|a| guard.address_allowed(a.ip())).collect();
            if allowed.is_empty() {
                tracing::warn!(host = %bounded(&host), "MCP host resolved only to refused addresses");
                return Err(Box::new(AddressRefused {
                    host: bounded(&host),
                })
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bitrix() -> UrlGuard {
        UrlGuard::new(
            &[
                "*.bitrix24.com".into(),
                "*.bitrix24.ru".into(),
                "mcp.Bitrix24.tech".into(),
            ],
            false,
        )
    }

    #[test]
    fn hostile_urls_are_refused() {
        let g = bitrix();
        let lo = UrlGuard::new(&["*.bitrix24.com".into()], true);
        let rows: Vec<(&UrlGuard, &str, &str)> = vec![
            (&g, "http://mcp.bitrix24.com/mcp/", "plain http"),
            (&g, "https://127.0.0.1/mcp/", "loopback v4 literal"),
            (&g, "https://[::1]/mcp/", "loopback v6 literal"),
            (&g, "https://10.0.0.5/mcp/", "private v4 literal"),
            (&g, "https://192.168.1.1/", "private v4 literal 192.168"),
            (&g, "https://[fd00::1]/", "private v6 literal"),
            (
                &g,
                "https://169.254.169.254/latest/meta-data/",
                "cloud metadata",
            ),
            (&g, "https://[fd00:ec2::254]/", "AWS metadata over IPv6"),
            (&g, "https://2130706433/", "decimal IPv4"),
            (&g, "https://0177.0.0.1/", "octal IPv4"),
            (&g, "https://0x7f.0.0.1/", "hex IPv4"),
            (&g, "https://127.1/", "short IPv4"),
            (&g, "https://[::ffff:127.0.0.1]/", "IPv4-mapped IPv6"),
            (
                &g,
                "https://[::ffff:a9fe:a9fe]/",
                "IPv4-mapped metadata, hex form",
            ),
            (
                &g,
                "https://8.8.8.8/",
                "public IP literal is still an IP literal",
            ),
            (&g, "https://user@mcp.bitrix24.com/mcp/", "userinfo"),
            (
                &g,
                "https://mcp.bitrix24.com:pw@evil.com/",
                "host@evil trick",
            ),
            (
                &g,
                "https://mcp.bitrix24.com@evil.com/",
                "bitrix host as user name",
            ),
            (
                &g,
                "https://mcp.bitrix24.com.evil.com/mcp/",
                "allowed name as prefix of evil",
            ),
            (&g, "https://evilbitrix24.com/", "suffix without dot"),
            (&g, "https://bitrix24.com/", "bare apex is not *.apex"),
            (&g, "https://example.com/mcp/", "unlisted host"),
            (
                &g,
                "https://mcp.bitrix24.tech.evil.io/",
                "exact pattern is exact",
            ),
            (&g, "https://localhost/mcp/", "localhost without the switch"),
            (&g, "javascript:alert(1)", "javascript scheme"),
            (&g, "file:///etc/passwd", "file scheme"),
            (&g, "ftp://mcp.bitrix24.com/", "ftp scheme"),
            (&g, "https:///mcp/", "empty host"),
            (&g, "https://", "nothing after scheme"),
            (&g, "not a url", "not a URL"),
            (&g, "https://mcp.bitrix24.com/mcp/#frag", "fragment"),
            (&g, "//mcp.bitrix24.com/mcp/", "scheme-relative"),
            (
                &lo,
                "http://mcp.bitrix24.com/mcp/",
                "switch does not allow http to real hosts",
            ),
            (
                &lo,
                "http://2130706433/",
                "switch allows only canonical loopback spellings",
            ),
            (
                &lo,
                "http://10.0.0.1/",
                "switch does not allow private literals",
            ),
            (&lo, "http://127.0.0.2/", "switch allows 127.0.0.1 only"),
        ];
        assert!(rows.len() >= 25);
        for (guard, url, why) in rows {
            let got = guard.check(Some(url));
            assert!(got.is_err(), "{why}: {url} was accepted as {got:?}");
        }
    }

    #[test]
    fn refusals_say_what_to_change() {
        let g = bitrix();
        assert_eq!(
            g.check(Some("http://mcp.bitrix24.com/"))
                .unwrap_err()
                .to_string(),
            "the MCP URL must use https (got http:)"
        );
        assert_eq!(
            g.check(Some("https://evil.com/")).unwrap_err().to_string(),
            "host evil.com is not an allowed Bitrix24 domain"
        );
        assert_eq!(
            g.check(Some("https://2130706433/")).unwrap_err(),
            UrlError::IpLiteral
        );
        assert_eq!(
            g.check(Some("https://u:p@mcp.bitrix24.com/")).unwrap_err(),
            UrlError::UserInfo
        );
    }

    #[test]
    fn good_urls_are_accepted_and_kept() {
        let g = bitrix();
        let lo = UrlGuard::new(&["*.bitrix24.com".into()], true);
        let rows: Vec<(&UrlGuard, Option<&str>, &str, &str)> = vec![
            (
                &g,
                None,
                "https://mcp.bitrix24.com/mcp/",
                "absent -> default",
            ),
            (
                &g,
                Some("   "),
                "https://mcp.bitrix24.com/mcp/",
                "blank -> default",
            ),
            (
                &g,
                Some(" https://mcp.bitrix24.com/mcp/ "),
                "https://mcp.bitrix24.com/mcp/",
                "trimmed",
            ),
            (
                &g,
                Some("https://MyPortal.Bitrix24.RU/rest/mcp"),
                "https://myportal.bitrix24.ru/rest/mcp",
                "portal subdomain, path kept",
            ),
            (
                &g,
                Some("https://a.b.bitrix24.com:8443/x?y=1"),
                "https://a.b.bitrix24.com:8443/x?y=1",
                "deeper subdomain, port, query",
            ),
            (
                &g,
                Some("https://mcp.bitrix24.tech/mcp/"),
                "https://mcp.bitrix24.tech/mcp/",
                "exact pattern, case-insensitive",
            ),
            (
                &lo,
                Some("http://127.0.0.1:8080/mcp/"),
                "http://127.0.0.1:8080/mcp/",
                "sandbox with the switch",
            ),
            (
                &lo,
                Some("http://[::1]:9/mcp/"),
                "http://[::1]:9/mcp/",
                "v6 sandbox with the switch",
            ),
            (
                &lo,
                Some("http://localhost:9/mcp/"),
                "http://localhost:9/mcp/",
                "localhost with the switch",
            ),
        ];
        for (guard, raw, want, why) in rows {
            match guard.check(raw) {
                Ok(u) => assert_eq!(u.as_str(), want, "{why}"),
                Err(e) => panic!("{why}: {raw:?} refused: {e}"),
            }
        }
    }

    #[test]
    fn address_table() {
        let strict = bitrix();
        let lo = UrlGuard::new(&[], true);
        let rows: Vec<(&str, bool, bool, &str)> = vec![
            // (address, allowed strict, allowed with loopback switch, why)
            ("8.8.8.8", true, true, "public v4"),
            ("93.184.216.34", true, true, "public v4 (2)"),
            ("127.0.0.1", false, true, "loopback"),
            ("127.8.9.10", false, true, "loopback /8"),
            ("10.1.2.3", false, false, "10/8"),
            ("172.16.0.1", false, false, "172.16/12 start"),
            ("172.31.255.255", false, false, "172.16/12 end"),
            ("172.32.0.1", true, true, "just past 172.16/12"),
            ("192.168.0.1", false, false, "192.168/16"),
            ("169.254.169.254", false, false, "metadata"),
            ("169.254.1.1", false, false, "link-local"),
            ("100.64.0.1", false, false, "CGNAT start"),
            ("100.127.255.254", false, false, "CGNAT end"),
            ("100.128.0.1", true, true, "past CGNAT"),
            ("0.0.0.0", false, false, "unspecified"),
            ("0.1.2.3", false, false, "0/8"),
            ("224.0.0.1", false, false, "multicast"),
            ("255.255.255.255", false, false, "broadcast"),
            ("240.0.0.1", false, false, "reserved"),
            ("192.0.2.1", false, false, "TEST-NET-1"),
            ("198.51.100.7", false, false, "TEST-NET-2"),
            ("203.0.113.9", false, false, "TEST-NET-3"),
            ("198.18.0.1", false, false, "benchmark"),
            ("192.0.0.8", false, false, "IETF assignments"),
            ("2a00:1450:4001::1", true, true, "public v6"),
            ("::1", false, true, "v6 loopback"),
            ("::", false, false, "v6 unspecified"),
            ("fc00::1", false, false, "ULA fc"),
            ("fd12:3456::1", false, false, "ULA fd"),
            ("fd00:ec2::254", false, false, "AWS metadata v6"),
            ("fe80::1", false, false, "v6 link-local"),
            ("ff02::1", false, false, "v6 multicast"),
            ("2001:db8::1", false, false, "v6 documentation"),
            (
                "::ffff:127.0.0.1",
                false,
                true,
                "mapped loopback judged as v4",
            ),
            ("::ffff:169.254.169.254", false, false, "mapped metadata"),
            ("::ffff:8.8.8.8", true, true, "mapped public"),
            ("::10.0.0.1", false, false, "compatible private"),
            ("64:ff9b::a9fe:a9fe", false, false, "NAT64 of metadata"),
            ("64:ff9b::808:808", true, true, "NAT64 of public"),
            ("2002:c0a8:0101::1", false, false, "6to4 of 192.168.1.1"),
        ];
        for (ip, strict_ok, lo_ok, why) in rows {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(
                strict.address_allowed(addr),
                strict_ok,
                "{why}: {ip} (strict)"
            );
            assert_eq!(
                lo.address_allowed(addr),
                lo_ok,
                "{why}: {ip} (loopback switch)"
            );
        }
    }
}
