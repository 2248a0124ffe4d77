//! TLS after the server accepted an SSLRequest, with certificate checks per [`SslMode`]
//! as libpq does them. The ring provider is always passed explicitly: a process-wide
//! default provider may not be installed, or may be another one.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{ClientError, ConnectOptions, SslMode};

/// Runs the TLS handshake on `tcp`, checking the server's certificate as
/// `options.sslmode` and `options.sslrootcert` ask.
pub(crate) async fn handshake(tcp: TcpStream, options: &ConnectOptions) -> Result<TlsStream<TcpStream>, ClientError> {
    let config = client_config(options).await?;
    let server_name = ServerName::try_from(options.host.clone()).map_err(|_| ClientError::Tls {
        message: format!(
            "`{}` is neither a DNS name nor an IP address, so it cannot be checked against a certificate; \
             set `host` to the server's name or address",
            options.host
        ),
    })?;
    TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|error| handshake_error(error, options))
}

/// What the handshake failure means for the user, and what to change.
fn handshake_error(error: io::Error, options: &ConnectOptions) -> ClientError {
    let at = format!("{}:{}", options.host, options.port);
    let trusted = match &options.sslrootcert {
        Some(path) => format!("the CA certificates in sslrootcert {}", path.display()),
        None => "the public CAs of the webpki roots, as no sslrootcert is set,".to_owned(),
    };
    let cause = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let message = match cause {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => format!(
            "the certificate of the server at {at} is not issued by {trusted} (unknown issuer); set `sslrootcert` \
             to the PEM file of the CA that issued the server's certificate"
        ),
        Some(rustls::Error::InvalidCertificate(
            problem @ (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
        )) => format!(
            "the certificate of the server at {at} does not match the host name `{}`: {problem}; connect with a \
             name or address that the certificate lists, or set sslmode=verify-ca to check only the issuer",
            options.host
        ),
        Some(rustls::Error::InvalidCertificate(problem)) => format!(
            "the certificate of the server at {at} is not acceptable with sslmode={}: {problem}",
            options.sslmode
        ),
        Some(other) => format!("the TLS handshake with {at} failed: {other}"),
        None => format!("the TLS handshake with {at} failed: {error}"),
    };
    ClientError::Tls { message }
}

/// The rustls configuration for one connection.
async fn client_config(options: &ConnectOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls {
            message: format!("the ring provider offers no TLS version: {e}"),
        })?;
    let roots = match &options.sslrootcert {
        Some(path) => Some(load_roots(path).await?),
        None => None,
    };
    let config = match (options.sslmode, roots) {
        // libpq: without a root certificate, `require` (and `prefer`) encrypt but do not
        // authenticate the server.
        (SslMode::Disable | SslMode::Prefer | SslMode::Require, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        (SslMode::Disable | SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, roots) => {
            let inner = webpki_verifier(roots, &provider)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(IgnoreHostName { inner }))
                .with_no_client_auth()
        }
        (SslMode::VerifyFull, roots) => builder
            .with_webpki_verifier(webpki_verifier(roots, &provider)?)
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Checks the chain against `roots`, or the webpki roots when `None`.
fn webpki_verifier(
    roots: Option<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, ClientError> {
    let roots = roots.unwrap_or_else(|| RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    });
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| ClientError::Tls {
            message: format!("cannot set up certificate verification: {e}"),
        })
}

/// Reads the CA certificates of `sslrootcert`.
async fn load_roots(path: &Path) -> Result<RootCertStore, ClientError> {
    let pem = tokio::fs::read(path).await.map_err(|e| ClientError::Tls {
        message: format!("cannot read sslrootcert {}: {e}", path.display()),
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| ClientError::Tls {
            message: format!("sslrootcert {} is not valid PEM: {e}", path.display()),
        })?;
        roots.add(cert).map_err(|e| ClientError::Tls {
            message: format!(
                "sslrootcert {} holds a certificate that cannot be a CA: {e}",
                path.display()
            ),
        })?;
    }
    if roots.is_empty() {
        return Err(ClientError::Tls {
            message: format!(
                "sslrootcert {} holds no certificate; it must contain PEM `BEGIN CERTIFICATE` blocks",
                path.display()
            ),
        });
    }
    Ok(roots)
}

/// Accepts any certificate (libpq's `require` without a root certificate), but still
/// checks that the server holds its key: the handshake signatures are verified.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `verify-ca`: the full webpki check except the host name. The name is checked last,
/// after the chain, so a name mismatch means everything else passed.
#[derive(Debug)]
struct IgnoreHostName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[tokio::test]
    async fn a_missing_or_empty_sslrootcert_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = load_roots(&missing).await.unwrap_err().to_string();
        assert!(
            error.contains("cannot read sslrootcert") && error.contains("missing.pem"),
            "{error}"
        );

        let empty: PathBuf = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = load_roots(&empty).await.unwrap_err().to_string();
        assert!(error.contains("holds no certificate"), "{error}");
    }
}
