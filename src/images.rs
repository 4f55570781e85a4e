//! Container images, through the OCI Distribution API: that every image tag a release writes
//! exists before any pull request opens, and `tag-docker`'s copy of a service's image from its
//! source tag (the trigger commit's, by default) to the release tag, manifest only: the
//! layers are already in the repository, so nothing is pulled.

use std::collections::BTreeMap;
use std::str::FromStr;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

use crate::config::ImagesConfig;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("`{0}` is not an image reference")]
    BadReference(String),
    #[error("the registry of {reference} could not be asked: {why}")]
    Registry { reference: String, why: String },
    /// The registry refused the bot's credentials, or wants some: the operator's to fix.
    #[error("the registry `{host}` refused {who} for {reference}; {fix}")]
    Denied {
        host: String,
        reference: String,
        who: &'static str,
        fix: String,
    },
    /// A release tag already names another image: it is not moved.
    #[error(
        "{reference} already exists as {has}, not the {wanted} it would be copied from; a release tag is never moved"
    )]
    Moved {
        reference: String,
        has: String,
        wanted: String,
    },
}

/// The registry's digest (`sha256:...`) of each `image:tag`, keyed by `image:tag`.
pub type Digests = BTreeMap<String, String>;

/// A copy of an image's manifest to a new tag, looked up and not yet made.
pub struct Retag {
    source: Reference,
    target: Reference,
    manifest: Vec<u8>,
    /// The target already is this image (an earlier attempt copied it).
    copied: bool,
    pub digest: String,
}

/// The registries the operator configured, with their credentials.
pub struct Registries {
    client: Client,
    auth: BTreeMap<String, RegistryAuth>,
}

/// The manifest types the bot copies (an image, an index of images, Docker's two).
const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

