//! Configuration, read once per container from the environment variables (the README's
//! "Configuration" table lists them).
//! The same names are used by every function, the local stack, the tests and the SAM template.

use std::time::Duration;

/// The default `MCP_ALLOWED_HOSTS`: Bitrix24's hosted MCP servers only (international cloud
/// and the `.tech` cloud), not every portal under `*.bitrix24.*`, so a tenant's token is only
/// ever sent to an MCP endpoint. An operator widens the list (`*.bitrix24.com`) on purpose.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &["mcp.bitrix24.com", "mcp.bitrix24.tech"];

/// HS256 secrets shorter than this are refused at start: RFC 7518 §3.2 asks for a key at least
/// as long as the hash output (256 bits), and a short shared secret can be brute-forced offline
/// from any one token, after which anyone can mint a token for any tenant.
pub const MIN_HS256_SECRET_BYTES: usize = 32;

/// The hosted Bitrix24 MCP server (international cloud).
pub const DEFAULT_MCP_URL: &str = "https://mcp.bitrix24.com/mcp/";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Everything the functions read from the environment. Secrets (`JWT_HS256_SECRET`) are kept
/// out of `Debug`.
#[derive(Clone)]
pub struct Config {
    pub table_name: String,
    pub kms_key_id: Option<String>,
    pub lead_queue_url: Option<String>,
    pub dead_letter_queue_url: Option<String>,
    /// The outbound FIFO queue where lead-watch publishes `lead.changed` events.
    pub lead_changes_queue_url: Option<String>,
    /// The queue of per-tenant watch work that lead-watch feeds (scheduled) and consumes.
    pub watch_queue_url: Option<String>,
    pub aws_endpoint_url: Option<String>,
    pub mcp_allowed_hosts: Vec<String>,
    pub mcp_allow_loopback: bool,
    pub mcp_tool_map: Option<String>,
    pub jwt_hs256_secret: Option<crate::secret::SecretToken>,
    /// In AWS: the name of the SSM SecureString holding the HS256 secret, read once per
    /// container at init (`JWT_HS256_SECRET_PARAMETER`); the secret itself is never an
    /// environment value there (`lambda:GetFunctionConfiguration` would show it).
    pub jwt_hs256_secret_parameter: Option<String>,
    /// `iss` an HS256 token must carry, when set.
    pub jwt_issuer: Option<String>,
    /// Accepted `aud` values of HS256 tokens (one must match), when set; comma list.
    pub jwt_audience: Vec<String>,
    pub tenant_claim: String,
    pub token_cache_ttl: Duration,
    pub default_phone_region: Option<String>,
    /// The lead queue's redrive `maxReceiveCount`: after that many receives minus one a
    /// retryable event is parked instead of retried, so retries never become dead letters.
    pub lead_queue_max_receive_count: u32,
    /// How long after events were parked on a working integration a replay is tried anyway
    /// (`REPLAY_AFTER_PARK_SECS`, default 300), for tenants that send nothing more.
    pub replay_after_park: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("table_name", &self.table_name)
            .field("kms_key_id", &self.kms_key_id)
            .field("lead_queue_url", &self.lead_queue_url)
            .field("dead_letter_queue_url", &self.dead_letter_queue_url)
            .field("lead_changes_queue_url", &self.lead_changes_queue_url)
            .field("watch_queue_url", &self.watch_queue_url)
            .field("aws_endpoint_url", &self.aws_endpoint_url)
            .field("mcp_allowed_hosts", &self.mcp_allowed_hosts)
            .field("mcp_allow_loopback", &self.mcp_allow_loopback)
            .field("mcp_tool_map", &self.mcp_tool_map.as_ref().map(|_| "<set>"))
            .field("jwt_hs256_secret", &self.jwt_hs256_secret)
            .field(
                "jwt_hs256_secret_parameter",
                &self.jwt_hs256_secret_parameter,
            )
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("tenant_claim", &self.tenant_claim)
            .field("token_cache_ttl", &self.token_cache_ttl)
            .field("default_phone_region", &self.default_phone_region)
            .field(
                "lead_queue_max_receive_count",
                &self.lead_queue_max_receive_count,
            )
            .finish()
    }
}

