//! Who is calling and which tiers they get.
//!
//! - HTTP: bearer tokens from `security.access_control.tokens_file`. The file keeps each
//!   token's id, the sha256 of its secret (never the secret), its tiers and an optional
//!   expiry. A presented secret is hashed and compared with every entry in constant time.
//! - unix socket and stdio: the peer's uid and groups (SO_PEERCRED, or the process's own),
//!   checked against `permitted_users` / `permitted_groups` and mapped to tiers by
//!   `user_tiers`, `group_tiers` and `default_tiers`.
//!
//! Tiers granted here are intersected with the tiers the configuration enables.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::SystemTime;

use serde::Deserialize;
use sha2::Digest;

use crate::config::AccessControlConfig;
use crate::config::Tier;

/// Prefix of every secret `token new` makes, so that leaked secrets are easy to recognise
/// (and to scan for).
pub const SECRET_PREFIX: &str = "emcp_";

/// A caller, as far as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// `token:ID`, `uid:N` (with the user name when known: `uid:1000(alice)`), or
    /// `anonymous` for unauthenticated loopback HTTP.
    pub id: String,
    /// Tiers this identity may use (before the configuration's own switches).
    pub tiers: BTreeSet<Tier>,
    /// Whether `id` names a principal (a token or a user), rather than "whoever connected".
    pub authenticated: bool,
}

impl Identity {
    pub fn allows(&self, tier: Tier) -> bool {
        self.tiers.contains(&tier)
    }

    /// Everyone on an unauthenticated loopback HTTP server: the default tiers.
    pub fn anonymous(config: &AccessControlConfig) -> Self {
        Self {
            id: "anonymous".into(),
            tiers: config.default_tiers.iter().copied().collect(),
            authenticated: false,
        }
    }

    pub fn tier_names(&self) -> Vec<&'static str> {
        self.tiers.iter().map(|t| t.as_str()).collect()
    }
}

// ---------------------------------------------------------------- tokens

/// Why a request carried no usable token. The label is what metrics and logs show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// Not `Bearer <secret>`.
    Malformed,
    /// No token has this secret.
    Unknown,
    /// The token's expiry has passed.
    Expired,
}

impl AuthFailure {
    pub fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "invalid",
            Self::Expired => "expired",
        }
    }

    /// What the client is told (the `error_description` of `WWW-Authenticate`).
    pub fn description(self) -> &'static str {
        match self {
            Self::Missing => "send Authorization: Bearer <secret>",
            Self::Malformed => "the Authorization header must be `Bearer <secret>`",
            Self::Unknown => "the token is not valid on this server",
            Self::Expired => "the token has expired; ask for a new one",
        }
    }
}

/// One line of the tokens file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLine {
    id: String,
    sha256: String,
    tiers: Vec<Tier>,
    #[serde(default)]
    expires: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenLine>,
}

#[derive(Debug, Clone)]
struct Token {
    id: String,
    hash: [u8; 32],
    tiers: BTreeSet<Tier>,
    expires: Option<SystemTime>,
}

/// The tokens the server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<Token>,
}

