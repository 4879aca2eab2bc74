//! The Bitrix24 sandbox portal: an in-memory stand-in for a real portal's hosted MCP server,
//! speaking MCP Streamable HTTP on loopback. It must be faithful to how Bitrix24 behaves (multifield
//! append semantics, `[]` from findbycomm, the leaky bucket, 401/404/406 rules), not convenient,
//! because the connector's tests only prove something if the sandbox behaves like the real thing.
//!
//! Besides its own three tool shapes it can serve the catalogue of a real public server
//! (`SandboxConfig::catalogue`, `corpus.rs`), translating arguments and answering as that server.
//!
//! One sandbox can serve many portals at once on one port ([`Sandbox::add_portal`], or
//! `POST /admin/portals`): each portal has its own tokens, leads, leaky bucket, configuration,
//! faults and call counters, and a request goes to the portal whose token it carries (a token no
//! added portal issued goes to the first portal, the one every single-portal test uses through
//! [`Sandbox`]'s own methods). So one portal can be slow or failing while the others behave.
//!
//! Each sandbox runs on its own thread with its own Tokio runtime, so it outlives the runtime of
//! whichever test started it (tests can share one through a static) and a latency fault never
//! stalls the test's own executor (nor the sandbox's other portals: a latency is a timer).

mod admin;
mod bucket;
mod corpus;
mod faults;
mod mcp;
mod portal;
mod tools;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use corpus::Catalogue;
pub use portal::LeadWrite;

/// The STATUS_ID the design's status map gives a lead status on a portal that has the custom
/// `UC_QUALIFIED` status (`has_qualified_status`): what a lead must show after an event.
pub fn status_id(s: shared::events::LeadStatus) -> &'static str {
    use shared::events::LeadStatus;
    match s {
        LeadStatus::New => "NEW",
        LeadStatus::Contacted => "IN_PROCESS",
        LeadStatus::Qualified => "UC_QUALIFIED",
        LeadStatus::Won => "CONVERTED",
        LeadStatus::Lost => "JUNK",
    }
}

/// The user id the manager's console edits as (the token's own user is `1`).
pub const MANAGER_ID: &str = "7";
pub use faults::Faults;

use bucket::LeakyBucket;
use portal::Portal;

/// Which tool catalogue `tools/list` shows: the three shapes public Bitrix24 MCP servers use
/// so tool binding is tested against each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ToolShape {
    /// One tool per lead operation, like community servers; create/update take the shape
    /// reported from the field: flat `title`/`name`/`phone`/`comments`/`sourceId`/`statusId`
    /// plus an optional raw `fields` object (`bitrix24_update_lead {id, ..., fields?}`).
    #[serde(alias = "lead_tools", alias = "LeadTools")]
    LeadTools,
    /// One generic `bitrix24_call_method {method, params}` tool.
    #[serde(alias = "rest", alias = "rest_method", alias = "RestMethod")]
    RestMethod,
    /// Entity-generic `crm_get/crm_list/crm_add/crm_update {entity, ...}` tools.
    #[serde(alias = "crm_entity", alias = "CrmEntity")]
    CrmEntity,
}

/// How a POST is answered: MCP clients must handle both; Bitrix24's server uses SSE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerMode {
    /// One `application/json` object.
    Json,
    /// `text/event-stream`: one `notifications/message` event, then the response event.
    Sse,
}

/// What a tool's text carries: public servers differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnswerStyle {
    /// The bare REST `result` JSON.
    Bare,
    /// The whole REST envelope `{"result":..,"next"?,"total"?,"time":{..}}`.
    Envelope,
}

