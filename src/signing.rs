//! Ed25519 signing of `signed-release-manifest.yaml`.
//!
//! The signing input is the RFC 8785 (JCS) canonical JSON of the manifest with the `signature`
//! field removed. The manifest is written as YAML in which every string is double-quoted, so
//! any YAML parser reads it back into exactly the JSON data that was signed (no timestamps or
//! numbers guessed out of strings). See the README for a recipe with Python and openssl.

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    #[error(
        "signing key {path} does not exist; make one with: release-coordinator keygen --out {path}"
    )]
    MissingKey { path: String },
    #[error("cannot read key file {path}: {reason}")]
    ReadKey { path: String, reason: String },
    // The reason never includes key material: the PEM parser's errors are structural.
    #[error("key file {path} is not an Ed25519 {kind} key in PEM form: {reason}")]
    BadKey {
        path: String,
        kind: &'static str,
        reason: String,
    },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("the system random number generator failed: {0}")]
    Random(String),
    #[error("manifest is not valid YAML: {0}")]
    ManifestSyntax(String),
    #[error("manifest has no `signature` field")]
    Unsigned,
    #[error("manifest `signature` is not a base64 Ed25519 signature")]
    MalformedSignature,
    #[error("manifest names key `{manifest}`, but the key given is `{given}`")]
    WrongKey { manifest: String, given: String },
    #[error(
        "signature does not match the manifest: it was changed after signing, or signed by another key"
    )]
    Mismatch,
}

/// The operator's signing key and the id the manifest names it by.
pub struct ReleaseSigner {
    key: SigningKey,
    pub key_id: String,
}

impl std::fmt::Debug for ReleaseSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ReleaseSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// `ed25519:` and the first 16 hex digits of the SHA-256 of the raw public key.
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("ed25519:{}", &hex::encode(digest)[..16])
}

impl ReleaseSigner {
    pub fn load(path: &Path, key_id: Option<String>) -> Result<Self, SigningError> {
        let shown = path.display().to_string();
        let pem = fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SigningError::MissingKey {
                path: shown.clone(),
            },
            _ => SigningError::ReadKey {
                path: shown.clone(),
                reason: e.to_string(),
            },
        })?;
        let key = SigningKey::from_pkcs8_pem(&pem).map_err(|e| SigningError::BadKey {
            path: shown,
            kind: "PKCS#8 private",
            reason: e.to_string(),
        })?;
        let key_id = key_id.unwrap_or_else(|| key_fingerprint(&key.verifying_key()));
        Ok(Self { key, key_id })
    }

    #[cfg(test)]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let key_id = key_fingerprint(&key.verifying_key());
        Self { key, key_id }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// Adds `key_id` and `signature` to the manifest object and returns it.
    pub fn sign(&self, manifest: &Value) -> Value {
        let mut m = manifest.as_object().cloned().unwrap_or_default();
        m.remove("signature");
        m.insert("key_id".into(), Value::String(self.key_id.clone()));
        let input = signing_input(&m);
        let sig = self.key.sign(&input);
        m.insert(
            "signature".into(),
            Value::String(BASE64.encode(sig.to_bytes())),
        );
        Value::Object(m)
    }
}

/// The bytes that are signed: JCS canonical JSON of the manifest without `signature`.
pub fn signing_input(manifest: &Map<String, Value>) -> Vec<u8> {
    let mut m = manifest.clone();
    m.remove("signature");
    serde_json_canonicalizer::to_vec(&Value::Object(m)).expect("JSON values always canonicalize")
}

/// Writes a fresh key pair: the private key (PKCS#8 PEM, mode 0600) at `out` and the public key
/// (SubjectPublicKeyInfo PEM) at `out.pub`. Returns the key id.
pub fn keygen(out: &Path) -> Result<(String, std::path::PathBuf), SigningError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let private = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| SigningError::Random(e.to_string()))?;
    let public = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SigningError::Random(e.to_string()))?;
    let pub_path = {
        let mut p = out.as_os_str().to_owned();
        p.push(".pub");
        std::path::PathBuf::from(p)
    };
    write_new(out, private.as_bytes(), 0o600)?;
    write_new(&pub_path, public.as_bytes(), 0o644)?;
    Ok((key_fingerprint(&key.verifying_key()), pub_path))
}

/// Creates a file that must not exist yet, with the given mode from the first byte on.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SigningError> {
    let err = |e: std::io::Error| SigningError::Write {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)
}

