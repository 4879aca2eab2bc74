//! The token vault against moto's KMS: round trip, and every way a ciphertext must be refused
//! (another tenant's context, tampering, another key), with no token text in any error.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the assertion

use shared::secret::SecretToken;
use shared::tenant::TenantId;
use shared::vault::{Vault, VaultError};
use teleagent_tests::harness::TestEnv;

const TOKEN: &str = "b24-mcp-token-4f1d9c2e7a";

fn tenant(name: &str) -> TenantId {
    TenantId::parse(&format!("{name}-{}", uuid::Uuid::new_v4())).unwrap()
}

fn assert_no_token(err: &VaultError) {
    let mut texts = vec![err.to_string(), format!("{err:?}"), format!("{err:#?}")];
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        texts.push(s.to_string());
        texts.push(format!("{s:?}"));
        source = s.source();
    }
    for t in texts {
        assert!(!t.contains(TOKEN), "token leaked in error text {t:?}");
    }
}

/// KMS requests counted where they are answered: the fault proxy in front of moto.
async fn counted_kms() -> (
    teleagent_tests::aws_faults::AwsFaultProxy,
    aws_sdk_kms::Client,
) {
    let proxy = teleagent_tests::aws_faults::AwsFaultProxy::start(
        teleagent_tests::harness::moto_endpoint(),
    )
    .await
    .unwrap();
    let sdk = teleagent_tests::harness::sdk_config_at(&proxy.endpoint()).await;
    (proxy, aws_sdk_kms::Client::new(&sdk))
}

#[tokio::test]
async fn round_trip_and_counts_kms_calls() {
    let env = TestEnv::new().await;
    let (proxy, kms) = counted_kms().await;
    let vault = Vault::new(kms.clone(), Some(env.key_id.clone()));
    let a = tenant("a");
    let secret = SecretToken::new(TOKEN.to_owned());

    let ct = vault.encrypt(&a, &secret).await.unwrap();
    assert!(
        !ct.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "ciphertext holds the plaintext"
    );
    let back = vault.decrypt(&a, &ct).await.unwrap();
    assert_eq!(back.expose(), TOKEN);

    // A vault without a key id (every function but connect) still decrypts.
    let reader = Vault::new(kms, None);
    assert_eq!(reader.decrypt(&a, &ct).await.unwrap().expose(), TOKEN);
    let stats = proxy.stats();
    assert_eq!(stats.operation("kms", "Encrypt").requests, 1);
    assert_eq!(stats.operation("kms", "Decrypt").requests, 2);
}

#[tokio::test]
async fn encrypt_without_key_is_no_key() {
    let env = TestEnv::new().await;
    let _ = env;
    let (proxy, kms) = counted_kms().await;
    let vault = Vault::new(kms, None);
    let err = vault
        .encrypt(&tenant("a"), &SecretToken::new(TOKEN.to_owned()))
        .await
        .unwrap_err();
    assert!(matches!(err, VaultError::NoKey), "{err:?}");
    assert_eq!(proxy.stats().requests, 0, "no KMS call without a key");
}

#[tokio::test]
async fn ciphertexts_are_refused_outside_their_tenant_and_key() {
    let env = TestEnv::new().await;
    let vault = Vault::new(env.clients.kms.clone(), Some(env.key_id.clone()));
    let (a, b) = (tenant("a"), tenant("b"));
    let secret = SecretToken::new(TOKEN.to_owned());
    let ct = vault.encrypt(&a, &secret).await.unwrap();

    let mut tampered = ct.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0x5a;

    let other_key = env
        .clients
        .kms
        .create_key()
        .description("second key")
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap()
        .key_id;
    let other_vault = Vault::new(env.clients.kms.clone(), Some(other_key));
    let ct_other_key = other_vault.encrypt(&a, &secret).await.unwrap();
    assert_eq!(
        other_vault
            .decrypt(&a, &ct_other_key)
            .await
            .unwrap()
            .expose(),
        TOKEN,
        "the second key works for its own ciphertext"
    );

    // A ciphertext of another key: AWS answers IncorrectKeyException (the tenant's, Refused);
    // moto answers AccessDeniedException, which in AWS means a missing permission, so the vault
    // classes it as the operator's (KeyUnusable). Either way it never decrypts.
    let err = vault.decrypt(&a, &ct_other_key).await.unwrap_err();
    assert!(
        matches!(
            err,
            VaultError::KeyUnusable { .. } | VaultError::Refused { .. }
        ),
        "ciphertext of another key: {err:?}"
    );
    assert_no_token(&err);
    let cases: [(&str, &TenantId, &[u8]); 3] = [
        ("ciphertext moved to another tenant", &b, &ct),
        ("tampered ciphertext", &a, &tampered),
        ("garbage", &a, b"not a kms ciphertext at all"),
    ];
    for (why, t, blob) in cases {
        let err = vault.decrypt(t, blob).await.unwrap_err();
        assert!(matches!(err, VaultError::Refused { .. }), "{why}: {err:?}");
        assert_eq!(
            err.to_string(),
            "the stored token cannot be decrypted for this tenant",
            "{why}"
        );
        assert_no_token(&err);
    }
}
