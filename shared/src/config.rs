//! Configuration, read once per container from the environment variables of design.md §7.
//! The same names are used by every function, the local stack, the tests and the SAM template.

use std::time::Duration;

/// Bitrix24's cloud domains: the default `MCP_ALLOWED_HOSTS`.
pub const DEFAULT_ALLOWED_HOSTS: &[&str] = &[
    "*.bitrix24.com",
    "*.bitrix24.tech",
    "*.bitrix24.ru",
    "*.bitrix24.de",
    "*.bitrix24.eu",
    "*.bitrix24.by",
    "*.bitrix24.kz",
    "*.bitrix24.ua",
    "*.bitrix24.es",
    "*.bitrix24.fr",
    "*.bitrix24.it",
    "*.bitrix24.pl",
    "*.bitrix24.uk",
    "*.bitrix24.in",
    "*.bitrix24.com.br",
    "*.bitrix24.jp",
    "*.bitrix24.cn",
    "*.bitrix24.id",
    "*.bitrix24.vn",
];

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
    pub aws_endpoint_url: Option<String>,
    pub mcp_allowed_hosts: Vec<String>,
    pub mcp_allow_loopback: bool,
    pub mcp_tool_map: Option<String>,
    pub jwt_hs256_secret: Option<crate::secret::SecretToken>,
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
            .field("aws_endpoint_url", &self.aws_endpoint_url)
            .field("mcp_allowed_hosts", &self.mcp_allowed_hosts)
            .field("mcp_allow_loopback", &self.mcp_allow_loopback)
            .field("mcp_tool_map", &self.mcp_tool_map.as_ref().map(|_| "<set>"))
            .field("jwt_hs256_secret", &self.jwt_hs256_secret)
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
        let mcp_allowed_hosts = match opt("MCP_ALLOWED_HOSTS") {
            Some(list) => {
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
                hosts
            }
            None => DEFAULT_ALLOWED_HOSTS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        };
        let mcp_allow_loopback = parse_bool("MCP_ALLOW_LOOPBACK", opt("MCP_ALLOW_LOOPBACK"))?;
        let token_cache_ttl = Duration::from_secs(parse_num(
            "TOKEN_CACHE_TTL_SECS",
            opt("TOKEN_CACHE_TTL_SECS"),
            300,
        )?);
        let lead_queue_max_receive_count = parse_num(
            "LEAD_QUEUE_MAX_RECEIVE_COUNT",
            opt("LEAD_QUEUE_MAX_RECEIVE_COUNT"),
            5,
        )?;
        if lead_queue_max_receive_count == 0 {
            return Err(ConfigError::Invalid {
                name: "LEAD_QUEUE_MAX_RECEIVE_COUNT",
                reason: "must be at least 1".into(),
            });
        }
        let replay_after_park = Duration::from_secs(parse_num(
            "REPLAY_AFTER_PARK_SECS",
            opt("REPLAY_AFTER_PARK_SECS"),
            300,
        )?);
        let default_phone_region = match opt("DEFAULT_PHONE_REGION") {
            Some(r) if r.len() == 2 && r.chars().all(|c| c.is_ascii_alphabetic()) => {
                Some(r.to_ascii_uppercase())
            }
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "DEFAULT_PHONE_REGION",
                    reason: "expected a two-letter ISO 3166 code such as UZ".into(),
                });
            }
            None => None,
        };
        Ok(Self {
            table_name,
            kms_key_id: opt("KMS_KEY_ID"),
            lead_queue_url: opt("LEAD_QUEUE_URL"),
            dead_letter_queue_url: opt("DEAD_LETTER_QUEUE_URL"),
            aws_endpoint_url: opt("AWS_ENDPOINT_URL"),
            mcp_allowed_hosts,
            mcp_allow_loopback,
            mcp_tool_map: opt("MCP_TOOL_MAP"),
            jwt_hs256_secret: opt("JWT_HS256_SECRET").map(crate::secret::SecretToken::new),
            tenant_claim: opt("TENANT_CLAIM").unwrap_or_else(|| "tenant_id".to_owned()),
            token_cache_ttl,
            default_phone_region,
            lead_queue_max_receive_count: lead_queue_max_receive_count as u32,
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

    pub fn require_dead_letter_queue_url(&self) -> Result<&str, ConfigError> {
        self.dead_letter_queue_url
            .as_deref()
            .ok_or(ConfigError::Missing("DEAD_LETTER_QUEUE_URL"))
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
        assert!(c.mcp_allowed_hosts.contains(&"*.bitrix24.com".to_owned()));
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

    #[test]
    fn secret_is_not_in_debug() {
        let c = cfg(&[("TABLE_NAME", "t"), ("JWT_HS256_SECRET", "hs-secret-xyz")]).unwrap();
        assert!(!format!("{c:?}").contains("hs-secret-xyz"));
        assert_eq!(c.jwt_hs256_secret.unwrap().expose(), "hs-secret-xyz");
    }
}
