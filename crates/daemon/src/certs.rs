//! Certificate tooling for `thresig cluster init` and `thresig init`: a
//! local cluster CA and one key and certificate per member.
//!
//! Keys are ECDSA P-256 (rcgen's default, supported by every TLS 1.3 peer).
//! A member's certificate carries both the server and client
//! authentication EKUs (a signer serves, and coordinates as a client with
//! the same identity), its seat name `seat-<n>.<cluster>`, and `localhost`,
//! `127.0.0.1` and `::1` for loopback clusters. Private keys are written with
//! mode 0600 at creation and are zeroized in memory when dropped.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use zeroize::Zeroizing;

use crate::error::Error;
use crate::ids::{ClusterName, Seat};
use crate::tls::{read_public_file, read_secret_file, write_new_file, write_secret_file};

/// When a certificate is valid: from `not_before` to `not_after`.
///
/// The caller reads the clock; nothing here does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Validity {
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Validity {
    /// Valid from an hour before `now` (tolerating clock skew between
    /// members) for `lifetime`.
    #[must_use]
    pub fn starting(now: SystemTime, lifetime: Duration) -> Self {
        let skew = Duration::from_secs(3600);
        Self {
            not_before: now.checked_sub(skew).unwrap_or(now),
            not_after: now.checked_add(lifetime).unwrap_or(now),
        }
    }

    fn apply(&self, params: &mut CertificateParams) {
        params.not_before = self.not_before.into();
        params.not_after = self.not_after.into();
    }
}

/// A cluster's certificate authority: the only trust anchor of its members.
///
/// # Invariants
/// The signing key is never shown by `Debug` and is written only by
/// [`ClusterCa::write`], with mode 0600. (rcgen's key pair does not zeroize
/// its memory; keep a `ClusterCa` only as long as issuing takes.)
pub struct ClusterCa {
    cluster: ClusterName,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Creates a new CA for `cluster`.
    ///
    /// # Errors
    /// [`Error::Certificate`] if key generation or signing fails.
    pub fn generate(cluster: ClusterName, validity: Validity) -> Result<Self, Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("thresig cluster {cluster} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        validity.apply(&mut params);
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cluster,
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA written by [`ClusterCa::write`], to issue more members.
    ///
    /// # Errors
    /// [`Error::KeyFilePermissions`] if the key file is group/world
    /// accessible, [`Error::ReadFile`], and [`Error::Certificate`] for files
    /// that are not a CA certificate and its key.
    pub fn load(cluster: ClusterName, cert_path: &Path, key_path: &Path) -> Result<Self, Error> {
        let key_pem = read_secret_file(key_path)?;
        let key_text = std::str::from_utf8(&key_pem).map_err(|_| Error::Pem {
            path: key_path.to_path_buf(),
            kind: "private key",
        })?;
        let key = KeyPair::from_pem(key_text)?;
        let cert_pem = String::from_utf8(read_public_file(cert_path)?).map_err(|_| Error::Pem {
            path: cert_path.to_path_buf(),
            kind: "certificate",
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)?;
        Ok(Self {
            cluster,
            cert_pem,
            issuer,
        })
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600, set at
    /// creation); existing files are never overwritten.
    ///
    /// # Errors
    /// [`Error::WriteFile`], also when a file exists.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), Error> {
        let key_pem = Zeroizing::new(self.issuer.key().serialize_pem());
        write_secret_file(key_path, key_pem.as_bytes())?;
        write_new_file(cert_path, self.cert_pem.as_bytes(), 0o644)
    }

    /// The CA certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a member's key and certificate for `seat`.
    ///
    /// # Errors
    /// [`Error::Certificate`] if key generation or signing fails.
    pub fn issue_member(&self, seat: Seat, validity: Validity) -> Result<MemberTls, Error> {
        let key = KeyPair::generate()?;
        let seat_name = self.cluster.seat_name(seat);
        let mut params = CertificateParams::new(vec![seat_name.clone(), "localhost".to_owned()])?;
        params.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        params
            .distinguished_name
            .push(DnType::CommonName, seat_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity.apply(&mut params);
        let cert = params.signed_by(&key, &self.issuer)?;
        let key_fingerprint = crate::tls::key_fingerprint(cert.der())
            .ok_or(Error::Malformed("issued certificate"))?;
        Ok(MemberTls {
            seat,
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
            key_fingerprint,
        })
    }
}

/// A member's TLS key and certificate, ready to be written.
///
/// # Invariants
/// The key is zeroized on drop and never shown by `Debug`.
pub struct MemberTls {
    seat: Seat,
    cert_pem: String,
    key_pem: Zeroizing<String>,
    key_fingerprint: [u8; 32],
}

impl fmt::Debug for MemberTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemberTls")
            .field("seat", &self.seat)
            .finish_non_exhaustive()
    }
}

impl MemberTls {
    /// The member's seat.
    #[must_use]
    pub fn seat(&self) -> Seat {
        self.seat
    }

    /// The certificate, PEM.
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The SHA-256 of the certificate's public key (SubjectPublicKeyInfo):
    /// what the roster pins for this seat (see [`crate::TlsPins`]).
    #[must_use]
    pub fn key_fingerprint(&self) -> [u8; 32] {
        self.key_fingerprint
    }

    /// Writes the certificate (mode 0644) and the key (mode 0600, set at
    /// creation); existing files are never overwritten.
    ///
    /// # Errors
    /// [`Error::WriteFile`], also when a file exists.
    pub fn write(&self, cert_path: &Path, key_path: &Path) -> Result<(), Error> {
        write_secret_file(key_path, self.key_pem.as_bytes())?;
        write_new_file(cert_path, self.cert_pem.as_bytes(), 0o644)
    }
}
