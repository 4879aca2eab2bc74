//! The SQS batch rules of lead-sync against moto's real FIFO queues: exact failed ids for a batch
//! mixing groups, later messages of a failed group failed too, poison messages to the DLQ with their
//! reason while the rest of the batch goes on, visibility set on retries.
//! The engine is scripted here (outcomes by customer id) so the batch's own rules are what is tested;
//! the real engine is covered by `sync.rs` and the end-to-end tests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use shared::events::LeadEvent;
use shared::sync::Outcome;
use shared::sync::batch::{BatchProcessor, EventHandler};
use shared::tenant::TenantId;
use teleagent_tests::harness::TestEnv;

/// Outcomes by customer id; records the order events were handled in.
struct Scripted {
    outcomes: HashMap<String, Outcome>,
    seen: Mutex<Vec<String>>,
}

impl EventHandler for Scripted {
    async fn handle(
        &self,
        event: &LeadEvent,
        _body: &str,
        _receive_count: u32,
        _deadline: Option<std::time::Instant>,
    ) -> Outcome {
        self.seen
            .lock()
            .unwrap()
            .push(format!("{}#{}", event.customer.id, event.lead.score));
        if event.customer.id == "tg:panic" {
            panic!("a scripted panic inside the engine");
        }
        if event.customer.id == "tg:sleepy" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.outcomes
            .get(&event.customer.id)
            .cloned()
            .unwrap_or(Outcome::Done)
    }
}