/// How the sandbox portal behaves; every field can change at run time (`set_config`).
#[derive(Clone, Debug, Serialize)]
pub struct SandboxConfig {
    /// The sandbox's own catalogue shape (unused while `catalogue` is set).
    pub shape: ToolShape,
    /// Serve a real server's catalogue (`tests/fixtures/catalogues`) instead of `shape`: its
    /// `tools/list` verbatim and its lead tools' argument translation and answer format
    /// (`answer_style` and `plain_text_errors` then do not apply; everything else does).
    pub catalogue: Option<Catalogue>,
    pub answer_mode: AnswerMode,
    pub answer_style: AnswerStyle,
    /// Leaky-bucket drain rate (Bitrix24 standard plans: 2/s).
    pub bucket_rate_per_sec: f64,
    /// Leaky-bucket depth (standard plans: 50).
    pub bucket_depth: u32,
    /// Issue `Mcp-Session-Id` on initialize (a server MAY; clients must work either way).
    pub sessions: bool,
    /// `None`: echo the client's version if supported, else answer 2025-06-18.
    pub protocol_version: Option<String>,
    pub server_name: String,
    /// Adds the non-default `TELEGRAM` lead source.
    pub has_telegram_source: bool,
    /// Adds the custom `UC_QUALIFIED` lead status.
    pub has_qualified_status: bool,
    /// Pre-creates `UF_CRM_TELEAGENT_SCORE` (double) and `UF_CRM_TELEAGENT_HOTNESS` (string).
    pub has_teleagent_user_fields: bool,
    /// Tool errors as plain text `Ошибка Bitrix24: <description>` WITHOUT `isError`, a quirk
    /// of some public servers.
    pub plain_text_errors: bool,
    /// Lead searches ignore their filter, as a broken server would: `crm.lead.list` answers
    /// every lead, `crm.duplicate.findbycomm` every lead's id.
    pub search_ignores_filter: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            shape: ToolShape::LeadTools,
            catalogue: None,
            answer_mode: AnswerMode::Json,
            answer_style: AnswerStyle::Bare,
            bucket_rate_per_sec: 2.0,
            bucket_depth: 50,
            sessions: true,
            protocol_version: None,
            server_name: "bitrix24-sandbox".to_owned(),
            has_telegram_source: false,
            has_qualified_status: false,
            has_teleagent_user_fields: false,
            plain_text_errors: false,
            search_ignores_filter: false,
        }
    }
}

/// A partial [`SandboxConfig`] for the admin API (`POST /admin/config`): absent keys keep their
/// value. `protocol_version: null` is indistinguishable from absent, so it cannot reset to echo;
/// `catalogue: null` does reset to the `shape` catalogues.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfigPatch {
    pub shape: Option<ToolShape>,
    /// Absent: unchanged; `null`: back to `shape`; a name: that corpus catalogue.
    #[serde(deserialize_with = "present")]
    pub catalogue: Option<Option<Catalogue>>,
    pub answer_mode: Option<AnswerMode>,
    pub answer_style: Option<AnswerStyle>,
    pub bucket_rate_per_sec: Option<f64>,
    pub bucket_depth: Option<u32>,
    pub sessions: Option<bool>,
    pub protocol_version: Option<String>,
    pub server_name: Option<String>,
    pub has_telegram_source: Option<bool>,
    pub has_qualified_status: Option<bool>,
    pub has_teleagent_user_fields: Option<bool>,
    pub plain_text_errors: Option<bool>,
    pub search_ignores_filter: Option<bool>,
}

impl SandboxConfigPatch {
    /// Writes every present key into `cfg`.
    pub fn apply(self, cfg: &mut SandboxConfig) {
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { cfg.$f = v; })* };
        }
        set!(
            shape,
            answer_mode,
            answer_style,
            bucket_rate_per_sec,
            bucket_depth,
            sessions,
            server_name,
            has_telegram_source,
            has_qualified_status,
            has_teleagent_user_fields,
            plain_text_errors,
            search_ignores_filter
        );
        if let Some(v) = self.protocol_version {
            cfg.protocol_version = Some(v);
        }
        if let Some(c) = self.catalogue {
            cfg.catalogue = c;
        }
    }
}

