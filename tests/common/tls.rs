//! A TLS server on 127.0.0.1 in front of the mock: certificates from a fresh
//! private CA (rcgen), decrypted bytes forwarded to the mock as they are.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{
    rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
    TlsAcceptor,
};

/// The TLS front: its address, its CA (PEM), and how many TCP connections
/// it accepted.
pub struct TlsFront {
    pub addr: SocketAddr,
    pub ca_pem: String,
    connections: Arc<AtomicUsize>,
}

impl TlsFront {
    /// A front for `wokelo.test`, `localhost` and `127.0.0.1`.
    pub async fn start(upstream: SocketAddr) -> TlsFront {
        Self::start_for(upstream, &["wokelo.test", "localhost", "127.0.0.1"]).await
    }

    /// A front whose certificate names only `names`.
    pub async fn start_for(upstream: SocketAddr, names: &[&str]) -> TlsFront {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "wokelo-auth test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(names)
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut upstream) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        TlsFront {
            addr,
            ca_pem: ca.pem(),
            connections,
        }
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// The CA written to a fresh PEM file.
    pub fn ca_file(&self) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "wokelo-auth-test-ca-{}-{}.pem",
            std::process::id(),
            self.addr.port()
        ));
        std::fs::write(&path, &self.ca_pem).unwrap();
        path
    }
}