/// Sends the bodies to the FIFO queue and receives them back as a Lambda SQS event, so receipt
/// handles and attributes are real.
async fn deliver(env: &TestEnv, bodies: &[(String, String)]) -> SqsEvent {
    for (i, (group, body)) in bodies.iter().enumerate() {
        env.clients
            .sqs
            .send_message()
            .queue_url(&env.queue_url)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(format!("d{i}-{}", uuid::Uuid::new_v4().simple()))
            .send()
            .await
            .unwrap();
    }
    let mut records = Vec::new();
    while records.len() < bodies.len() {
        let got = env
            .clients
            .sqs
            .receive_message()
            .queue_url(&env.queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .wait_time_seconds(1)
            .send()
            .await
            .unwrap();
        let msgs = got.messages.unwrap_or_default();
        assert!(
            !msgs.is_empty(),
            "queue ran dry before every message came back"
        );
        for m in msgs {
            let mut r = SqsMessage::default();
            r.message_id = m.message_id.clone();
            r.receipt_handle = m.receipt_handle.clone();
            r.body = m.body.clone();
            for (k, v) in m.attributes.unwrap_or_default() {
                r.attributes.insert(k.as_str().to_owned(), v);
            }
            records.push(r);
        }
    }
    let mut ev = SqsEvent::default();
    ev.records = records;
    ev
}

fn event(tenant: &TenantId, customer: &str, score: u8) -> (String, String) {
    let e = LeadEvent::new(tenant.clone(), customer, score);
    (e.group_id(), e.to_json())
}

fn ids_of(ev: &SqsEvent, pick: impl Fn(&str) -> bool) -> Vec<String> {
    ev.records
        .iter()
        .filter(|r| pick(r.body.as_deref().unwrap_or("")))
        .map(|r| r.message_id.clone().unwrap())
        .collect()
}

#[tokio::test]
async fn mixed_groups_report_exactly_the_failed_ids_and_poison_goes_to_the_dlq() {
    let env = TestEnv::new().await;
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let bodies = vec![
        event(&tenant, "tg:ok", 10),
        event(&tenant, "tg:slow", 20),
        event(&tenant, "tg:ok", 11),
        (
            "poison".to_owned(),
            r#"{"version": 1, "event_id": "not-a-uuid"}"#.to_owned(),
        ),
        event(&tenant, "tg:slow", 21),
        event(&tenant, "tg:bad-data", 30),
        event(&tenant, "tg:slow", 22),
    ];
    let batch = deliver(&env, &bodies).await;
    let handler = Scripted {
        outcomes: HashMap::from([
            (
                "tg:slow".to_owned(),
                Outcome::Retry {
                    delay: Duration::from_secs(7),
                    reason: "rate limited".into(),
                },
            ),
            (
                "tg:bad-data".to_owned(),
                Outcome::DeadLetter {
                    reason: "Bitrix24 refused the lead's fields".into(),
                },
            ),
        ]),
        seen: Mutex::new(Vec::new()),
    };
    let processor = BatchProcessor::new(
        handler,
        env.clients.sqs.clone(),
        Some(env.queue_url.clone()),
        env.dlq_url.clone(),
    );
    let response = processor.process(batch.clone(), None).await;

    // Every message of the failed group is reported, in batch order; nothing else is.
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ids_of(&batch, |b| b.contains("tg:slow")));
    // Only the first message of the failed group reached the engine; the ok group ran in order.
    let seen = processor.handler().seen.lock().unwrap().clone();
    assert!(seen.contains(&"tg:slow#20".to_owned()), "{seen:?}");
    assert!(
        !seen.iter().any(|s| s == "tg:slow#21" || s == "tg:slow#22"),
        "{seen:?}"
    );
    let ok_order: Vec<&String> = seen.iter().filter(|s| s.starts_with("tg:ok")).collect();
    assert_eq!(ok_order, vec!["tg:ok#10", "tg:ok#11"]);

    // The poison message and the refused data are in the DLQ, each with its reason.
    let dlq = env
        .clients
        .sqs
        .receive_message()
        .queue_url(&env.dlq_url)
        .max_number_of_messages(10)
        .message_attribute_names("All")
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(dlq.len(), 2, "{dlq:?}");
    let reasons: Vec<String> = dlq
        .iter()
        .map(|m| {
            m.message_attributes.as_ref().unwrap()["reason"]
                .string_value
                .clone()
                .unwrap()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("invalid lead event")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("refused the lead's fields")),
        "{reasons:?}"
    );
    let poison_body = dlq
        .iter()
        .find(|m| m.body.as_deref().unwrap_or("").contains("not-a-uuid"));
    assert!(
        poison_body.is_some(),
        "the original body is kept for redrive"
    );

    // The failed messages are hidden for the retry delay: nothing is receivable right away.
    let again = env
        .clients
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert!(
        again.is_empty(),
        "retried messages came back early: {again:?}"
    );
    let attrs = env
        .clients
        .sqs
        .get_queue_attributes()
        .queue_url(&env.queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    // Acknowledged messages are deleted by the event source mapping, not by the function; in
    // this test nobody deletes, so all 7 are in flight: the point is that none came back early.
    assert_eq!(
        attrs[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "7"
    );
}

#[tokio::test]
async fn an_unreachable_dead_letter_queue_keeps_the_message_for_retry() {
    let env = TestEnv::new().await;
    let tenant = TenantId::parse("t-dlq-down").unwrap();
    let bodies = vec![
        ("g".to_owned(), "this is not json".to_owned()),
        event(&tenant, "tg:fine", 50),
    ];
    let batch = deliver(&env, &bodies).await;
    let processor = BatchProcessor::new(
        Scripted {
            outcomes: HashMap::new(),
            seen: Mutex::new(Vec::new()),
        },
        env.clients.sqs.clone(),
        Some(env.queue_url.clone()),
        format!("{}-missing.fifo", env.dlq_url.trim_end_matches(".fifo")),
    );
    let response = processor.process(batch.clone(), None).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ids_of(&batch, |b| b == "this is not json"));
}

#[tokio::test]
async fn a_requeued_event_is_acknowledged_and_sent_again_to_the_back_of_its_group() {
    let env = TestEnv::new().await;
    let tenant = TenantId::parse("t-requeue").unwrap();
    let bodies = vec![event(&tenant, "tg:busy", 40), event(&tenant, "tg:calm", 41)];
    let batch = deliver(&env, &bodies).await;
    let processor = BatchProcessor::new(
        Scripted {
            outcomes: HashMap::from([(
                "tg:busy".to_owned(),
                Outcome::Requeue {
                    reason: "still waiting after 3 receives".into(),
                },
            )]),
            seen: Mutex::new(Vec::new()),
        },
        env.clients.sqs.clone(),
        Some(env.queue_url.clone()),
        env.dlq_url.clone(),
    );
    let response = processor.process(batch.clone(), None).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "a re-queued event is acknowledged: {:?}",
        response.batch_item_failures
    );
    // Play the event source mapping: acknowledged messages are deleted (FIFO holds a group while
    // any of its messages is in flight). Then the new copy is the only message left.
    for r in &batch.records {
        env.clients
            .sqs
            .delete_message()
            .queue_url(&env.queue_url)
            .receipt_handle(r.receipt_handle.clone().unwrap())
            .send()
            .await
            .unwrap();
    }
    let copy = env
        .clients
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    assert_eq!(copy.len(), 1, "{copy:?}");
    assert_eq!(copy[0].body.as_deref(), Some(bodies[0].1.as_str()));
    let attrs = copy[0].attributes.as_ref().unwrap();
    assert_eq!(
        attrs[&MessageSystemAttributeName::MessageGroupId],
        bodies[0].0
    );
    assert_ne!(copy[0].message_id, batch.records[0].message_id);
}

