//! A TLS acceptor for mock upstreams: a certificate for 127.0.0.1 and localhost, signed by a CA
//! made for the run and written to `ca_path`. Shared by the specs and `benches/end_to_end.rs`.

use std::path::Path;
use std::sync::Arc;

pub fn tls_acceptor(ca_path: &Path, alpn: Vec<Vec<u8>>) -> tokio_rustls::TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // OpenSSL (nginx, haproxy) takes a leaf whose issuer name equals its subject name as
    // self-signed; rcgen gives both the same default name.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keyproxy test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(ca_path, ca.pem()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    config.alpn_protocols = alpn;
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
