//! Real handshakes over loopback TCP with certificates generated here (rcgen): edge TLS, mutual
//! TLS accepting a CA-signed client and refusing a client without (or with a foreign)
//! certificate, and load errors that name the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tickstream_auth::tls::{
    CaBundle, CertKeyPair, TlsError, client_config, server_config, server_config_mtls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).expect("write");
        p
    }

    /// A CA written as `<name>-ca.pem`, returned as an issuer for leaves.
    fn ca(&self, name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        self.write(&format!("{name}-ca.pem"), &ca.pem());
        ca
    }

    /// A leaf signed by `ca`, written as `<name>.pem` / `<name>.key`.
    fn leaf(
        &self,
        name: &str,
        ca: &CertifiedIssuer<'static, KeyPair>,
        usage: ExtendedKeyUsagePurpose,
    ) -> (PathBuf, PathBuf) {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.subject_alt_names.push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, ca).expect("sign");
        (
            self.write(&format!("{name}.pem"), &cert.pem()),
            self.write(&format!("{name}.key"), &key.serialize_pem()),
        )
    }
}

fn pair(paths: &(PathBuf, PathBuf)) -> CertKeyPair {
    CertKeyPair::load(&paths.0, &paths.1).expect("load pair")
}

fn ca(path: &Path) -> CaBundle {
    CaBundle::load(path).expect("load ca")
}

/// Serves one connection: reads "ping", answers "pong". Returns whether the handshake worked.
async fn serve_once(listener: TcpListener, acceptor: TlsAcceptor) -> Result<(), String> {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    let mut tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let mut buf = [0; 4];
    tls.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    tls.write_all(b"pong").await.map_err(|e| e.to_string())?;
    tls.shutdown().await.map_err(|e| e.to_string())
}

/// Connects, says "ping" and returns the answer, or the first error.
async fn ping(port: u16, connector: TlsConnector) -> Result<Vec<u8>, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(b"ping").await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    Ok(out)
}

async fn exchange(
    server: rustls::ServerConfig,
    client: rustls::ClientConfig,
) -> (Result<(), String>, Result<Vec<u8>, String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = tokio::spawn(serve_once(listener, TlsAcceptor::from(Arc::new(server))));
    let client = ping(port, TlsConnector::from(Arc::new(client))).await;
    let server = server.await.expect("server task");
    (server, client)
}

#[tokio::test]
async fn edge_tls_handshake_with_a_private_ca() {
    let pki = Pki::new();
    let root = pki.ca("edge");
    let server = pki.leaf("server", &root, ExtendedKeyUsagePurpose::ServerAuth);
    let cfg = server_config(&pair(&server)).expect("server config");
    let client = client_config(&ca(&pki.path("edge-ca.pem")), None).expect("client config");
    let (s, c) = exchange(cfg, client).await;
    assert_eq!(s, Ok(()));
    assert_eq!(c, Ok(b"pong".to_vec()));

    // A client trusting another CA refuses the server.
    let _other = pki.ca("other");
    let cfg = server_config(&pair(&server)).expect("server config");
    let client = client_config(&ca(&pki.path("other-ca.pem")), None).expect("client config");
    let (s, c) = exchange(cfg, client).await;
    assert!(s.is_err() && c.is_err(), "{s:?} {c:?}");
}

#[tokio::test]
async fn mutual_tls_accepts_a_signed_client_and_refuses_others() {
    let pki = Pki::new();
    let root = pki.ca("cluster");
    let foreign = pki.ca("foreign");
    let server = pki.leaf("engine", &root, ExtendedKeyUsagePurpose::ServerAuth);
    let gateway = pki.leaf("gateway", &root, ExtendedKeyUsagePurpose::ClientAuth);
    let intruder = pki.leaf("intruder", &foreign, ExtendedKeyUsagePurpose::ClientAuth);
    let cluster_ca = ca(&pki.path("cluster-ca.pem"));
    let mtls = || server_config_mtls(&pair(&server), &cluster_ca).expect("mtls config");

    let client = client_config(&cluster_ca, Some(&pair(&gateway))).expect("client");
    let (s, c) = exchange(mtls(), client).await;
    assert_eq!(s, Ok(()));
    assert_eq!(c, Ok(b"pong".to_vec()));

    for who in [None, Some(pair(&intruder))] {
        let client = client_config(&cluster_ca, who.as_ref()).expect("client");
        let (s, c) = exchange(mtls(), client).await;
        // TLS 1.3 lets the client finish its side before the server has judged the client
        // certificate, so the refusal may reach the client only on read; either way no data.
        let err = s.expect_err("server must refuse");
        assert!(err.contains("certificate") || err.contains("Certificate"), "{err}");
        assert!(c.as_ref().map_or(true, |got| got.is_empty()), "{c:?}");
    }
}

#[test]
fn bad_pem_files_fail_naming_the_file() {
    let pki = Pki::new();
    let root = pki.ca("a");
    let (cert, key) = pki.leaf("leaf", &root, ExtendedKeyUsagePurpose::ServerAuth);
    let (_, other_key) = pki.leaf("other", &root, ExtendedKeyUsagePurpose::ServerAuth);
    let empty = pki.write("empty.pem", "");
    let missing = pki.path("missing.pem");

    let msg = |r: Result<CertKeyPair, TlsError>| r.expect_err("must fail").to_string();
    let m = msg(CertKeyPair::load(&missing, &key));
    assert!(m.contains("missing.pem"), "{m}");
    let m = msg(CertKeyPair::load(&empty, &key));
    assert!(m.contains("empty.pem") && m.contains("certificate"), "{m}");
    let m = msg(CertKeyPair::load(&cert, &cert));
    assert!(m.contains("leaf.pem") && m.contains("private key"), "{m}");
    let m = msg(CertKeyPair::load(&cert, &other_key));
    assert!(m.contains("leaf.pem") && m.contains("other.key"), "{m}");
    let m = CaBundle::load(&empty).expect_err("empty CA").to_string();
    assert!(m.contains("empty.pem"), "{m}");

    let loaded = CertKeyPair::load(&cert, &key).expect("good pair");
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("PRIVATE") && debug.contains("leaf.key"), "{debug}");
    assert!(String::from_utf8_lossy(loaded.key_pem()).contains("PRIVATE KEY"));
}
