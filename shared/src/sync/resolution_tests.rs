//! The resolution rules over in-memory fakes of the portal and the links: no moto, no sandbox.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::json;

use super::*;
use crate::crm::CrmError;
use crate::events::LeadStatus;
use crate::phone::parse_phone;
use crate::store::StoreError;

const PORTAL: &str = "portal:a";

/// A portal: leads by id, the lead operations it offers, every call made.
#[derive(Default)]
struct FakeCrm {
    leads: BTreeMap<i64, Lead>,
    comments: Vec<(i64, String)>,
    calls: Vec<&'static str>,
    /// Answers every search with every lead (a server that ignores filters).
    ignores_filter: bool,
    no_comment_tool: bool,
    /// The comment tool answers a refusal (it sends what the portal does not take).
    comment_refused: bool,
    /// The comment tool times out (the portal's trouble, retried).
    comment_times_out: bool,
    next_id: i64,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl FakeCrm {
    fn with(leads: &[Value]) -> Self {
        let mut c = FakeCrm {
            next_id: 100,
            ..FakeCrm::default()
        };
        for l in leads {
            c.seed(l.clone());
        }
        c
    }

    fn seed(&mut self, lead: Value) -> i64 {
        self.next_id += 1;
        let mut lead = lead.as_object().cloned().unwrap_or_default();
        lead.insert("ID".into(), json!(self.next_id.to_string()));
        self.leads.insert(self.next_id, lead);
        self.next_id
    }
}

impl LeadCrm for FakeCrm {
    fn has(&self, op: Operation) -> bool {
        !(op == Operation::AddComment && self.no_comment_tool)
    }

    async fn find_by_phones(&mut self, spellings: &[String]) -> Result<Vec<i64>, SyncError> {
        self.calls.push("find_by_phones");
        let wanted: Vec<String> = spellings.iter().map(|s| digits(s)).collect();
        Ok(self
            .leads
            .iter()
            .filter(|(_, l)| {
                self.ignores_filter || lead_phone_values(l).any(|v| wanted.contains(&digits(v)))
            })
            .map(|(id, _)| *id)
            .collect())
    }

    async fn find_by_origin(&mut self, origin_id: &str) -> Result<Vec<i64>, SyncError> {
        self.calls.push("find_by_origin");
        Ok(self
            .leads
            .iter()
            .filter(|(_, l)| self.ignores_filter || l.get("ORIGIN_ID") == Some(&json!(origin_id)))
            .map(|(id, _)| *id)
            .collect())
    }

    async fn create_lead(&mut self, fields: Map<String, Value>) -> Result<i64, SyncError> {
        self.calls.push("create_lead");
        Ok(self.seed(Value::Object(fields)))
    }

    async fn update_lead(
        &mut self,
        id: i64,
        fields: Map<String, Value>,
    ) -> Result<bool, SyncError> {
        self.calls.push("update_lead");
        let Some(lead) = self.leads.get_mut(&id) else {
            return Ok(false);
        };
        for (k, v) in fields {
            if k == "PHONE" {
                // a PHONE item without ID is appended, as Bitrix24 does
                let mut phones = lead
                    .get("PHONE")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                phones.extend(v.as_array().cloned().unwrap_or_default());
                lead.insert(k, json!(phones));
            } else {
                lead.insert(k, v);
            }
        }
        Ok(true)
    }

    async fn get_lead(&mut self, id: i64) -> Result<Option<Lead>, SyncError> {
        self.calls.push("get_lead");
        Ok(self.leads.get(&id).cloned())
    }

    async fn add_comment(&mut self, id: i64, text: &str) -> Result<bool, SyncError> {
        self.calls.push("add_comment");
        if self.comment_refused {
            return Err(SyncError::Crm(CrmError::Mcp(
                crate::mcp::McpError::Permanent { code: None },
            )));
        }
        if self.comment_times_out {
            return Err(SyncError::Crm(CrmError::Mcp(
                crate::mcp::McpError::Transient {
                    reason: crate::mcp::TransientReason::Timeout,
                },
            )));
        }
        if !self.leads.contains_key(&id) {
            return Ok(false);
        }
        self.comments.push((id, text.to_owned()));
        Ok(true)
    }
}

/// The links of one tenant, with the create lock.
#[derive(Default)]
struct FakeLinks {
    items: Mutex<HashMap<String, LinkState>>,
    /// The done marks written with the links: (event id, outcome).
    done: Mutex<Vec<(String, Value)>>,
}

impl FakeLinks {
    fn get(&self, customer: &str) -> Option<LinkState> {
        self.items.lock().unwrap().get(customer).cloned()
    }