/// A panic in one record fails that record's group only: the other groups of the batch are
/// acknowledged (a panicking invocation used to redeliver every tenant's messages).
#[tokio::test]
async fn a_panic_fails_only_its_own_group() {
    let env = TestEnv::new().await;
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let bodies = vec![
        event(&tenant, "tg:panic", 1),
        event(&tenant, "tg:ok", 2),
        event(&tenant, "tg:panic", 3),
        event(&tenant, "tg:other", 4),
    ];
    let batch = deliver(&env, &bodies).await;
    let processor = BatchProcessor::new(
        Scripted {
            outcomes: HashMap::new(),
            seen: Mutex::new(Vec::new()),
        },
        env.clients.sqs.clone(),
        Some(env.queue_url.clone()),
        env.dlq_url.clone(),
    );
    let response = processor.process(batch.clone(), None).await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, ids_of(&batch, |b| b.contains("tg:panic")));
    let seen = processor.handler().seen.lock().unwrap().clone();
    assert!(
        !seen.contains(&"tg:panic#3".to_owned()),
        "the later message of the group waited: {seen:?}"
    );
}

/// No event starts without enough time left before the invocation's deadline: the batch
/// answers in time, reporting the rest of the group failed (they come back at once), instead of
/// being cut off by the function's timeout with no answer at all.
#[tokio::test]
async fn events_that_cannot_finish_before_the_deadline_are_not_started() {
    let env = TestEnv::new().await;
    let tenant = TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    // one group of four slow events (1 s each) in an invocation of 3 s
    let bodies: Vec<(String, String)> = (0..4)
        .map(|i| event(&tenant, "tg:sleepy", 10 + i))
        .collect();
    let batch = deliver(&env, &bodies).await;
    let processor = BatchProcessor::new(
        Scripted {
            outcomes: HashMap::new(),
            seen: Mutex::new(Vec::new()),
        },
        env.clients.sqs.clone(),
        Some(env.queue_url.clone()),
        env.dlq_url.clone(),
    );
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(3);
    let response = processor.process(batch.clone(), Some(deadline)).await;
    assert!(
        std::time::Instant::now() < deadline,
        "answered before the deadline"
    );
    let seen = processor.handler().seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        ["tg:sleepy#10", "tg:sleepy#11"],
        "the two that fit, in order"
    );
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    let ids: Vec<String> = batch
        .records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    assert_eq!(
        failed,
        ids[2..].to_vec(),
        "the rest of the group comes back"
    );
}