/// A key that is present (even `null`) is `Some`; with `#[serde(default)]` an absent one is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// What reached the sandbox, for tests and benchmarks ("Bitrix24 calls per event" counts
/// `tools_call`, the handshake is reported apart).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CallStats {
    /// Every HTTP request to the MCP endpoint (POST, GET, DELETE), faults included.
    pub total_http: u64,
    pub initialize: u64,
    pub tools_list: u64,
    /// Authenticated `tools/call` requests, rate-limited ones included.
    pub tools_call: u64,
    /// Executed tool calls per tool name (rate-limited calls are not executed).
    pub by_tool: BTreeMap<String, u64>,
    /// Executed REST methods (lower case), whatever the tool shape.
    pub by_method: BTreeMap<String, u64>,
    /// "ok", "tool_error", "rpc_error", "rate_limited", "unauthorized", "session_expired",
    /// "session_missing", "bad_protocol_version", "bad_request", "not_acceptable",
    /// "unsupported_media_type", "accepted", "session_deleted", "delete_without_sessions",
    /// "get_stream", "fault_5xx",
    /// "dropped".
    pub by_outcome: BTreeMap<String, u64>,
    /// When each token's `tools/call` requests arrived (milliseconds since the Unix epoch), so a test can check every portal's calls against its rate budget.
    #[serde(default)]
    pub tools_call_ms_by_token: BTreeMap<String, Vec<u64>>,
}

impl CallStats {
    pub(crate) fn outcome(&mut self, outcome: &str) {
        *self.by_outcome.entry(outcome.to_owned()).or_default() += 1;
    }
}

/// Why a sandbox could not start.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot bind 127.0.0.1:{port}")]
    Bind {
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the sandbox server thread")]
    Thread(#[source] std::io::Error),
}

/// An MCP session the server issued.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    pub token: String,
    pub protocol_version: String,
}

/// Everything one portal's server side mutates; one lock, never held across an `.await`.
pub(crate) struct State {
    pub config: SandboxConfig,
    /// token -> admin?
    pub tokens: HashMap<String, bool>,
    pub sessions: HashMap<String, Session>,
    /// With sessions off, the version each token last negotiated.
    pub versions_by_token: HashMap<String, String>,
    pub portal: Portal,
    pub bucket: LeakyBucket,
    pub faults: Faults,
    pub calls: CallStats,
}

pub(crate) type Shared = Arc<Mutex<State>>;

impl State {
    fn new(config: SandboxConfig) -> Self {
        let portal = Portal::new(&config);
        State {
            config,
            tokens: HashMap::new(),
            sessions: HashMap::new(),
            versions_by_token: HashMap::new(),
            portal,
            bucket: LeakyBucket::new(),
            faults: Faults::default(),
            calls: CallStats::default(),
        }
    }
}

/// The portals of one sandbox and which portal each token belongs to.
pub(crate) struct Portals {
    /// The first portal: every token not in `by_token` is its.
    pub main: Shared,
    /// Every portal, the first one at index 0.
    pub all: Mutex<Vec<Shared>>,
    /// Tokens of the added portals (index 1 on).
    pub by_token: Mutex<HashMap<String, Shared>>,
}

pub(crate) type Routes = Arc<Portals>;

impl Portals {
    /// The portal a request is for: the one that issued its bearer token, else the first.
    pub(crate) fn route(&self, headers: &axum::http::HeaderMap) -> Shared {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().split_once(' '))
            .map(|(_, t)| t.trim());
        token
            .and_then(|t| {
                self.by_token
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(t)
                    .cloned()
            })
            .unwrap_or_else(|| self.main.clone())
    }

    /// Adds a portal with its own state; returns its index and state.
    pub(crate) fn add(&self, cfg: SandboxConfig) -> (usize, Shared) {
        let state: Shared = Arc::new(Mutex::new(State::new(cfg)));
        let mut all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.push(state.clone());
        (all.len() - 1, state)
    }

    pub(crate) fn get(&self, index: usize) -> Option<Shared> {
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(index)
            .cloned()
    }

    /// Gives `token` to the portal at `index` (a token of the first portal needs no route).
    pub(crate) fn register(&self, index: usize, state: &Shared, token: &str, admin: bool) {
        lock(state).tokens.insert(token.to_owned(), admin);
        if index > 0 {
            self.by_token
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(token.to_owned(), state.clone());
        }
    }
}

