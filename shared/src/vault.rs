//! The token vault: Bitrix24 MCP tokens are stored only as KMS ciphertexts bound to their tenant,
//! so a ciphertext copied into another tenant's row cannot be decrypted.

use std::collections::HashMap;

use aws_sdk_kms::error::ProvideErrorMetadata;
use aws_sdk_kms::primitives::Blob;

use crate::secret::SecretToken;
use crate::tenant::TenantId;

/// The `purpose` half of the encryption context. Key policies may require it
/// (`kms:EncryptionContext:purpose`), so it is a contract with infra, not a free label.
pub const PURPOSE: &str = "bitrix-mcp-token";

/// Why a token could not be sealed or opened. No variant carries the plaintext, and the KMS error
/// kept as a source only describes the request's failure, never its payload.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Encrypting needs `KMS_KEY_ID`; only connect encrypts, so the other functions run without it.
    #[error("no KMS key is configured for encrypting tokens")]
    NoKey,
    /// The ciphertext is not valid for this tenant: tampered, copied from another tenant's row
    /// (encryption context mismatch), or made with another key. Permanent: the tenant must
    /// reconnect.
    #[error("the stored token cannot be decrypted for this tenant")]
    Refused {
        #[source]
        source: Box<aws_sdk_kms::Error>,
    },
    /// The configured key cannot be used (missing, disabled, pending deletion, wrong usage,
    /// access denied): an operator problem, never the tenant's fault. lead-sync retries it with
    /// back-off and alarms; connect answers 500.
    #[error("the configured KMS key cannot be used (access denied, disabled or missing)")]
    KeyUnusable {
        #[source]
        source: Box<aws_sdk_kms::Error>,
    },
    /// Throttling, KMS internal errors, timeouts, network: retry later.
    #[error("KMS is unavailable")]
    Unavailable {
        #[source]
        source: Box<aws_sdk_kms::Error>,
    },
    /// KMS answered success without the expected field, or the plaintext is not UTF-8.
    #[error("KMS returned an unusable answer: {what}")]
    BadResponse { what: &'static str },
}

/// Whether a KMS failure is worth retrying: only transient conditions are. Anything else is a
/// statement about the ciphertext or the key that will not change by waiting.
fn is_transient(err: &aws_sdk_kms::Error) -> bool {
    use aws_sdk_kms::Error as E;
    match err {
        E::DependencyTimeoutException(_)
        | E::KeyUnavailableException(_)
        | E::KmsInternalException(_)
        | E::LimitExceededException(_) => true,
        // Unmodelled: timeouts and network errors carry no code; throttling is not modelled for
        // Encrypt/Decrypt. Matching `Unhandled` is deprecated for forward compatibility, but
        // here the fallback for a newly modelled code is "permanent", the safe side.
        #[allow(deprecated)]
        other @ E::Unhandled(_) => matches!(
            other.code(),
            None | Some("ThrottlingException" | "ServiceUnavailableException" | "InternalFailure")
        ),
        _ => false,
    }
}

/// Whether a failed Decrypt is about the ciphertext itself (tampered, another tenant's, another
/// key's): only then is the stored token lost and the tenant asked to reconnect. Access denied,
/// a disabled or pending-deletion key (`KMSInvalidStateException`), a missing key or a wrong key
/// usage are the operator's to fix; they say nothing about the tenant's token.
fn is_ciphertext_fault(err: &aws_sdk_kms::Error) -> bool {
    use aws_sdk_kms::Error as E;
    matches!(
        err,
        E::InvalidCiphertextException(_) | E::IncorrectKeyException(_)
    )
}

/// Encrypts and decrypts MCP tokens with KMS. Cheap to clone: the client is shared.
#[derive(Clone, Debug)]
pub struct Vault {
    kms: aws_sdk_kms::Client,
    key_id: Option<String>,
}