    fn set(&self, customer: &str, state: LinkState) {
        self.items
            .lock()
            .unwrap()
            .insert(customer.to_owned(), state);
    }
}

impl LeadLinks for FakeLinks {
    async fn link_state(&self, _t: &TenantId, c: &str) -> Result<Option<LinkState>, StoreError> {
        Ok(self.get(c))
    }

    async fn put_link_done(
        &self,
        _t: &TenantId,
        link: &LeadLink,
        meta: &LinkMeta,
        done: &EventDone<'_>,
    ) -> Result<(), StoreError> {
        self.done
            .lock()
            .unwrap()
            .push((done.event_id.to_owned(), done.outcome.clone()));
        self.set(
            &link.customer_id,
            LinkState::Linked(link.clone(), meta.clone()),
        );
        Ok(())
    }

    async fn delete_link(&self, _t: &TenantId, c: &str) -> Result<(), StoreError> {
        self.items.lock().unwrap().remove(c);
        Ok(())
    }

    async fn claim_create(
        &self,
        _t: &TenantId,
        c: &str,
        portal_id: &str,
        lease: std::time::Duration,
        now: OffsetDateTime,
    ) -> Result<CreateClaim, StoreError> {
        let until = now + lease;
        let claim = match self.get(c) {
            Some(LinkState::Linked(link, meta)) if link.portal_id == portal_id => {
                return Ok(CreateClaim::Linked(link, meta));
            }
            Some(LinkState::Creating { until: held, .. }) if held > now => {
                return Ok(CreateClaim::Held { until: held });
            }
            Some(LinkState::Creating { .. }) => CreateClaim::Claimed { resumed: true },
            _ => CreateClaim::Claimed { resumed: false },
        };
        self.set(
            c,
            LinkState::Creating {
                portal_id: portal_id.to_owned(),
                until,
            },
        );
        Ok(claim)
    }

