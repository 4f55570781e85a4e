//! A real OCI registry for the image scenarios: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free port of 127.0.0.1, storing under a temporary folder, with
//! images written through its own API (a config blob, one layer, a manifest).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub struct Registry {
    child: Child,
    /// `127.0.0.1:<port>`: the registry host, as image references name it.
    pub host: String,
    http: reqwest::Client,
    /// The user and password the registry asks for, if it asks.
    login: Option<(&'static str, &'static str)>,
}

/// The one account of a registry started with [`Registry::start_with_login`].
pub const REGISTRY_USER: &str = "ci-bot";
pub const REGISTRY_PASSWORD: &str = "registry-test-password";
/// `htpasswd` for that account: bcrypt (cost 5, so that each request checks it quickly),
/// made with Python's `crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=32))`.
const HTPASSWD: &str = "ci-bot:$2b$05$CapCn8VO2eW9HGHbEk7n1ulTLhfDzPa1Yt4uzmZbmYcaxrR4xOlWG\n";

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port no other registry of this process is given. A port the OS hands out for `:0` and
/// that is then let go can be handed out again at once: two registries started side by side
/// would share one (the second fails to bind, and its test talks to the first's).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    loop {
        let port = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) % 5_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Registry {
    pub async fn start(root: &Path) -> Registry {
        Registry::start_as(root, None).await
    }

    /// A registry that answers only [`REGISTRY_USER`] with [`REGISTRY_PASSWORD`] (HTTP basic
    /// authentication against an `htpasswd` file, the distribution registry's own).
    pub async fn start_with_login(root: &Path) -> Registry {
        Registry::start_as(root, Some((REGISTRY_USER, REGISTRY_PASSWORD))).await
    }

    async fn start_as(root: &Path, login: Option<(&'static str, &'static str)>) -> Registry {
        // A port taken between the look and the start makes the registry exit: another port.
        for _ in 0..5 {
            if let Some(r) = Registry::start_on(root, free_port(), login).await {
                return r;
            }
        }
        panic!("docker-registry would not start on five ports");
    }

    async fn start_on(
        root: &Path,
        port: u16,
        login: Option<(&'static str, &'static str)>,
    ) -> Option<Registry> {
        let host = format!("127.0.0.1:{port}");
        let storage = root.join("registry");
        std::fs::create_dir_all(&storage).unwrap();
        let config = root.join("registry.yml");
        let auth = match login {
            None => String::new(),
            Some(_) => {
                let htpasswd = root.join("htpasswd");
                std::fs::write(&htpasswd, HTPASSWD).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: tests\n    path: {}\n",
                    htpasswd.display()
                )
            }
        };
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {host}\n{auth}",
                storage.display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry runs (apt install docker-registry; .ci/run installs it)");
        let mut r = Registry {
            child,
            host,
            http: reqwest::Client::new(),
            login,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(_)) = r.child.try_wait() {
                return None;
            }
            let up = r
                .request(reqwest::Method::GET, format!("http://{}/v2/", r.host))
                .send()
                .await
                .is_ok_and(|a| a.status().is_success());
            // Up, and ours: still running a moment later (one that lost the port exits).
            if up {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(None) = r.child.try_wait() {
                    return Some(r);
                }
                return None;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the registry did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A request with the registry's login, if it has one.
    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match self.login {
            Some((user, password)) => r.basic_auth(user, Some(password)),
            None => r,
        }
    }

    async fn blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let started = self
            .request(
                reqwest::Method::POST,
                format!("http://{}/v2/{repo}/blobs/uploads/", self.host),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(started.status(), 202, "upload starts");
        let location = started.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with("http") {
            location
        } else {
            format!("http://{}{location}", self.host)
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .request(reqwest::Method::PUT, format!("{location}{sep}digest={d}"))
            .header("Content-Type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(done.status(), 201, "blob stored");
        d
    }

    /// Writes a small image to `repo:tag` (its layer holds `content`); its manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, content: &str) -> String {
        let layer = self.blob(repo, content.as_bytes()).await;
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer]},
        })
        .to_string();
        let config_digest = self.blob(repo, config.as_bytes()).await;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": content.len()}],
        })
        .to_string();
        let put = self
            .request(
                reqwest::Method::PUT,
                format!("http://{}/v2/{repo}/manifests/{tag}", self.host),
            )
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201, "manifest stored");
        digest(manifest.as_bytes())
    }

    /// The digest `repo:tag` has, if the registry has it.
    pub async fn digest_of(&self, repo: &str, tag: &str) -> Option<String> {
        let got = self
            .request(
                reqwest::Method::HEAD,
                format!("http://{}/v2/{repo}/manifests/{tag}", self.host),
            )
            .header(
                "Accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap();
        got.status().is_success().then(|| {
            got.headers()["docker-content-digest"]
                .to_str()
                .unwrap()
                .to_string()
        })
    }
}