impl Tokens {
    /// Reads and checks a tokens file: every id unique, every hash 64 hex digits, every
    /// expiry an RFC 3339 time. Errors name the file, the line when known, and the fix.
    /// A file others can write is refused: whoever can write it can grant themselves any
    /// tier.
    pub fn load(path: &Path) -> Result<Self, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o022 != 0 {
            return Err(format!(
                "tokens file {} is writable by group or others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<Self, String> {
        let file: TokenFile = if text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        }) {
            TokenFile::default()
        } else {
            let de = yaml_serde::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let key = e.path().to_string();
                let inner = e.into_inner();
                let at = inner
                    .location()
                    .map(|l| format!(", line {}", l.line()))
                    .unwrap_or_default();
                format!(
                    "{origin}{at}: key `{key}`: {inner}; each entry is \
                     `- {{id: NAME, sha256: HEX, tiers: [read, trace], expires: \"2027-01-01T00:00:00Z\"}}` \
                     (`ebpf-mcp token new` prints one)"
                )
            })?
        };
        let mut seen = BTreeSet::new();
        let mut tokens = Vec::with_capacity(file.tokens.len());
        for (i, line) in file.tokens.into_iter().enumerate() {
            let at = format!("{origin}: tokens[{i}] (id `{}`)", line.id);
            if line.id.is_empty() || !seen.insert(line.id.clone()) {
                return Err(format!("{at}: ids must be non-empty and unique"));
            }
            let hash = parse_hash(&line.sha256).ok_or_else(|| {
                format!(
                    "{at}: `sha256` must be 64 hex digits (the hash of the secret, not the secret)"
                )
            })?;
            let expires = match &line.expires {
                None => None,
                Some(t) => Some(humantime::parse_rfc3339_weak(t).map_err(|e| {
                    format!("{at}: `expires` {t:?} is not an RFC 3339 time ({e}), e.g. \"2027-01-01T00:00:00Z\"")
                })?),
            };
            if line.tiers.is_empty() {
                return Err(format!(
                    "{at}: `tiers` must name at least one of read, trace, deploy"
                ));
            }
            tokens.push(Token {
                id: line.id,
                hash,
                tiers: line.tiers.into_iter().collect(),
                expires,
            });
        }
        Ok(Self { tokens })
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Which token gets which tiers: what decides the tools each token's client sees.
    pub fn grants(&self) -> Vec<(&str, &BTreeSet<Tier>)> {
        self.tokens
            .iter()
            .map(|t| (t.id.as_str(), &t.tiers))
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The identity an `Authorization` header value stands for. Every entry is compared,
    /// in constant time, whatever matches: the time taken says nothing about the secret.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        now: SystemTime,
    ) -> Result<Identity, AuthFailure> {
        let header = header.ok_or(AuthFailure::Missing)?;
        let (scheme, secret) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") || secret.trim().is_empty() {
            return Err(AuthFailure::Malformed);
        }
        let presented: [u8; 32] = sha2::Sha256::digest(secret.trim().as_bytes()).into();
        let mut found: Option<&Token> = None;
        for token in &self.tokens {
            if constant_time_eq(&token.hash, &presented) {
                found = Some(token);
            }
        }
        let token = found.ok_or(AuthFailure::Unknown)?;
        if token.expires.is_some_and(|t| t <= now) {
            return Err(AuthFailure::Expired);
        }
        Ok(Identity {
            id: format!("token:{}", token.id),
            tiers: token.tiers.clone(),
            authenticated: true,
        })
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// A new secret: 32 bytes from the kernel's CSPRNG, base64url, with [`SECRET_PREFIX`].
pub fn new_secret() -> std::io::Result<String> {
    use base64::Engine;
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    // The kernel's CSPRNG, as getrandom(2) reads it (urandom blocks only before boot-time
    // seeding, which is over long before a server runs).
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes))?;
    Ok(format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The tokens-file line for a secret.
pub fn token_line(id: &str, secret: &str, tiers: &[Tier], expires: Option<SystemTime>) -> String {
    let hex = super::sha256_hex(secret.as_bytes());
    let tiers: Vec<&str> = tiers.iter().map(|t| t.as_str()).collect();
    let expires = expires
        .map(|t| format!(", expires: \"{}\"", crate::time::rfc3339_seconds(t)))
        .unwrap_or_default();
    format!(
        "  - {{id: {id}, sha256: \"{hex}\", tiers: [{}]{expires}}}",
        tiers.join(", ")
    )
}

// ---------------------------------------------------------------- local users

/// A local process: its user and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// This process's real user and groups (stdio and the command line).
    pub fn this_process() -> Self {
        use nix::unistd::{getgid, getgroups, getuid};
        Self {
            uid: getuid().as_raw(),
            gid: getgid().as_raw(),
            groups: getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
                .unwrap_or_default(),
        }
    }

    /// The process at the other end of a unix socket, from SO_PEERCRED; its supplementary
    /// groups from /proc/PID/status (empty if it is already gone).
    pub fn of_socket(fd: std::os::fd::BorrowedFd<'_>) -> std::io::Result<Self> {
        let cred = nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(std::io::Error::from)?;
        let groups = crate::ebpf::host::process_groups(cred.pid());
        Ok(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            groups,
        })
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// A user name or uid from the configuration, as a uid (`None`: no such user here).
/// Lookups use the reentrant `getpwnam_r` family: calls run on many threads at once.
pub fn resolve_user(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse() {
        return Some(uid);
    }
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// A group name or gid from the configuration, as a gid.
pub fn resolve_group(name: &str) -> Option<u32> {
    if let Ok(gid) = name.parse() {
        return Some(gid);
    }
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The user name of a uid, when the user database has one.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Names in `permitted_users`/`permitted_groups`/`user_tiers`/`group_tiers` that match no
/// user or group on this host (they can never match; the server warns at start).
pub fn unknown_names(config: &AccessControlConfig) -> Vec<String> {
    let users = config
        .permitted_users
        .iter()
        .chain(config.user_tiers.keys())
        .filter(|n| resolve_user(n).is_none())
        .map(|n| format!("user `{n}`"));
    let groups = config
        .permitted_groups
        .iter()
        .chain(config.group_tiers.keys())
        .filter(|n| resolve_group(n).is_none())
        .map(|n| format!("group `{n}`"));
    users.chain(groups).collect()
}

/// Why a local user is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// The identity of a local process, or why it may not use the server.
///
/// Permitted: with `permitted_users` and `permitted_groups` both empty, every user on stdio
/// (the OS decided who may start the binary) and, on the unix socket, root and the user the
/// server runs as; otherwise a listed user or a member (primary or supplementary) of a
/// listed group. Tiers: the union of the `user_tiers` and `group_tiers` entries that match,
/// or `default_tiers` when none does.
pub fn local_identity(
    config: &AccessControlConfig,
    peer: &Peer,
    open_to_all_when_unlisted: bool,
) -> Result<Identity, Refused> {
    let name = user_name(peer.uid);
    let label = match &name {
        Some(n) => format!("uid:{}({n})", peer.uid),
        None => format!("uid:{}", peer.uid),
    };
    let user_matches = |entry: &String| resolve_user(entry) == Some(peer.uid);
    let group_matches = |entry: &String| resolve_group(entry).is_some_and(|g| peer.in_group(g));
    let unlisted = config.permitted_users.is_empty() && config.permitted_groups.is_empty();
    let permitted = if unlisted {
        open_to_all_when_unlisted || peer.uid == 0 || peer.uid == nix::unistd::geteuid().as_raw()
    } else {
        config.permitted_users.iter().any(user_matches)
            || config.permitted_groups.iter().any(group_matches)
    };
    if !permitted {
        return Err(Refused(format!(
            "{label} is not permitted: add the user to security.access_control.permitted_users \
             or one of its groups to permitted_groups"
        )));
    }
    let mut tiers = BTreeSet::new();
    let mut matched = false;
    for (entry, granted) in &config.user_tiers {
        if user_matches(entry) {
            matched = true;
            tiers.extend(granted.iter().copied());
        }
    }
    for (entry, granted) in &config.group_tiers {
        if group_matches(entry) {
            matched = true;
            tiers.extend(granted.iter().copied());
        }
    }
    if !matched {
        tiers.extend(config.default_tiers.iter().copied());
    }
    Ok(Identity {
        id: label,
        tiers,
        authenticated: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(extra: &str) -> (Tokens, String) {
        let secret = new_secret().unwrap();
        let line = token_line("alice", &secret, &[Tier::Read, Tier::Trace], None);
        let text = format!("tokens:\n{line}\n{extra}");
        (Tokens::parse(&text, "t.yaml").unwrap(), secret)
    }

    #[test]
    fn a_secret_authenticates_as_its_token_and_nothing_else_does() {
        let (t, secret) = tokens("");
        let now = SystemTime::now();
        let id = t
            .authenticate(Some(&format!("Bearer {secret}")), now)
            .unwrap();
        assert_eq!(id.id, "token:alice");
        assert_eq!(id.tier_names(), ["read", "trace"]);
        assert_eq!(t.authenticate(None, now), Err(AuthFailure::Missing));
        assert_eq!(
            t.authenticate(Some(&secret), now),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            t.authenticate(Some("Bearer emcp_wrong"), now),
            Err(AuthFailure::Unknown)
        );
        // The hash is not the secret.
        let hex = crate::security::sha256_hex(secret.as_bytes());
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {hex}")), now),
            Err(AuthFailure::Unknown)
        );
    }

    #[test]
    fn expired_tokens_are_refused_as_expired() {
        let secret = new_secret().unwrap();
        let past = SystemTime::now() - std::time::Duration::from_secs(60);
        let text = format!(
            "tokens:\n{}\n",
            token_line("old", &secret, &[Tier::Read], Some(past))
        );
        let t = Tokens::parse(&text, "t.yaml").unwrap();
        assert_eq!(
            t.authenticate(Some(&format!("Bearer {secret}")), SystemTime::now()),
            Err(AuthFailure::Expired)
        );
    }

    #[test]
    fn bad_token_files_say_where_and_how_to_fix() {
        for (text, needle) in [
            (
                "tokens:\n  - {id: a, sha256: \"abc\", tiers: [read]}\n",
                "64 hex digits",
            ),
            (
                "tokens:\n  - {id: a, sha256: \"00\", tiers: [admin]}\n",
                "line 2",
            ),
            (
                "tokens:\n  - {id: a, secret: \"x\", tiers: [read]}\n",
                "token new",
            ),
            (
                "tokens:\n  - {id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", tiers: [read], expires: \"soon\"}\n",
                "RFC 3339",
            ),
            (
                "tokens:\n  - {id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", tiers: [read]}\n  - {id: a, sha256: \"0000000000000000000000000000000000000000000000000000000000000000\", tiers: [read]}\n",
                "unique",
            ),
        ] {
            let err = Tokens::parse(text, "t.yaml").unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        assert!(Tokens::parse("# none yet\n", "t.yaml").unwrap().is_empty());
    }

    #[test]
    fn local_users_get_listed_tiers_or_the_defaults() {
        let root = Peer {
            uid: 0,
            gid: 0,
            groups: vec![],
        };
        let nobody = Peer {
            uid: 65534,
            gid: 65534,
            groups: vec![4242],
        };
        let mut c = AccessControlConfig::default();
        // Unlisted: stdio lets everyone in; the socket only root and the server's user.
        assert!(local_identity(&c, &nobody, true).is_ok());
        assert!(local_identity(&c, &nobody, false).is_err());
        let id = local_identity(&c, &root, false).unwrap();
        assert_eq!(id.tier_names(), ["read", "trace", "deploy"]);
        // Listed by group (supplementary), tiers by group.
        c.permitted_groups = vec!["4242".into()];
        c.group_tiers.insert("4242".into(), vec![Tier::Read]);
        let id = local_identity(&c, &nobody, false).unwrap();
        assert_eq!(id.tier_names(), ["read"]);
        assert!(id.id.starts_with("uid:65534"));
        let err = local_identity(&c, &root, false).unwrap_err();
        assert!(err.0.contains("permitted_users"), "{err:?}");
    }
}
