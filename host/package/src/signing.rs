//! Ed25519 package signatures and key files.
//!
//! `manifest.sig` signs the exact `manifest.toml` bytes; the manifest pins every payload file
//! by sha256, so one signature covers the whole package (GEISA-style, see field notes).
//!
//! Formats (text, one item a line, base64 standard alphabet with padding):
//! - `manifest.sig`: `ed25519`, public key, signature
//! - secret key file: `wasmdm-ed25519-secret`, 32 secret bytes
//! - public key file: `wasmdm-ed25519-public`, 32 public bytes

use std::fs;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::digest::Digest;
use crate::error::{PackageError, Result};

/// First line of `manifest.sig`.
pub const SIG_ALGORITHM: &str = "ed25519";
/// First line of a secret key file.
pub const SECRET_KEY_TAG: &str = "wasmdm-ed25519-secret";
/// First line of a public key file.
pub const PUBLIC_KEY_TAG: &str = "wasmdm-ed25519-public";
/// Cap on `manifest.sig`; the real thing is about 140 bytes.
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Creates a fresh key pair from the OS random source.
pub fn keygen() -> Result<(SigningKey, VerifyingKey)> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| PackageError::Random(e.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    let public = key.verifying_key();
    Ok((key, public))
}

/// Stable name for a public key: lowercase hex sha256 of its 32 bytes.
pub fn fingerprint(key: &VerifyingKey) -> String {
    Digest::of(key.as_bytes()).to_hex()
}

/// The `manifest.sig` text for `manifest_bytes`.
pub fn sign_manifest(key: &SigningKey, manifest_bytes: &[u8]) -> String {
    let sig = key.sign(manifest_bytes);
    format!(
        "{SIG_ALGORITHM}\n{}\n{}\n",
        B64.encode(key.verifying_key().as_bytes()),
        B64.encode(sig.to_bytes())
    )
}

/// A parsed `manifest.sig`, not yet verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureFile {
    /// Key the signer claims.
    pub key: VerifyingKey,
    /// The signature.
    pub signature: Signature,
}

impl SignatureFile {
    /// Parses the three-line format.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let bad = |reason: &str| PackageError::MalformedSignature {
            what: "manifest.sig".into(),
            reason: reason.into(),
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let mut lines = text.lines().map(str::trim);
        if lines.next() != Some(SIG_ALGORITHM) {
            return Err(bad("first line must be \"ed25519\""));
        }
        let key = decode_32(lines.next().ok_or_else(|| bad("missing public key line"))?)
            .map_err(|e| bad(&e))?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|_| bad("public key is not a valid ed25519 point"))?;
        let sig = B64
            .decode(lines.next().ok_or_else(|| bad("missing signature line"))?)
            .map_err(|_| bad("signature is not base64"))?;
        let sig: [u8; 64] = sig
            .try_into()
            .map_err(|_| bad("signature must be 64 bytes"))?;
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("unexpected extra lines"));
        }
        Ok(SignatureFile {
            key,
            signature: Signature::from_bytes(&sig),
        })
    }

    /// Verifies against `manifest_bytes`, requiring the claimed key to be among `trusted`.
    /// Returns the key fingerprint.
    pub fn verify(&self, manifest_bytes: &[u8], trusted: &[VerifyingKey]) -> Result<String> {
        let fp = fingerprint(&self.key);
        if !trusted.contains(&self.key) {
            return Err(PackageError::UnknownKey(fp));
        }
        self.key
            .verify_strict(manifest_bytes, &self.signature)
            .map_err(|_| PackageError::BadSignature(fp.clone()))?;
        Ok(fp)
    }
}

/// Parses `manifest.sig` and verifies it; see [`SignatureFile::verify`].
pub fn verify_manifest(
    sig_text: &[u8],
    manifest_bytes: &[u8],
    trusted: &[VerifyingKey],
) -> Result<String> {
    SignatureFile::parse(sig_text)?.verify(manifest_bytes, trusted)
}

fn decode_32(line: &str) -> std::result::Result<[u8; 32], String> {
    let bytes = B64
        .decode(line.trim())
        .map_err(|_| "not base64".to_string())?;
    bytes
        .try_into()
        .map_err(|_| "key must be 32 bytes".to_string())
}