impl Registries {
    /// `secret` reads the variable a `usernameEnv`/`passwordEnv` names; an unset one is an
    /// error naming the variable.
    pub fn new(
        config: &ImagesConfig,
        secret: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Registries, String> {
        let insecure: Vec<String> = config
            .registries
            .iter()
            .filter(|(_, r)| r.insecure)
            .map(|(host, _)| host.clone())
            .collect();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            // A registry that does not answer holds up a trigger's job, not the bot.
            connect_timeout: Some(std::time::Duration::from_secs(5)),
            read_timeout: Some(std::time::Duration::from_secs(30)),
            ..Default::default()
        });
        let mut auth = BTreeMap::new();
        for (host, r) in &config.registries {
            let read = |var: &Option<String>, key: &str| -> Result<Option<String>, String> {
                match var {
                    None => Ok(None),
                    Some(v) => secret(v).filter(|s| !s.is_empty()).map(Some).ok_or_else(|| {
                        format!("environment variable {v} (images.registries.{host}.{key}) is not set or empty")
                    }),
                }
            };
            let user = read(&r.username_env, "usernameEnv")?;
            let password = read(&r.password_env, "passwordEnv")?;
            if let Some(password) = password {
                auth.insert(
                    host.clone(),
                    RegistryAuth::Basic(user.unwrap_or_default(), password),
                );
            }
        }
        Ok(Registries { client, auth })
    }

    fn reference(image: &str, tag: &str) -> Result<Reference, ImageError> {
        let text = format!("{image}:{tag}");
        Reference::from_str(&text).map_err(|_| ImageError::BadReference(text))
    }

    fn auth_for(&self, r: &Reference) -> RegistryAuth {
        self.auth
            .get(r.registry())
            .cloned()
            .unwrap_or(RegistryAuth::Anonymous)
    }

    /// Adds the digest of each `(image, tag)` to `digests` (under `image:tag`), asking once for
    /// each; the `` `image:tag` ``s the registries do not have.
    pub async fn digests_of(
        &self,
        wanted: impl IntoIterator<Item = (String, String)>,
        digests: &mut Digests,
    ) -> Result<Vec<String>, ImageError> {
        let mut missing = Vec::new();
        for (image, tag) in wanted {
            let key = format!("{image}:{tag}");
            if digests.contains_key(&key) || missing.contains(&format!("`{key}`")) {
                continue;
            }
            match self.digest(&image, &tag).await? {
                Some(d) => {
                    digests.insert(key, d);
                }
                None => missing.push(format!("`{key}`")),
            }
        }
        Ok(missing)
    }

    /// The digest of `image:tag`, or `None` when the registry has no such tag.
    pub async fn digest(&self, image: &str, tag: &str) -> Result<Option<String>, ImageError> {
        let r = Self::reference(image, tag)?;
        match self
            .client
            .fetch_manifest_digest(&r, &self.auth_for(&r))
            .await
        {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.failure(&r, e)),
        }
    }

    /// What a registry's refusal means: credentials refused (or wanted) are the operator's to
    /// fix and are said so; anything else is a failure that is tried again.
    fn failure(&self, r: &Reference, e: OciDistributionError) -> ImageError {
        if !is_denied(&e) {
            return registry_error(r, e);
        }
        let host = r.registry().to_string();
        let (who, fix) = if self.auth.contains_key(&host) {
            (
                "the bot's credentials",
                format!(
                    "check the user and password that images.registries.\"{host}\" names (usernameEnv, passwordEnv), and that they may read and, for tag-docker, push it"
                ),
            )
        } else {
            (
                "an anonymous request",
                format!(
                    "give the bot credentials in images.registries.\"{host}\" (usernameEnv, passwordEnv)"
                ),
            )
        };
        ImageError::Denied {
            host,
            reference: r.whole(),
            who,
            fix,
        }
    }

    /// What copying `image:from` to `image:to` takes, looked up without changing anything:
    /// `None` when there is no `image:from`; an error when `image:to` names another image.
    pub async fn plan_retag(
        &self,
        image: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Retag>, ImageError> {
        let source = Self::reference(image, from)?;
        let target = Self::reference(image, to)?;
        let auth = self.auth_for(&source);
        let existing = self.digest(image, to).await?;
        let (manifest, digest) = match self
            .client
            .pull_manifest_raw(&source, &auth, MANIFEST_TYPES)
            .await
        {
            Ok(m) => m,
            Err(e) if is_missing(&e) => return Ok(None),
            Err(e) => return Err(self.failure(&source, e)),
        };
        match existing {
            Some(d) if d != digest => Err(ImageError::Moved {
                reference: target.whole(),
                has: d,
                wanted: digest,
            }),
            done => Ok(Some(Retag {
                source,
                target,
                manifest: manifest.to_vec(),
                copied: done.is_some(),
                digest,
            })),
        }
    }

    /// Copies a looked-up tag (the manifest, byte for byte); its digest.
    pub async fn retag(&self, r: Retag) -> Result<String, ImageError> {
        let Retag {
            source,
            target,
            manifest,
            copied,
            digest,
        } = r;
        if copied {
            return Ok(digest); // copied before
        }
        let auth = self.auth_for(&source);
        let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string))
            .unwrap_or_else(|| MANIFEST_TYPES[0].to_string());
        let content_type = http::HeaderValue::from_str(&media_type)
            .map_err(|_| registry_error(&source, format!("a manifest of type {media_type:?}")))?;
        // The push is authorized for the target repository (a token per operation).
        self.client
            .auth(&target, &auth, RegistryOperation::Push)
            .await
            .map_err(|e| self.failure(&target, e))?;
        self.client
            .push_manifest_raw(&target, manifest, content_type)
            .await
            .map_err(|e| self.failure(&target, e))?;
        Ok(digest)
    }
}

/// Whether `tag` is a valid image tag (the OCI distribution rule: letters, digits, `.`, `_`,
/// `-`, not starting with `.` or `-`, at most 128).
pub fn is_image_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && !tag.starts_with(['.', '-'])
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Whether the registry answered that the tag (or the repository) does not exist.
fn is_missing(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::ImageManifestNotFoundError(_) => true,
        OciDistributionError::ServerError { code, .. } => *code == 404,
        OciDistributionError::RegistryError { envelope, .. } => envelope.errors.iter().any(|e| {
            matches!(
                e.code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::NotFound
            )
        }),
        _ => false,
    }
}

/// Whether the registry refused the request for want of (good) credentials.
fn is_denied(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::AuthenticationFailure(_)
        | OciDistributionError::UnauthorizedError { .. } => true,
        OciDistributionError::ServerError { code, .. } => matches!(code, 401 | 403),
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)),
        _ => false,
    }
}

fn registry_error(r: &Reference, why: impl std::fmt::Display) -> ImageError {
    ImageError::Registry {
        reference: r.whole(),
        why: why.to_string(),
    }
}
