//! Who may call what, and what the server keeps on the record: access control (tiers of
//! tokens and local users; the tiers themselves are `config::Tier`), the audit log, the
//! process sandbox and the validator of agents' objects.

pub mod access;
pub mod audit;
pub mod sandbox;
pub mod validate;

/// The sha256 of `bytes` in lower-case hex: how objects appear in results and the audit log,
/// and how token secrets are kept.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
