//! A token issuer for distribution's `auth: token` scheme: it checks Basic credentials and
//! answers with RFC 7519 JWTs signed with ES256 whose `x5c` certificate the real registry
//! trusts (`rootcertbundle`), so Wharf's Bearer flow is exercised against a real registry.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use actix_web::{HttpRequest, HttpResponse, web};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

pub const SERVICE: &str = "wharf-test";
const ISSUER: &str = "wharf-test-issuer";

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
    user: (String, String),
    /// The `scope` of every token request, in order.
    requests: Mutex<Vec<String>>,
}

pub struct TokenIssuer {
    pub url: String,
    pub cert_pem: PathBuf,
    signer: Arc<Signer>,
    handle: actix_web::dev::ServerHandle,
}

impl TokenIssuer {
    pub async fn start(dir: &Path, user: &str, password: &str) -> TokenIssuer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(pkcs8.as_ref().to_vec());
        let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
            .unwrap();
        let cert = rcgen::CertificateParams::new(vec!["wharf-test-token".into()])
            .unwrap()
            .self_signed(&kp)
            .unwrap();
        let cert_pem = dir.join("token-cert.pem");
        std::fs::write(&cert_pem, cert.pem()).unwrap();
        let signer = Arc::new(Signer {
            key,
            cert_der: cert.der().to_vec(),
            user: (user.into(), password.into()),
            requests: Mutex::default(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let data = web::Data::from(signer.clone());
        let server = actix_web::HttpServer::new(move || {
            actix_web::App::new().app_data(data.clone()).route("/token", web::get().to(issue))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        TokenIssuer { url, cert_pem, signer, handle }
    }

    /// The registry's `auth:` section trusting this issuer.
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.url,
            self.cert_pem.display()
        )
    }

    pub fn requests(&self) -> Vec<String> {
        self.signer.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

async fn issue(req: HttpRequest, signer: web::Data<Signer>) -> HttpResponse {
    let expected = format!("{}:{}", signer.user.0, signer.user.1);
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok()?.strip_prefix("Basic ").map(str::to_owned))
        .and_then(|b| STANDARD.decode(b).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    if given.as_deref() != Some(expected.as_str()) {
        return HttpResponse::Unauthorized().finish();
    }
    let url = reqwest::Url::parse(&format!("http://x/?{}", req.query_string())).unwrap();
    let mut access = Vec::new();
    for (k, v) in url.query_pairs() {
        if k != "scope" {
            continue;
        }
        signer.requests.lock().unwrap().push(v.to_string());
        for scope in v.split(' ') {
            let (kind, rest) = scope.split_once(':').unwrap();
            let (name, actions) = rest.rsplit_once(':').unwrap();
            let actions: Vec<&str> = actions.split(',').collect();
            access.push(serde_json::json!({ "type": kind, "name": name, "actions": actions }));
        }
    }
    let now = chrono::Utc::now().timestamp();
    let header = serde_json::json!({ "typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&signer.cert_der)] });
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": signer.user.0, "aud": SERVICE,
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    let signing_input = format!("{}.{}", b64(&header), b64(&claims));
    let sig = signer.key.sign(&SystemRandom::new(), signing_input.as_bytes()).unwrap();
    let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()));
    HttpResponse::Ok().json(serde_json::json!({ "token": token, "expires_in": 300 }))
}