    async fn release_create(
        &self,
        _t: &TenantId,
        c: &str,
        attempted: bool,
    ) -> Result<(), StoreError> {
        if !attempted {
            self.items.lock().unwrap().remove(c);
        }
        Ok(())
    }
}

fn tenant() -> TenantId {
    TenantId::parse("t1").unwrap()
}

fn event(customer: &str, phone: Option<&str>) -> LeadEvent {
    let mut e = LeadEvent::new(tenant(), customer, 50);
    e.customer.name = Some("Ann".into());
    e.customer.phone = phone.map(str::to_owned);
    e.lead.status = Some(LeadStatus::Contacted);
    e
}

fn link(
    customer: &str,
    lead_id: i64,
    portal: &str,
    last_event_at: OffsetDateTime,
    sent: Value,
) -> LinkState {
    LinkState::Linked(
        LeadLink {
            customer_id: customer.into(),
            lead_id,
            portal_id: portal.into(),
            phone_e164: Some("+998901234567".into()),
            last_event_at,
            sent: sent.as_object().cloned().unwrap_or_default(),
        },
        LinkMeta {
            verified_at: Some(last_event_at),
            notes_sent: None,
            pending: Map::new(),
            seen: Map::new(),
        },
    )
}

async fn run(
    crm: &mut FakeCrm,
    links: &FakeLinks,
    ev: &LeadEvent,
    uf: bool,
) -> Result<Synced, SyncError> {
    run_noting(crm, links, ev, uf, &Unrecorded::default()).await
}

async fn run_noting(
    crm: &mut FakeCrm,
    links: &FakeLinks,
    ev: &LeadEvent,
    uf: bool,
    unrecorded: &Unrecorded,
) -> Result<Synced, SyncError> {
    let phone = ev.raw_phone().map(|raw| parse_phone(raw, None));
    Resolver {
        crm,
        links,
        event: ev,
        portal_id: PORTAL,
        phone,
        caps: PortalCaps {
            has_teleagent_user_fields: uf,
            ..PortalCaps::default()
        },
        now: OffsetDateTime::now_utc(),
        known_link: None,
        written: None,
        unrecorded,
    }
    .resolve()
    .await
}

const PHONE: &str = "+998901234567";

fn lead_with_phone(value: &str) -> Value {
    json!({"TITLE": "Web form", "STATUS_ID": "NEW", "PHONE": [{"ID": "1", "VALUE": value, "VALUE_TYPE": "WORK"}]})
}

/// One row: the portal before, the links before, the event; what resolution must do.
struct Row {
    why: &'static str,
    crm: FakeCrm,
    links: Vec<(&'static str, LinkState)>,
    event: LeadEvent,
    /// `Ok(kind)` or `Err(())` for any error.
    want: Result<&'static str, ()>,
    /// The lead the customer ends up linked to: `Some(id)` (0 = a new one), or not linked.
    linked_to: Option<i64>,
    calls: &'static [&'static str],
    /// The portal has the connector's user fields (score and hotness are fields, not text).
    uf: bool,
}

#[tokio::test]
async fn resolution_rules() {
    let now = OffsetDateTime::now_utc();
    let earlier = now - time::Duration::minutes(30);
    let later = now + time::Duration::minutes(5);
    let mut rows = vec![
        Row {
            why: "new customer, no phone match: created",
            crm: FakeCrm::with(&[]),
            links: vec![],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["find_by_phones", "create_lead"],
            uf: false,
        },
        Row {
            why: "phone-less customer: no search, created",
            crm: FakeCrm::with(&[]),
            links: vec![],
            event: event("c1", None),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["create_lead"],
            uf: false,
        },
        Row {
            why: "a lead with the same number in another spelling: adopted",
            crm: FakeCrm::with(&[lead_with_phone("+998 (90) 123-45-67")]),
            links: vec![],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_linked"),
            linked_to: Some(101),
            calls: &["find_by_phones", "get_lead", "update_lead", "add_comment"],
            uf: false,
        },
        Row {
            why: "a search that ignores its filter offers a stranger: not adopted, created",
            crm: FakeCrm {
                ignores_filter: true,
                ..FakeCrm::with(&[lead_with_phone("+15550001111")])
            },
            links: vec![],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["find_by_phones", "get_lead", "create_lead"],
            uf: false,
        },
        Row {
            why: "only three strangers are read before creating",
            crm: FakeCrm {
                ignores_filter: true,
                ..FakeCrm::with(&[
                    lead_with_phone("+1555000111"),
                    lead_with_phone("+1555000112"),
                    lead_with_phone("+1555000113"),
                    lead_with_phone("+1555000114"),
                ])
            },
            links: vec![],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &[
                "find_by_phones",
                "get_lead",
                "get_lead",
                "get_lead",
                "create_lead",
            ],
            uf: false,
        },
        Row {
            why: "linked lead, new status: updated from the link, no search",
            crm: FakeCrm::with(&[lead_with_phone(PHONE)]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE}),
                ),
            )],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_updated"),
            linked_to: Some(101),
            calls: &["get_lead", "update_lead", "add_comment"],
            uf: false,
        },
        Row {
            why: "linked lead, nothing changed: no call at all",
            crm: FakeCrm::with(&[lead_with_phone(PHONE)]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", "PHONE": PHONE, "#score": 50}),
                ),
            )],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_unchanged"),
            linked_to: Some(101),
            calls: &[],
            uf: false,
        },
        Row {
            why: "a link to another portal is ignored: search and create there",
            crm: FakeCrm::with(&[]),
            links: vec![("c1", link("c1", 7, "portal:old", earlier, json!({})))],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["find_by_phones", "create_lead"],
            uf: false,
        },
        Row {
            why: "the linked lead was deleted: link dropped, search goes on, created",
            crm: FakeCrm::with(&[]),
            links: vec![(
                "c1",
                link("c1", 55, PORTAL, earlier, json!({"STATUS_ID": "NEW"})),
            )],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["get_lead", "find_by_phones", "create_lead"],
            uf: false,
        },
        Row {
            why: "an interrupted create: found by ORIGIN_ID and linked, not created twice",
            crm: FakeCrm::with(&[
                json!({"TITLE": "Telegram: Ann", "ORIGIN_ID": "t1:c1", "ORIGINATOR_ID": "teleagent", "STATUS_ID": "IN_PROCESS"}),
            ]),
            links: vec![(
                "c1",
                LinkState::Creating {
                    portal_id: PORTAL.into(),
                    until: earlier,
                },
            )],
            event: event("c1", None),
            want: Ok("lead_recovered"),
            linked_to: Some(101),
            calls: &["find_by_origin", "get_lead", "update_lead"],
            uf: false,
        },
        Row {
            why: "an interrupted create whose ORIGIN_ID search returns someone else's lead: created",
            crm: FakeCrm {
                ignores_filter: true,
                ..FakeCrm::with(&[json!({"TITLE": "Other", "ORIGIN_ID": "t1:c9"})])
            },
            links: vec![(
                "c1",
                LinkState::Creating {
                    portal_id: PORTAL.into(),
                    until: earlier,
                },
            )],
            event: event("c1", None),
            want: Ok("lead_created"),
            linked_to: Some(0),
            calls: &["find_by_origin", "get_lead", "create_lead"],
            uf: false,
        },
        Row {
            why: "another consumer holds the create lock: retried, nothing sent",
            crm: FakeCrm::with(&[]),
            links: vec![(
                "c1",
                LinkState::Creating {
                    portal_id: PORTAL.into(),
                    until: later,
                },
            )],
            event: event("c1", Some(PHONE)),
            want: Err(()),
            linked_to: None,
            calls: &[],
            uf: false,
        },
        Row {
            why: "an older event only adds its notes",
            crm: FakeCrm::with(&[lead_with_phone(PHONE)]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    later,
                    json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE}),
                ),
            )],
            event: {
                let mut e = event("c1", Some(PHONE));
                e.lead.notes = Some("late note".into());
                e
            },
            want: Ok("notes_added"),
            linked_to: Some(101),
            calls: &["add_comment"],
            uf: false,
        },
        Row {
            why: "a lead in a final status gets notes only",
            crm: FakeCrm::with(&[
                json!({"STATUS_ID": "JUNK", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
            ]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE}),
                ),
            )],
            event: {
                let mut e = event("c1", Some(PHONE));
                e.lead.notes = Some("still interested".into());
                e
            },
            want: Ok("notes_added"),
            linked_to: Some(101),
            calls: &["get_lead", "add_comment"],
            uf: false,
        },
        Row {
            why: "without a comment tool, notes are appended to COMMENTS after a read",
            crm: FakeCrm {
                no_comment_tool: true,
                ..FakeCrm::with(&[
                    json!({"STATUS_ID": "IN_PROCESS", "COMMENTS": "old", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
                ])
            },
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", "PHONE": PHONE, "#score": 50}),
                ),
            )],
            event: {
                let mut e = event("c1", Some(PHONE));
                e.lead.notes = Some("new note".into());
                e
            },
            want: Ok("lead_updated"),
            linked_to: Some(101),
            calls: &["get_lead", "update_lead"],
            uf: false,
        },
        Row {
            why: "a customer whose number is already on the adopted lead: the phone is not sent again",
            crm: FakeCrm::with(&[lead_with_phone(PHONE)]),
            links: vec![],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_linked"),
            linked_to: Some(101),
            calls: &["find_by_phones", "get_lead", "update_lead", "add_comment"],
            uf: false,
        },
        Row {
            why: "the manager junked the lead: the next event changes no field, only adds notes",
            crm: FakeCrm::with(&[
                json!({"STATUS_ID": "JUNK", "NAME": "Ann", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
            ]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    now - time::Duration::seconds(1),
                    json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE}),
                ),
            )],
            event: {
                let mut e = event("c1", Some(PHONE));
                e.lead.notes = Some("wants a call".into());
                e
            },
            want: Ok("notes_added"),
            linked_to: Some(101),
            calls: &["get_lead", "add_comment"],
            uf: false,
        },
        Row {
            why: "the manager renamed the lead a second ago: the name stays, the status moves",
            crm: FakeCrm::with(&[
                json!({"STATUS_ID": "NEW", "NAME": "Anna (VIP)", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
            ]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    now - time::Duration::seconds(1),
                    json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE, "#score": 50}),
                ),
            )],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_updated"),
            linked_to: Some(101),
            calls: &["get_lead", "update_lead"],
            uf: false,
        },
        Row {
            why: "only the connector's own user field changes: written without a read",
            crm: FakeCrm::with(&[
                json!({"STATUS_ID": "IN_PROCESS", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
            ]),
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", "PHONE": PHONE, "UF_CRM_TELEAGENT_SCORE": 10}),
                ),
            )],
            event: event("c1", Some(PHONE)),
            want: Ok("lead_updated"),
            linked_to: Some(101),
            calls: &["update_lead"],
            uf: true,
        },
        Row {
            why: "a comment tool the portal refuses: the notes go to COMMENTS, the event lands",
            crm: FakeCrm {
                comment_refused: true,
                ..FakeCrm::with(&[
                    json!({"STATUS_ID": "IN_PROCESS", "COMMENTS": "old", "PHONE": [{"ID": "1", "VALUE": PHONE}]}),
                ])
            },
            links: vec![(
                "c1",
                link(
                    "c1",
                    101,
                    PORTAL,
                    earlier,
                    json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", "PHONE": PHONE, "#score": 50}),
                ),
            )],
            event: {
                let mut e = event("c1", Some(PHONE));
                e.lead.notes = Some("call me".into());
                e
            },
            want: Ok("notes_added"),
            linked_to: Some(101),
            calls: &["add_comment", "get_lead", "update_lead"],
            uf: false,
        },
    ];
    assert!(rows.len() >= 15);
    for row in &mut rows {
        let links = FakeLinks::default();
        for (c, state) in &row.links {
            links.set(c, state.clone());
        }
        let before: Vec<i64> = row.crm.leads.keys().copied().collect();
        let got = run(&mut row.crm, &links, &row.event, row.uf).await;
        let why = row.why;
        match (&got, row.want) {
            (Ok(s), Ok(kind)) => assert_eq!(s.kind, kind, "{why}"),
            (Err(_), Err(())) => {}
            _ => panic!("{why}: got {got:?}, want {:?}", row.want),
        }
        // A synced event is marked done in its link write, once, with what it did; a failed
        // one is not marked at all.
        let done = links.done.lock().unwrap().clone();
        match &got {
            Ok(s) => {
                assert_eq!(done.len(), 1, "{why}: one done mark");
                assert_eq!(done[0].0, row.event.event_id, "{why}");
                assert_eq!(done[0].1["kind"], s.kind, "{why}");
                assert_eq!(done[0].1["lead_id"], s.lead_id, "{why}");
            }
            Err(_) => assert!(done.is_empty(), "{why}: marked done: {done:?}"),
        }
        if std::env::var_os("RESOLUTION_PRINT").is_some() {
            println!("{why}: {got:?} {:?}", row.crm.calls);
            continue;
        }
        assert_eq!(row.crm.calls, row.calls, "{why}: calls");
        let linked = match links.get("c1") {
            Some(LinkState::Linked(l, _)) => Some(l.lead_id),
            _ => None,
        };
        match row.linked_to {
            Some(0) => {
                let id = linked.unwrap_or_else(|| panic!("{why}: not linked"));
                assert!(!before.contains(&id), "{why}: linked to an old lead {id}");
                assert_eq!(row.crm.leads[&id]["ORIGIN_ID"], "t1:c1", "{why}");
            }
            want => assert_eq!(linked, want, "{why}: link"),
        }
    }
    let by_why = |w: &str| rows.iter().find(|r| r.why.starts_with(w)).unwrap();
    // the adopted lead kept one PHONE item: the number was not appended again
    let adopted = by_why("a customer whose number is already on the adopted lead");
    assert_eq!(
        adopted.crm.leads[&101]["PHONE"].as_array().map(Vec::len),
        Some(1)
    );
    let junked = by_why("the manager junked the lead");
    assert_eq!(
        junked.crm.leads[&101]["STATUS_ID"], "JUNK",
        "the manager's decision stands"
    );
    assert_eq!(junked.crm.comments.len(), 1, "the notes landed");
    let refused = by_why("a comment tool the portal refuses");
    let comments = refused.crm.leads[&101]["COMMENTS"].as_str().unwrap();
    assert!(
        comments.starts_with("old") && comments.contains("call me"),
        "{comments}"
    );
    let renamed = by_why("the manager renamed the lead");
    assert_eq!(renamed.crm.leads[&101]["NAME"], "Anna (VIP)");
    assert_eq!(renamed.crm.leads[&101]["STATUS_ID"], "IN_PROCESS");
}