/// Locks the state; a panic elsewhere while locked must not wedge every later request.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running sandbox on `127.0.0.1:<port>`; dropping it stops the server. It derefs to its first
/// portal ([`SandboxPortal`]), so `sandbox.issue_token(..)`, `sandbox.leads()` and the rest act on
/// that portal, as they did before a sandbox could serve several.
pub struct Sandbox {
    main: SandboxPortal,
    routes: Routes,
    shutdown: Option<oneshot::Sender<()>>,
}

/// One portal of a running sandbox: its tokens, leads, bucket, faults and counters. Cheap to
/// clone; it stays usable while its [`Sandbox`] runs.
#[derive(Clone)]
pub struct SandboxPortal {
    state: Shared,
    routes: Routes,
    index: usize,
    addr: SocketAddr,
}

impl std::ops::Deref for Sandbox {
    type Target = SandboxPortal;
    fn deref(&self) -> &SandboxPortal {
        &self.main
    }
}

impl Sandbox {
    /// Starts a sandbox on a free loopback port.
    ///
    /// # Panics
    /// If the loopback port cannot be bound or the server thread cannot start: a test
    /// environment that broken cannot run any sandbox test (use [`Sandbox::try_start`] to handle it).
    pub async fn start(cfg: SandboxConfig) -> Sandbox {
        match Self::try_start(cfg, 0).await {
            Ok(s) => s,
            Err(e) => panic!("bitrix24 sandbox failed to start: {e}"),
        }
    }

    /// Starts a sandbox on `127.0.0.1:port` (0 = a free port).
    pub async fn try_start(cfg: SandboxConfig, port: u16) -> Result<Sandbox, SandboxError> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| SandboxError::Bind { port, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| SandboxError::Bind { port, source })?;
        let state: Shared = Arc::new(Mutex::new(State::new(cfg)));
        let routes: Routes = Arc::new(Portals {
            main: state.clone(),
            all: Mutex::new(vec![state.clone()]),
            by_token: Mutex::new(HashMap::new()),
        });
        let router = mcp::router(routes.clone())
            .merge(admin::router(state.clone()))
            .merge(admin::portals_router(routes.clone()));
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("bitrix-sandbox-{}", addr.port()))
            .spawn(move || serve_on_own_runtime(listener, router, rx))
            .map_err(SandboxError::Thread)?;
        tracing::info!(%addr, "bitrix24 sandbox listening");
        Ok(Sandbox {
            main: SandboxPortal {
                state,
                routes: routes.clone(),
                index: 0,
                addr,
            },
            routes,
            shutdown: Some(tx),
        })
    }

    /// A new portal on the same server (same `mcp_url`), with its own leads, bucket, faults and
    /// counters; requests reach it with the tokens it issues ([`SandboxPortal::issue_token`]).
    pub fn add_portal(&self, cfg: SandboxConfig) -> SandboxPortal {
        let (index, state) = self.routes.add(cfg);
        SandboxPortal {
            state,
            routes: self.routes.clone(),
            index,
            addr: self.main.addr,
        }
    }

    /// Every portal, the first one (this sandbox's own) first.
    pub fn portals(&self) -> Vec<SandboxPortal> {
        let all = self
            .routes
            .all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.into_iter()
            .enumerate()
            .map(|(index, state)| SandboxPortal {
                state,
                routes: self.routes.clone(),
                index,
                addr: self.main.addr,
            })
            .collect()
    }
}

