//! Finding a customer's lead, and what is written to it. In this order: the stored link, if it
//! belongs to the connected portal (a link from a previously connected portal is ignored); else,
//! under the per-customer create lock, a lead this connector made in an interrupted attempt
//! (`ORIGIN_ID`); else a lead found by phone (several spellings of the number in one call); else
//! a new lead. A found lead is adopted only when it really is the customer's: one of its PHONE
//! values is a spelling of the number, or it carries the customer's ORIGIN_ID. A linked lead
//! that answers "not found" is dropped and the search goes on. The field rules themselves are in
//! [`super::fields`].

use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::failure::{SyncError, retry_in_place};
use super::fields::{self, UpdateInput};
use super::ports::{Lead, LeadCrm, LeadLinks};
use crate::crm::{CrmError, Operation, PortalCaps};
use crate::events::LeadEvent;
use crate::mcp::McpError;
use crate::phone::{Phone, is_spelling_of, search_spellings};
use crate::store::{CreateClaim, EventDone, LeadLink, LinkMeta, LinkState};
use crate::tenant::TenantId;

/// Done records outlive the queue's retention (14 d) plus the parking period (14 d).
const DONE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The per-customer create lock's lease: one search plus one create, with room for slow calls.
const CREATE_LEASE: Duration = Duration::from_secs(60);
/// How many leads a search may offer before the connector stops reading them and creates one:
/// each costs a read, and a server whose search ignores its filter offers every lead.
const MAX_ADOPT_CANDIDATES: usize = 3;

/// What a successful sync did, for the audit line and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// `lead_created`, `lead_linked`, `lead_recovered`, `lead_updated`, `notes_added`,
    /// `lead_unchanged`.
    pub kind: &'static str,
    pub lead_id: i64,
}

/// How a lead found by search relates to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Made by someone else, found by phone: only our fields, a forward status and a comment.
    Foreign,
    /// Made by us in an earlier attempt that crashed before linking (found by ORIGIN_ID).
    Recovered,
}

/// One event's lead resolution and writes, over the portal's lead operations and the links.
pub struct Resolver<'a, C, L> {
    pub crm: &'a mut C,
    pub links: &'a L,
    pub event: &'a LeadEvent,
    /// The connected portal; links of other portals are ignored.
    pub portal_id: &'a str,
    pub phone: Option<Phone>,
    pub caps: PortalCaps,
    pub now: OffsetDateTime,
    /// The customer's link as already read (by the batch, or as the customer's previous event
    /// wrote it): used instead of the first read. `None`: read it.
    pub known_link: Option<Option<LinkState>>,
    /// The link as this resolution wrote it with its done mark (for the customer's next event).
    pub written: Option<LinkState>,
    /// What this event sent to a linked lead and has not recorded yet (the engine keeps it on
    /// the link if the event fails from here on).
    pub unrecorded: &'a Unrecorded,
}

/// Field values sent to a linked lead whose link does not record them yet: from the update
/// until the link write. If the event fails in between (an answer lost, a later call failing,
/// the invocation deadline), they may have landed; the engine then keeps them on the link as
/// [`LinkMeta::pending`], and the next event reads the lead before trusting `sent`.
#[derive(Debug, Default)]
pub struct Unrecorded(std::sync::Mutex<Option<PendingWrite>>);

/// See [`Unrecorded`].
#[derive(Debug, Clone, PartialEq)]
pub struct PendingWrite {
    pub customer_id: String,
    pub lead_id: i64,
    pub fields: Map<String, Value>,
}

impl Unrecorded {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<PendingWrite>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note(&self, write: PendingWrite) {
        *self.slot() = Some(write);
    }

    fn clear(&self) {
        *self.slot() = None;
    }

    /// What an event that failed may have written unrecorded, if anything.
    pub fn take(&self) -> Option<PendingWrite> {
        self.slot().take()
    }
}

/// The `VALUE`s of a lead's PHONE multifield.
fn lead_phone_values(lead: &Lead) -> impl Iterator<Item = &str> {
    lead.get("PHONE")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("VALUE").and_then(Value::as_str))
}