/// An event whose update landed but whose link was never written (its comment timed out, it
/// was parked) must not leave the next event trusting a stale `sent`: the score the stale
/// value happens to equal is still written, and our own landed status is not taken for a
/// manager's edit.
#[tokio::test]
async fn an_update_that_landed_unrecorded_is_settled_by_the_next_event() {
    let now = OffsetDateTime::now_utc();
    let mut crm = FakeCrm::with(&[
        json!({"STATUS_ID": "NEW", "NAME": "Ann", "UF_CRM_TELEAGENT_SCORE": "6",
        "PHONE": [{"ID": "1", "VALUE": PHONE, "VALUE_TYPE": "WORK"}]}),
    ]);
    let links = FakeLinks::default();
    let sent =
        json!({"STATUS_ID": "NEW", "NAME": "Ann", "PHONE": PHONE, "UF_CRM_TELEAGENT_SCORE": 6});
    links.set(
        "c1",
        link("c1", 101, PORTAL, now - time::Duration::minutes(5), sent),
    );

    // A: score 37, contacted. The update lands, the comment times out: the event fails.
    let mut a = event("c1", Some(PHONE));
    a.lead.score = 37;
    a.lead.notes = Some("call back".into());
    a.occurred_at = now - time::Duration::minutes(2);
    crm.comment_times_out = true;
    let unrecorded = Unrecorded::default();
    assert!(
        run_noting(&mut crm, &links, &a, true, &unrecorded)
            .await
            .is_err()
    );
    assert_eq!(crm.leads[&101]["UF_CRM_TELEAGENT_SCORE"], json!(37));
    let write = unrecorded.take().expect("the landed update is reported");
    assert_eq!(write.lead_id, 101);
    assert_eq!(write.fields["UF_CRM_TELEAGENT_SCORE"], json!(37));
    assert_eq!(write.fields["STATUS_ID"], json!("IN_PROCESS"));
    // What the engine does with it (Store::mark_link_pending).
    let Some(LinkState::Linked(l, mut meta)) = links.get("c1") else {
        panic!("linked")
    };
    meta.pending = write.fields;
    links.set("c1", LinkState::Linked(l, meta));

    // A was parked; B comes next: score 6 again (the stale `sent` value), won.
    crm.comment_times_out = false;
    let mut b = event("c1", Some(PHONE));
    b.lead.score = 6;
    b.lead.status = Some(LeadStatus::Won);
    b.occurred_at = now - time::Duration::minutes(1);
    assert_eq!(
        run(&mut crm, &links, &b, true).await.unwrap().kind,
        "lead_updated"
    );
    let lead = &crm.leads[&101];
    assert_eq!(lead["UF_CRM_TELEAGENT_SCORE"], json!(6), "B's score lands");
    assert_eq!(
        lead["STATUS_ID"],
        json!("CONVERTED"),
        "our own IN_PROCESS was not a manager's"
    );
    let Some(LinkState::Linked(l, meta)) = links.get("c1") else {
        panic!("linked")
    };
    assert!(meta.pending.is_empty(), "settled");
    assert_eq!(l.sent["UF_CRM_TELEAGENT_SCORE"], json!(6));
}