impl SandboxPortal {
    /// This portal's place among the sandbox's portals (0 = the first).
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The MCP endpoint (the same for every portal of a sandbox; the token picks the portal).
    pub fn mcp_url(&self) -> String {
        format!("{}/mcp/", self.base_url())
    }

    /// A new bearer token; `admin` tokens may add user fields and statuses (admin-only in
    /// Bitrix24).
    pub fn issue_token(&self, admin: bool) -> String {
        let token = new_token();
        self.register_token(&token, admin);
        token
    }

    /// Accepts a caller-chosen token (the binary's `--token`).
    pub fn register_token(&self, token: &str, admin: bool) {
        self.routes.register(self.index, &self.state, token, admin);
    }

    /// The token now answers 401, also inside sessions opened with it.
    pub fn revoke_token(&self, token: &str) {
        let mut st = lock(&self.state);
        st.tokens.remove(token);
        st.sessions.retain(|_, s| s.token != token);
    }

    pub fn set_faults(&self, f: Faults) {
        lock(&self.state).faults = f;
    }

    pub fn faults(&self) -> Faults {
        lock(&self.state).faults.clone()
    }

    /// Every existing session id now answers 404 (the client must re-initialize).
    pub fn expire_sessions(&self) {
        lock(&self.state).sessions.clear();
    }

    /// A lead "created by someone else": no call counted, statuses not validated.
    pub fn seed_lead(&self, fields: serde_json::Value) -> i64 {
        lock(&self.state).portal.seed_lead(&fields)
    }

    /// A manager's edit in the portal (see the admin API's manager console): the lead as it is
    /// afterwards, or `None` when it does not exist or a status is not in the portal's list.
    pub fn manager_edit(&self, id: i64, fields: serde_json::Value) -> Option<serde_json::Value> {
        lock(&self.state)
            .portal
            .manager_edit(id, MANAGER_ID, &fields)
            .ok()
    }

    /// Every lead as `crm.lead.get` would return it, by id.
    pub fn leads(&self) -> Vec<serde_json::Value> {
        lock(&self.state).portal.all_leads()
    }

    pub fn lead(&self, id: i64) -> Option<serde_json::Value> {
        lock(&self.state).portal.lead_json(id)
    }

    /// The texts of the lead's timeline comments, oldest first.
    pub fn timeline_comments(&self, lead_id: i64) -> Vec<String> {
        lock(&self.state).portal.comments_of(lead_id)
    }

    /// Every successful lead write through MCP (create, update, timeline comment) with the
    /// moment it landed, oldest first (seeds and manager edits are not MCP writes).
    pub fn lead_writes(&self) -> Vec<LeadWrite> {
        lock(&self.state).portal.writes().to_vec()
    }

    pub fn calls(&self) -> CallStats {
        lock(&self.state).calls.clone()
    }

    pub fn reset_calls(&self) {
        lock(&self.state).calls = CallStats::default();
    }

    /// Changes the configuration at run time (shape, answer mode, bucket, portal flags).
    pub fn set_config(&self, f: impl FnOnce(&mut SandboxConfig)) {
        let mut st = lock(&self.state);
        f(&mut st.config);
        let cfg = st.config.clone();
        st.portal.apply_flags(&cfg);
    }

    pub fn config(&self) -> SandboxConfig {
        lock(&self.state).config.clone()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The thread may already be gone (bind lost); nothing to stop then.
            let _ = tx.send(());
        }
    }
}

/// A bearer token shaped like the JWT-looking tokens Bitrix24 issues (their format is not documented).
pub(crate) fn new_token() -> String {
    format!(
        "b24sbx.{}.{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn serve_on_own_runtime(
    listener: std::net::TcpListener,
    router: axum::Router,
    shutdown: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "sandbox runtime failed to build");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "sandbox listener failed");
                return;
            }
        };
        tokio::select! {
            r = axum::serve(listener, router) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "sandbox server stopped");
                }
            }
            _ = shutdown => {}
        }
    });
    // Dropping the runtime here cancels every open connection task.
}