impl<C: LeadCrm, L: LeadLinks> Resolver<'_, C, L> {
    fn tenant(&self) -> &TenantId {
        &self.event.tenant_id
    }

    fn customer(&self) -> &str {
        &self.event.customer.id
    }

    fn e164(&self) -> Option<&str> {
        match &self.phone {
            Some(Phone::Parsed { e164, .. }) => Some(e164),
            _ => None,
        }
    }

    /// The stored link of this portal, else the create path.
    pub async fn resolve(&mut self) -> Result<Synced, SyncError> {
        let state = match self.known_link.take() {
            Some(known) => known,
            None => {
                self.links
                    .link_state(self.tenant(), self.customer())
                    .await?
            }
        };
        if let Some(LinkState::Linked(link, meta)) = state
            && link.portal_id == self.portal_id
        {
            if let Some(done) = self.update_linked(link, meta).await? {
                return Ok(done);
            }
            tracing::info!("linked lead was deleted in Bitrix24: dropping the link");
            self.links
                .delete_link(self.tenant(), self.customer())
                .await?;
        }
        self.create_path().await
    }

    /// Under the per-customer create lock, search then create.
    async fn create_path(&mut self) -> Result<Synced, SyncError> {
        let claim = self
            .links
            .claim_create(
                self.tenant(),
                self.customer(),
                self.portal_id,
                CREATE_LEASE,
                self.now,
            )
            .await?;
        match claim {
            CreateClaim::Held { .. } => Err(SyncError::CreateLockHeld),
            CreateClaim::Linked(link, meta) => match self.update_linked(link, meta).await? {
                Some(done) => Ok(done),
                None => {
                    self.links
                        .delete_link(self.tenant(), self.customer())
                        .await?;
                    Err(SyncError::LeadGone)
                }
            },
            CreateClaim::Claimed { resumed } => {
                let mut attempted = false;
                let result = self.create_locked(resumed, &mut attempted).await;
                if result.is_err()
                    && let Err(e) = self
                        .links
                        .release_create(self.tenant(), self.customer(), attempted)
                        .await
                {
                    tracing::warn!(error = %e, "could not release the create lock (its lease will end)");
                }
                result
            }
        }
    }

    async fn create_locked(
        &mut self,
        resumed: bool,
        attempted: &mut bool,
    ) -> Result<Synced, SyncError> {
        if resumed && self.crm.has(Operation::ListLeads) {
            let ids = self
                .crm
                .find_by_origin(&fields::origin_id(self.event))
                .await?;
            for id in ids.into_iter().take(MAX_ADOPT_CANDIDATES) {
                if let Some(done) = self.adopt(id, Found::Recovered).await? {
                    return Ok(done);
                }
            }
        }
        if let Some(e164) = self.e164().map(str::to_owned) {
            let ids = self.crm.find_by_phones(&search_spellings(&e164)).await?;
            for id in ids.into_iter().take(MAX_ADOPT_CANDIDATES) {
                if let Some(done) = self.adopt(id, Found::Foreign).await? {
                    return Ok(done);
                }
            }
        }
        let (f, sent) = fields::create_fields(self.event, &self.caps, self.phone.as_ref());
        *attempted = true;
        let lead_id = self.crm.create_lead(f).await?;
        tracing::info!(lead_id, "lead created");
        let link = LeadLink {
            customer_id: self.customer().to_owned(),
            lead_id,
            portal_id: self.portal_id.to_owned(),
            phone_e164: self.e164().map(str::to_owned),
            last_event_at: self.event.occurred_at,
            sent,
        };
        let meta = LinkMeta {
            verified_at: Some(self.now),
            notes_sent: self.event.lead.notes.clone(),
            pending: Map::new(),
            seen: Map::new(),
        };
        self.record(&link, &meta, "lead_created").await
    }

    /// Never adopt a lead that is not ours: one found by phone must carry one of the customer's
    /// spellings among its PHONE values; one found by ORIGIN_ID must carry that ORIGIN_ID.
    fn is_ours(&self, lead: &Lead, found: Found) -> bool {
        match found {
            Found::Recovered => {
                lead.get("ORIGIN_ID").and_then(Value::as_str)
                    == Some(&fields::origin_id(self.event))
            }
            Found::Foreign => {
                let Some(e164) = self.e164() else {
                    return false;
                };
                let spellings = search_spellings(e164);
                lead_phone_values(lead).any(|v| is_spelling_of(v, &spellings))
            }
        }
    }

    /// A lead found by search: read it, send only what the rules allow, link it. `None` when it
    /// vanished between the search and the read.
    async fn adopt(&mut self, lead_id: i64, found: Found) -> Result<Option<Synced>, SyncError> {
        let Some(lead) = self.crm.get_lead(lead_id).await? else {
            return Ok(None);
        };
        if !self.is_ours(&lead, found) {
            tracing::warn!(
                lead_id,
                ?found,
                "a search returned a lead that is not this customer's: not adopted"
            );
            return Ok(None);
        }
        let desired = fields::desired(self.event, &self.caps, self.phone.as_ref());
        let plan = fields::plan_update(UpdateInput {
            desired: &desired,
            sent: &Map::new(),
            crm: Some(&lead),
            older: false,
            link_phone: None,
            foreign: found == Found::Foreign,
            held: &Map::new(),
        });
        let mut f = plan.fields;
        // Our create already carried the summary; a foreign lead gets it as history.
        let text = (found == Found::Foreign)
            .then(|| fields::summary(self.event, &self.caps, self.phone.as_ref()));
        let by_tool = self.crm.has(Operation::AddComment);
        if let Some(text) = &text
            && !by_tool
        {
            f.insert(
                "COMMENTS".into(),
                json!(fields::appended_comments(Some(&lead), text)),
            );
        }
        if !f.is_empty() && !self.crm.update_lead(lead_id, f).await? {
            return Ok(None);
        }
        if let Some(text) = &text
            && by_tool
            && !self.comment(lead_id, text, Some(&lead)).await?
        {
            return Ok(None);
        }
        let link = LeadLink {
            customer_id: self.customer().to_owned(),
            lead_id,
            portal_id: self.portal_id.to_owned(),
            phone_e164: self.e164().map(str::to_owned),
            last_event_at: self.event.occurred_at,
            sent: plan.sent,
        };
        let meta = LinkMeta {
            verified_at: Some(self.now),
            notes_sent: self.event.lead.notes.clone(),
            pending: Map::new(),
            seen: Map::new(),
        };
        let kind = match found {
            Found::Foreign => "lead_linked",
            Found::Recovered => "lead_recovered",
        };
        let done = self.record(&link, &meta, kind).await?;
        tracing::info!(lead_id, kind, "existing lead linked");
        Ok(Some(done))
    }

    /// The update of a linked lead. `None` when Bitrix24 says the lead no longer exists.
    async fn update_linked(
        &mut self,
        link: LeadLink,
        meta: LinkMeta,
    ) -> Result<Option<Synced>, SyncError> {
        let lead_id = link.lead_id;
        let older = self.event.occurred_at < link.last_event_at;
        let desired = fields::desired(self.event, &self.caps, self.phone.as_ref());
        let notes = fields::new_notes(self.event, meta.notes_sent.as_deref());
        // What watching saw a manager change; a seen value equal to our own interrupted write
        // (`pending`) is ours, not theirs.
        let mut held = fields::held_by_manager(&link.sent, &meta.seen);
        held.retain(|k, v| {
            !meta
                .pending
                .get(k)
                .is_some_and(|p| fields::same_value(p, v))
        });
        let input = |crm, sent| UpdateInput {
            desired: &desired,
            sent,
            crm,
            older,
            link_phone: link.phone_e164.as_deref(),
            foreign: false,
            held: &held,
        };
        let trusted = fields::plan_update(input(None, &link.sent));
        let has_text = notes.is_some() || !trusted.text_lines.is_empty();
        let by_tool = self.crm.has(Operation::AddComment);
        let mut verified_at = meta.verified_at;
        // Ownership, not a time window: the connector's own user fields and its comments are
        // written without a read; a field a manager owns (status, name, phone, any standard
        // field) changes only after a read in this event shows the value last sent (or none),
        // so a manager's edit is never overwritten. Appending to COMMENTS needs the text too,
        // and an interrupted write (`pending`) is settled against what the lead shows.
        let needs_read = !meta.pending.is_empty()
            || trusted
                .fields
                .keys()
                .any(|k| !fields::is_connector_owned(k))
            || (has_text && !by_tool);
        let plan = if needs_read {
            let Some(lead) = self.crm.get_lead(lead_id).await? else {
                return Ok(None);
            };
            verified_at = Some(self.now);
            let sent = fields::reconcile_pending(&link.sent, &meta.pending, &lead);
            let mut plan = fields::plan_update(input(Some(&lead), &sent));
            plan.fields =
                self.with_comments(plan.fields, notes, &plan.text_lines, Some(&lead), by_tool);
            plan
        } else {
            let mut plan = trusted;
            plan.fields = self.with_comments(plan.fields, notes, &plan.text_lines, None, by_tool);
            plan
        };
        let text = fields::comment_text(self.event.occurred_at, notes, &plan.text_lines);
        // A field written now shows what was sent: what watching saw of it is stale.
        let mut seen = meta.seen.clone();
        seen.retain(|k, _| !plan.fields.contains_key(k));
        let sent_fields = !plan.fields.is_empty();
        if sent_fields {
            self.unrecorded
                .note(self.pending_write(lead_id, &meta.pending, &plan));
            if !self.crm.update_lead(lead_id, plan.fields).await? {
                return Ok(None);
            }
            verified_at = Some(self.now);
        }
        if by_tool
            && let Some(text) = &text
            && !self.comment(lead_id, text, None).await?
        {
            return Ok(None);
        }
        let meta = LinkMeta {
            verified_at,
            notes_sent: notes.map(str::to_owned).or(meta.notes_sent),
            pending: Map::new(),
            seen,
        };
        let kind = match (sent_fields, text.is_some()) {
            (true, _) => "lead_updated",
            (false, true) => "notes_added",
            (false, false) => "lead_unchanged",
        };
        let moved = self.moved_on(link, plan.sent);
        let done = self.record(&moved, &meta, kind).await?;
        self.unrecorded.clear();
        Ok(Some(done))
    }

    /// What an update is about to write, in the form `sent` keeps, with whatever was still
    /// pending from before (COMMENTS is history, not a value to compare).
    fn pending_write(
        &self,
        lead_id: i64,
        before: &Map<String, Value>,
        plan: &fields::UpdatePlan,
    ) -> PendingWrite {
        let mut pending = before.clone();
        for key in plan.fields.keys().filter(|k| k.as_str() != "COMMENTS") {
            if let Some(v) = plan.sent.get(key) {
                pending.insert(key.clone(), v.clone());
            }
        }
        PendingWrite {
            customer_id: self.customer().to_owned(),
            lead_id,
            fields: pending,
        }
    }

    /// A timeline comment. If the server refuses it (a comment tool that sends what this portal
    /// does not take), the text is appended to COMMENTS instead, so notes are never lost with
    /// the rest of the event. `Ok(false)`: the lead is gone.
    async fn comment(
        &mut self,
        lead_id: i64,
        text: &str,
        lead: Option<&Lead>,
    ) -> Result<bool, SyncError> {
        match self.crm.add_comment(lead_id, text).await {
            Err(SyncError::Crm(
                CrmError::Mcp(McpError::Permanent { .. }) | CrmError::Rejected { .. },
            )) => {
                tracing::warn!(
                    lead_id,
                    "the comment tool was refused: notes appended to COMMENTS"
                );
                let lead = match lead {
                    Some(l) => l.clone(),
                    None => match self.crm.get_lead(lead_id).await? {
                        Some(l) => l,
                        None => return Ok(false),
                    },
                };
                let mut f = Map::new();
                f.insert(
                    "COMMENTS".into(),
                    json!(fields::appended_comments(Some(&lead), text)),
                );
                self.crm.update_lead(lead_id, f).await
            }
            other => other,
        }
    }

    /// Writes the link after Bitrix24 was written, with the event's done mark (one request).
    /// A failure here would make the retry write Bitrix24 again (a second comment), so the
    /// write is tried a few times in place before the failure goes to the failure plan.
    async fn record(
        &mut self,
        link: &LeadLink,
        meta: &LinkMeta,
        kind: &'static str,
    ) -> Result<Synced, SyncError> {
        let t = self.tenant();
        let outcome =
            json!({"kind": kind, "customer_id": self.customer(), "lead_id": link.lead_id});
        let done = EventDone {
            event_id: &self.event.event_id,
            ttl: DONE_TTL,
            outcome: &outcome,
        };
        retry_in_place("the link and done mark", || {
            self.links.put_link_done(t, link, meta, &done)
        })
        .await?;
        self.written = Some(LinkState::Linked(link.clone(), meta.clone()));
        Ok(Synced {
            kind,
            lead_id: link.lead_id,
        })
    }

    /// The link after this event: what was sent, the newest event time, the phone once known.
    fn moved_on(&self, link: LeadLink, sent: Map<String, Value>) -> LeadLink {
        let phone_e164 = link.phone_e164.clone().or_else(|| {
            sent.get(fields::PHONE)
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        LeadLink {
            last_event_at: link.last_event_at.max(self.event.occurred_at),
            sent,
            phone_e164,
            ..link
        }
    }

    /// Without a comment tool, new notes go into COMMENTS, appended to what the CRM shows.
    fn with_comments(
        &self,
        mut f: Map<String, Value>,
        notes: Option<&str>,
        lines: &[String],
        lead: Option<&Map<String, Value>>,
        by_tool: bool,
    ) -> Map<String, Value> {
        if !by_tool && let Some(text) = fields::comment_text(self.event.occurred_at, notes, lines) {
            f.insert(
                "COMMENTS".into(),
                json!(fields::appended_comments(lead, &text)),
            );
        }
        f
    }
}

#[cfg(test)]
#[path = "resolution_tests.rs"]
mod tests;