fn decode_key_text(what: &str, tag: &str, text: &str) -> Result<[u8; 32]> {
    let bad = |reason: String| PackageError::MalformedSignature {
        what: what.to_string(),
        reason,
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some(tag) {
        return Err(bad(format!("first line must be {tag:?}")));
    }
    let key =
        decode_32(lines.next().ok_or_else(|| bad("missing key line".into()))?).map_err(bad)?;
    if lines.next().is_some() {
        return Err(bad("unexpected extra lines".into()));
    }
    Ok(key)
}

/// Secret key file text.
pub fn encode_secret_key(key: &SigningKey) -> String {
    format!("{SECRET_KEY_TAG}\n{}\n", B64.encode(key.to_bytes()))
}

/// Public key file text.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{PUBLIC_KEY_TAG}\n{}\n", B64.encode(key.as_bytes()))
}

/// Parses secret key file text.
pub fn decode_secret_key(text: &str) -> Result<SigningKey> {
    Ok(SigningKey::from_bytes(&decode_key_text(
        "secret key",
        SECRET_KEY_TAG,
        text,
    )?))
}

/// Parses public key file text.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey> {
    let bytes = decode_key_text("public key", PUBLIC_KEY_TAG, text)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| PackageError::MalformedSignature {
        what: "public key".into(),
        reason: "not a valid ed25519 point".into(),
    })
}

fn read_text(path: &Path) -> Result<String> {
    let bytes =
        fs::read(path).map_err(|e| PackageError::io(format!("read {}", path.display()), e))?;
    String::from_utf8(bytes).map_err(|_| PackageError::MalformedSignature {
        what: path.display().to_string(),
        reason: "not UTF-8".into(),
    })
}

/// Loads a secret key file.
pub fn load_secret_key(path: &Path) -> Result<SigningKey> {
    decode_secret_key(&read_text(path)?)
}

/// Loads a public key file.
pub fn load_public_key(path: &Path) -> Result<VerifyingKey> {
    decode_public_key(&read_text(path)?)
}

/// Writes a new secret key file (mode 0600 on Unix); never overwrites an existing file.
pub fn save_secret_key(path: &Path, key: &SigningKey) -> Result<()> {
    write_new(path, encode_secret_key(key).as_bytes(), 0o600)
}

/// Writes a new public key file; never overwrites an existing file.
pub fn save_public_key(path: &Path, key: &VerifyingKey) -> Result<()> {
    write_new(path, encode_public_key(key).as_bytes(), 0o644)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let ctx = || format!("write {}", path.display());
    let mut f = opts.open(path).map_err(|e| PackageError::io(ctx(), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| PackageError::io(ctx(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn sign_verify_round_trip() {
        let (sk, pk) = keygen().unwrap();
        let sig = sign_manifest(&sk, b"manifest");
        assert!(sig.starts_with("ed25519\n"));
        assert_eq!(sig.lines().count(), 3);
        assert_eq!(
            verify_manifest(sig.as_bytes(), b"manifest", &[pk]).unwrap(),
            fingerprint(&pk)
        );
    }

    #[test]
    fn tampered_unknown_and_malformed_are_integrity_errors() {
        let (sk, pk) = keygen().unwrap();
        let (_, other) = keygen().unwrap();
        let sig = sign_manifest(&sk, b"manifest");
        let e = verify_manifest(sig.as_bytes(), b"manifesT", &[pk]).unwrap_err();
        assert!(matches!(e, PackageError::BadSignature(_)));
        let e = verify_manifest(sig.as_bytes(), b"manifest", &[other]).unwrap_err();
        assert!(matches!(e, PackageError::UnknownKey(ref fp) if *fp == fingerprint(&pk)));
        for bad in ["", "rsa\nx\ny\n", "ed25519\n!!\nAA==\n", "ed25519\n"] {
            let e = verify_manifest(bad.as_bytes(), b"manifest", &[pk]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Integrity, "{bad:?}");
        }
    }

    #[test]
    fn key_files_round_trip_and_refuse_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (sk, pk) = keygen().unwrap();
        let sec = dir.path().join("k.sec");
        let publ = dir.path().join("k.pub");
        save_secret_key(&sec, &sk).unwrap();
        save_public_key(&publ, &pk).unwrap();
        assert_eq!(load_secret_key(&sec).unwrap().to_bytes(), sk.to_bytes());
        assert_eq!(load_public_key(&publ).unwrap(), pk);
        assert!(
            fs::read_to_string(&sec)
                .unwrap()
                .starts_with("wasmdm-ed25519-secret\n")
        );
        assert_eq!(
            save_secret_key(&sec, &sk).unwrap_err().kind(),
            ErrorKind::Io
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&sec).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // A public key file is not a secret key file.
        assert!(load_secret_key(&publ).is_err());
        assert!(matches!(
            load_public_key(&dir.path().join("none")),
            Err(PackageError::Io { .. })
        ));
    }
}