/// `MCP_ALLOWED_HOSTS`: a comma list of host patterns, else the hosted MCP servers.
fn allowed_hosts(raw: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(list) = raw else {
        return Ok(DEFAULT_ALLOWED_HOSTS
            .iter()
            .map(|h| (*h).to_owned())
            .collect());
    };
    let hosts: Vec<String> = list
        .split(',')
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err(ConfigError::Invalid {
            name: "MCP_ALLOWED_HOSTS",
            reason: "no host pattern in the list".into(),
        });
    }
    Ok(hosts)
}

/// `DEFAULT_PHONE_REGION`: a two-letter ISO 3166 code.
fn phone_region(raw: Option<String>) -> Result<Option<String>, ConfigError> {
    match raw {
        Some(r) if r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic()) => {
            Ok(Some(r.to_ascii_uppercase()))
        }
        Some(_) => Err(ConfigError::Invalid {
            name: "DEFAULT_PHONE_REGION",
            reason: "expected a two-letter ISO 3166 code such as UZ".into(),
        }),
        None => Ok(None),
    }
}

/// `LEAD_QUEUE_MAX_RECEIVE_COUNT`: at least 1, default 5 (the template's redrive setting).
fn max_receive_count(raw: Option<String>) -> Result<u32, ConfigError> {
    let n = parse_num("LEAD_QUEUE_MAX_RECEIVE_COUNT", raw, 5)?;
    if n == 0 {
        return Err(ConfigError::Invalid {
            name: "LEAD_QUEUE_MAX_RECEIVE_COUNT",
            reason: "must be at least 1".into(),
        });
    }
    u32::try_from(n).map_err(|_| ConfigError::Invalid {
        name: "LEAD_QUEUE_MAX_RECEIVE_COUNT",
        reason: "too large".into(),
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get`, so tests can pass plain maps.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let opt = |name: &str| {
            get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let table_name = opt("TABLE_NAME").ok_or(ConfigError::Missing("TABLE_NAME"))?;
        let mcp_allowed_hosts = allowed_hosts(opt("MCP_ALLOWED_HOSTS"))?;
        let mcp_allow_loopback = parse_bool("MCP_ALLOW_LOOPBACK", opt("MCP_ALLOW_LOOPBACK"))?;
        let aws_endpoint_url = opt("AWS_ENDPOINT_URL");
        // The loopback switch exists for the local sandbox. Inside Lambda, 127.0.0.1:9001 is the
        // Runtime API (a tenant-chosen mcp_url there could read or answer invocations), so the
        // switch is only honoured where AWS itself is a local stack on loopback.
        if mcp_allow_loopback && !aws_endpoint_url.as_deref().is_some_and(is_loopback_url) {
            return Err(ConfigError::Invalid {
                name: "MCP_ALLOW_LOOPBACK",
                reason: "true is for local runs only: it needs AWS_ENDPOINT_URL on a loopback \
                         address (the local stack)"
                    .into(),
            });
        }
        let jwt_hs256_secret = match opt("JWT_HS256_SECRET") {
            Some(s) => Some(parse_hs256_secret("JWT_HS256_SECRET", s)?),
            None => None,
        };
        let jwt_audience: Vec<String> = opt("JWT_AUDIENCE")
            .map(|list| {
                list.split(',')
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let token_cache_ttl = Duration::from_secs(parse_num(
            "TOKEN_CACHE_TTL_SECS",
            opt("TOKEN_CACHE_TTL_SECS"),
            300,
        )?);
        let lead_queue_max_receive_count = max_receive_count(opt("LEAD_QUEUE_MAX_RECEIVE_COUNT"))?;
        let replay_after_park = Duration::from_secs(parse_num(
            "REPLAY_AFTER_PARK_SECS",
            opt("REPLAY_AFTER_PARK_SECS"),
            300,
        )?);
        let default_phone_region = phone_region(opt("DEFAULT_PHONE_REGION"))?;
        Ok(Self {
            table_name,
            kms_key_id: opt("KMS_KEY_ID"),
            lead_queue_url: opt("LEAD_QUEUE_URL"),
            dead_letter_queue_url: opt("DEAD_LETTER_QUEUE_URL"),
            lead_changes_queue_url: opt("LEAD_CHANGES_QUEUE_URL"),
            watch_queue_url: opt("WATCH_QUEUE_URL"),
            aws_endpoint_url,
            mcp_allowed_hosts,
            mcp_allow_loopback,
            mcp_tool_map: opt("MCP_TOOL_MAP"),
            jwt_hs256_secret,
            jwt_hs256_secret_parameter: opt("JWT_HS256_SECRET_PARAMETER"),
            jwt_issuer: opt("JWT_ISSUER"),
            jwt_audience,
            tenant_claim: opt("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
            token_cache_ttl,
            default_phone_region,
            lead_queue_max_receive_count,
            replay_after_park,
        })
    }

    pub fn require_kms_key_id(&self) -> Result<&str, ConfigError> {
        self.kms_key_id
            .as_deref()
            .ok_or(ConfigError::Missing("KMS_KEY_ID"))
    }

    pub fn require_lead_queue_url(&self) -> Result<&str, ConfigError> {
        self.lead_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("LEAD_QUEUE_URL"))
    }

    pub fn require_lead_changes_queue_url(&self) -> Result<&str, ConfigError> {
        self.lead_changes_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("LEAD_CHANGES_QUEUE_URL"))
    }

    pub fn require_watch_queue_url(&self) -> Result<&str, ConfigError> {
        self.watch_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("WATCH_QUEUE_URL"))
    }

    pub fn require_dead_letter_queue_url(&self) -> Result<&str, ConfigError> {
        self.dead_letter_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("DEAD_LETTER_QUEUE_URL"))
    }
}

/// The HS256 secret, refused when shorter than [`MIN_HS256_SECRET_BYTES`]; `source` names where
/// it came from (the variable, or the SSM parameter) and the error never contains the value.
pub fn parse_hs256_secret(
    source: &'static str,
    secret: String,
) -> Result<crate::secret::SecretToken, ConfigError> {
    if secret.len() < MIN_HS256_SECRET_BYTES {
        return Err(ConfigError::Invalid {
            name: source,
            reason: format!(
                "the HS256 secret has {} bytes; at least {MIN_HS256_SECRET_BYTES} are required",
                secret.len()
            ),
        });
    }
    Ok(crate::secret::SecretToken::new(secret))
}

/// `http://127.0.0.1:4566`, `http://[::1]:5000`, `http://localhost:5000`: an endpoint on this
/// machine. Anything that does not parse as a URL is not loopback.
fn is_loopback_url(text: &str) -> bool {
    match url::Url::parse(text)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

fn parse_bool(name: &'static str, v: Option<String>) -> Result<bool, ConfigError> {
    match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            name,
            reason: "expected true or false".into(),
        }),
    }
}

fn parse_num(name: &'static str, v: Option<String>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(s) => s.parse().map_err(|_| ConfigError::Invalid {
            name,
            reason: "expected a whole number".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn missing_table_is_named() {
        let e = cfg(&[]).unwrap_err();
        assert_eq!(e, ConfigError::Missing("TABLE_NAME"));
        assert!(e.to_string().contains("TABLE_NAME"));
    }

    #[test]
    fn defaults_follow_the_design() {
        let c = cfg(&[("TABLE_NAME", "t")]).unwrap();
        assert_eq!(c.tenant_claim, "tenant_id");
        assert_eq!(c.token_cache_ttl, Duration::from_secs(300));
        assert!(!c.mcp_allow_loopback);
        assert_eq!(
            c.mcp_allowed_hosts,
            ["mcp.bitrix24.com", "mcp.bitrix24.tech"],
            "by default a token goes to the hosted MCP servers only"
        );
        assert!(c.jwt_issuer.is_none() && c.jwt_audience.is_empty());
        assert_eq!(c.lead_queue_max_receive_count, 5);
        assert_eq!(
            c.require_kms_key_id().unwrap_err(),
            ConfigError::Missing("KMS_KEY_ID")
        );
        assert_eq!(
            c.require_dead_letter_queue_url().unwrap_err().to_string(),
            "environment variable DEAD_LETTER_QUEUE_URL is required but not set"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("MCP_ALLOW_LOOPBACK", "maybe"),
            ("TOKEN_CACHE_TTL_SECS", "five"),
            ("DEFAULT_PHONE_REGION", "Uzbekistan"),
            ("MCP_ALLOWED_HOSTS", " , "),
            ("LEAD_QUEUE_MAX_RECEIVE_COUNT", "0"),
        ] {
            let e = cfg(&[("TABLE_NAME", "t"), (k, v)]).unwrap_err();
            assert!(e.to_string().contains(k), "{k}={v}: {e}");
        }
    }

    const SECRET: &str = "hs-secret-xyz-0123456789-abcdefghij";

    #[test]
    fn secret_is_not_in_debug() {
        let c = cfg(&[("TABLE_NAME", "t"), ("JWT_HS256_SECRET", SECRET)]).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
        assert_eq!(c.jwt_hs256_secret.unwrap().expose(), SECRET);
    }

    #[test]
    fn a_short_hs256_secret_is_refused_at_start_without_showing_it() {
        let short = "only-31-bytes-long-secret-value";
        assert_eq!(short.len(), 31);
        let e = cfg(&[("TABLE_NAME", "t"), ("JWT_HS256_SECRET", short)]).unwrap_err();
        assert!(e.to_string().contains("JWT_HS256_SECRET"), "{e}");
        assert!(e.to_string().contains("32"), "{e}");
        assert!(!e.to_string().contains(short), "{e}");
        let ok = &short.repeat(2)[..32];
        assert!(cfg(&[("TABLE_NAME", "t"), ("JWT_HS256_SECRET", ok)]).is_ok());
    }

    #[test]
    fn issuer_and_audience_are_read_when_set() {
        let c = cfg(&[
            ("TABLE_NAME", "t"),
            ("JWT_ISSUER", "https://p.supabase.co/auth/v1"),
            ("JWT_AUDIENCE", "authenticated, other"),
            ("JWT_HS256_SECRET_PARAMETER", "/teleagent/jwt"),
        ])
        .unwrap();
        assert_eq!(
            c.jwt_issuer.as_deref(),
            Some("https://p.supabase.co/auth/v1")
        );
        assert_eq!(c.jwt_audience, ["authenticated", "other"]);
        assert_eq!(
            c.jwt_hs256_secret_parameter.as_deref(),
            Some("/teleagent/jwt")
        );
    }

    /// In Lambda 127.0.0.1:9001 is the Runtime API: the loopback switch needs a local stack.
    #[test]
    fn loopback_switch_needs_a_loopback_aws_endpoint() {
        let rows: [(Option<&str>, bool, &str); 8] = [
            (None, false, "real AWS (no endpoint override), as in Lambda"),
            (
                Some("https://sqs.eu-west-1.amazonaws.com"),
                false,
                "a real AWS endpoint",
            ),
            (
                Some("http://10.0.0.5:4566"),
                false,
                "a private address is not this machine",
            ),
            (Some("not a url"), false, "garbage"),
            (Some("http://127.0.0.1:5000"), true, "moto on loopback"),
            (Some("http://127.8.0.1:5000"), true, "anywhere in 127/8"),
            (Some("http://[::1]:5000"), true, "v6 loopback"),
            (Some("http://localhost:4566"), true, "localhost"),
        ];
        for (endpoint, ok, why) in rows {
            let mut pairs = vec![("TABLE_NAME", "t"), ("MCP_ALLOW_LOOPBACK", "true")];
            if let Some(e) = endpoint {
                pairs.push(("AWS_ENDPOINT_URL", e));
            }
            let got = cfg(&pairs);
            assert_eq!(got.is_ok(), ok, "{why}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains("MCP_ALLOW_LOOPBACK"), "{why}: {e}");
            }
        }
        // The switch off never needs anything.
        assert!(cfg(&[("TABLE_NAME", "t"), ("MCP_ALLOW_LOOPBACK", "false")]).is_ok());
    }
}