pub fn load_public_key(path: &Path) -> Result<VerifyingKey, SigningError> {
    let shown = path.display().to_string();
    let pem = fs::read_to_string(path).map_err(|e| SigningError::ReadKey {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| SigningError::BadKey {
        path: shown,
        kind: "SubjectPublicKeyInfo public",
        reason: e.to_string(),
    })
}

/// Verifies a manifest's text against a public key. Returns the key id it names.
pub fn verify_manifest(text: &str, key: &VerifyingKey) -> Result<String, SigningError> {
    let value: Value =
        yaml_serde::from_str(text).map_err(|e| SigningError::ManifestSyntax(e.to_string()))?;
    let Value::Object(map) = value else {
        return Err(SigningError::ManifestSyntax(
            "the top level is not a mapping".into(),
        ));
    };
    let sig_text = map
        .get("signature")
        .ok_or(SigningError::Unsigned)?
        .as_str()
        .ok_or(SigningError::MalformedSignature)?;
    let sig_bytes = BASE64
        .decode(sig_text)
        .map_err(|_| SigningError::MalformedSignature)?;
    let sig = Signature::from_slice(&sig_bytes).map_err(|_| SigningError::MalformedSignature)?;
    let given = key_fingerprint(key);
    let named = map
        .get("key_id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if key.verify(&signing_input(&map), &sig).is_err() {
        // Say which key was expected when that is the likely cause.
        if named.starts_with("ed25519:") && named != given {
            return Err(SigningError::WrongKey {
                manifest: named,
                given,
            });
        }
        return Err(SigningError::Mismatch);
    }
    Ok(named)
}

/// Opens a signed approval record in a tag message or release notes.
pub const RECORD_BEGIN: &str = "-----BEGIN RELEASE COORDINATOR APPROVAL RECORD-----";
/// Closes it.
pub const RECORD_END: &str = "-----END RELEASE COORDINATOR APPROVAL RECORD-----";

/// A signed record as a block of text: the JSON on one line between the markers, so that it
/// survives being pasted into a tag message, Markdown (in a code block) or an email.
pub fn record_block(signed: &Value) -> String {
    format!("{RECORD_BEGIN}\n{signed}\n{RECORD_END}\n")
}

/// The signed records in `text` (what lies between each pair of markers).
pub fn record_blocks(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(RECORD_BEGIN) {
        let after = &rest[start + RECORD_BEGIN.len()..];
        let Some(end) = after.find(RECORD_END) else {
            break;
        };
        out.push(after[..end].trim());
        rest = &after[end + RECORD_END.len()..];
    }
    out
}

/// Writes a JSON value as block-style YAML with every string double-quoted (JSON string
/// syntax is valid YAML double-quoted syntax), so the file reads back to the same JSON value
/// with any YAML parser.
pub fn to_quoted_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_yaml(value, 0, &mut out);
    out
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => serde_json::to_string(s).expect("string serializes"),
        other => other.to_string(),
    }
}

fn write_yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = serde_json::to_string(k).expect("string serializes");
                let key = if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    k.clone()
                } else {
                    key
                };
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write_yaml(v, indent, out);
                    }
                    Value::Object(_) => out.push_str(&format!("{pad}{key}: {{}}\n")),
                    Value::Array(_) => out.push_str(&format!("{pad}{key}: []\n")),
                    _ => out.push_str(&format!("{pad}{key}: {}\n", scalar(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match item {
                    Value::Object(m) if !m.is_empty() => {
                        // The first key goes on the dash line, the rest under it.
                        let mut inner = String::new();
                        write_yaml(item, indent + 2, &mut inner);
                        let trimmed = inner.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {trimmed}"));
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}-\n"));
                        write_yaml(item, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}- {}\n", scalar(item))),
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest() -> Value {
        json!({
            "milestone": "mvp-ready",
            "version": "mvp-v1",
            "released_at": "2025-05-14T17:12:00Z",
            "trace_id": "trace-xyz-789",
            "qa_coverage": 91.3,
            "features": ["BookingFlow", "Notification.Send"],
            "sprints": [],
            "approved_by": "yes",
            "components": [{"service": "booking", "tag": "1.10", "values_sha256": "00ff"}],
            "extra": {"nested": {"k": "v"}, "n": null, "b": true}
        })
    }

    #[test]
    fn quoted_yaml_reads_back_to_the_same_json() {
        let m = manifest();
        let text = to_quoted_yaml(&m);
        assert!(
            text.contains("released_at: \"2025-05-14T17:12:00Z\""),
            "{text}"
        );
        assert!(
            text.contains("- service: \"booking\"\n  tag: \"1.10\""),
            "{text}"
        );
        let back: Value = yaml_serde::from_str(&text).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn sign_then_verify_and_detect_tampering() {
        let signer = ReleaseSigner::from_seed([7; 32]);
        let signed = signer.sign(&manifest());
        let text = to_quoted_yaml(&signed);
        assert_eq!(
            verify_manifest(&text, &signer.verifying_key()).unwrap(),
            signer.key_id
        );

        let tampered = text.replace("\"mvp-v1\"", "\"mvp-v2\"");
        assert!(matches!(
            verify_manifest(&tampered, &signer.verifying_key()),
            Err(SigningError::Mismatch)
        ));

        let other = ReleaseSigner::from_seed([8; 32]);
        let err = verify_manifest(&text, &other.verifying_key()).unwrap_err();
        assert!(matches!(err, SigningError::WrongKey { .. }), "{err}");

        let unsigned = to_quoted_yaml(&manifest());
        assert!(matches!(
            verify_manifest(&unsigned, &signer.verifying_key()),
            Err(SigningError::Unsigned)
        ));
    }

    #[test]
    fn signing_input_is_canonical_json_without_signature() {
        let signer = ReleaseSigner::from_seed([1; 32]);
        let signed = signer.sign(&json!({"b": 1, "a": "x"}));
        let input = signing_input(signed.as_object().unwrap());
        let expected = format!("{{\"a\":\"x\",\"b\":1,\"key_id\":\"{}\"}}", signer.key_id);
        assert_eq!(String::from_utf8(input).unwrap(), expected);
    }

    #[test]
    fn keygen_writes_private_key_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("release.pem");
        let (id, pub_path) = keygen(&out).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&out).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let signer = ReleaseSigner::load(&out, None).unwrap();
        assert_eq!(signer.key_id, id);
        assert_eq!(load_public_key(&pub_path).unwrap(), signer.verifying_key());
        assert!(matches!(keygen(&out), Err(SigningError::Write { .. })));
        // Loading a public key as a private one says what is wrong without echoing the file.
        let err = ReleaseSigner::load(&pub_path, None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not an Ed25519 PKCS#8 private key"),
            "{err}"
        );
        let public_pem = fs::read_to_string(&pub_path).unwrap();
        let body = public_pem.lines().nth(1).unwrap();
        assert!(!err.contains(body), "{err}");
    }
}