impl Vault {
    /// `key_id` (id, ARN or alias) is only needed to encrypt; when given it is also passed to
    /// Decrypt so a ciphertext of another key is refused instead of silently accepted.
    pub fn new(kms: aws_sdk_kms::Client, key_id: Option<String>) -> Self {
        Self { kms, key_id }
    }

    fn context(tenant: &TenantId) -> HashMap<String, String> {
        HashMap::from([
            ("tenant_id".to_owned(), tenant.as_str().to_owned()),
            ("purpose".to_owned(), PURPOSE.to_owned()),
        ])
    }

    /// KMS Encrypt with the context `{"tenant_id": <id>, "purpose": "bitrix-mcp-token"}`.
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn encrypt(
        &self,
        tenant: &TenantId,
        token: &SecretToken,
    ) -> Result<Vec<u8>, VaultError> {
        let key_id = self.key_id.as_deref().ok_or(VaultError::NoKey)?;
        let out = self
            .kms
            .encrypt()
            .key_id(key_id)
            .plaintext(Blob::new(token.expose().as_bytes()))
            .set_encryption_context(Some(Self::context(tenant)))
            .send()
            .await
            .map_err(|e| {
                let source = Box::new(aws_sdk_kms::Error::from(e));
                tracing::warn!(code = source.code(), "KMS Encrypt failed");
                if is_transient(&source) {
                    VaultError::Unavailable { source }
                } else {
                    VaultError::KeyUnusable { source }
                }
            })?;
        out.ciphertext_blob
            .map(Blob::into_inner)
            .ok_or(VaultError::BadResponse {
                what: "Encrypt answered without a ciphertext",
            })
    }

    /// KMS Decrypt with the same context; a wrong tenant, a tampered blob or another key is
    /// [`VaultError::Refused`].
    #[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
    pub async fn decrypt(
        &self,
        tenant: &TenantId,
        ciphertext: &[u8],
    ) -> Result<SecretToken, VaultError> {
        let out = self
            .kms
            .decrypt()
            .ciphertext_blob(Blob::new(ciphertext))
            .set_key_id(self.key_id.clone())
            .set_encryption_context(Some(Self::context(tenant)))
            .send()
            .await
            .map_err(|e| {
                let source = Box::new(aws_sdk_kms::Error::from(e));
                tracing::warn!(code = source.code(), "KMS Decrypt failed");
                if is_transient(&source) {
                    VaultError::Unavailable { source }
                } else if is_ciphertext_fault(&source) {
                    VaultError::Refused { source }
                } else {
                    VaultError::KeyUnusable { source }
                }
            })?;
        let plain = out.plaintext.ok_or(VaultError::BadResponse {
            what: "Decrypt answered without a plaintext",
        })?;
        // Move the bytes into the zeroizing type without an intermediate copy.
        String::from_utf8(plain.into_inner())
            .map(SecretToken::new)
            .map_err(|_| VaultError::BadResponse {
                what: "the decrypted token is not UTF-8",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_classification() {
        use aws_sdk_kms::types::error::{InvalidCiphertextException, KmsInternalException};
        let refused = aws_sdk_kms::Error::InvalidCiphertextException(
            InvalidCiphertextException::builder().build(),
        );
        let internal =
            aws_sdk_kms::Error::KmsInternalException(KmsInternalException::builder().build());
        assert!(
            !is_transient(&refused),
            "a bad ciphertext does not heal by waiting"
        );
        assert!(is_transient(&internal), "KMS internal errors are retryable");
        assert!(
            is_ciphertext_fault(&refused),
            "a bad ciphertext is the tenant's"
        );
        let disabled = aws_sdk_kms::Error::DisabledException(
            aws_sdk_kms::types::error::DisabledException::builder().build(),
        );
        let invalid_state = aws_sdk_kms::Error::KmsInvalidStateException(
            aws_sdk_kms::types::error::KmsInvalidStateException::builder().build(),
        );
        for e in [&disabled, &invalid_state] {
            assert!(
                !is_transient(e) && !is_ciphertext_fault(e),
                "{e:?} is the operator's"
            );
        }
    }
}
