//! `token new|hash`: bearer tokens and their tokens-file entries.

use std::io::Write;

use super::args::TokenAction;
use super::{EXIT_USAGE, write_stdout};
use crate::security::access;

pub(super) fn token_command(action: &TokenAction) -> u8 {
    let TokenAction::New {
        id,
        tiers,
        expires_in,
        append,
    } = action;
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
    {
        eprintln!("ebpf-mcp: --id must be letters, digits and - _ . @ (it appears in logs)");
        return EXIT_USAGE;
    }
    let mut parsed = Vec::new();
    for t in tiers {
        match crate::config::Tier::ALL
            .into_iter()
            .find(|tier| tier.as_str() == t.trim())
        {
            Some(tier) if !parsed.contains(&tier) => parsed.push(tier),
            Some(_) => {}
            None => {
                eprintln!("ebpf-mcp: --tiers: `{t}` is not a tier; use read, trace, deploy");
                return EXIT_USAGE;
            }
        }
    }
    parsed.sort();
    let expires = match expires_in.as_deref().map(humantime::parse_duration) {
        None => None,
        Some(Ok(d)) => Some(crate::time::add(std::time::SystemTime::now(), d)),
        Some(Err(e)) => {
            eprintln!("ebpf-mcp: --expires-in: {e}; write e.g. 90d or 12h");
            return EXIT_USAGE;
        }
    };
    let secret = match access::new_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ebpf-mcp: {e}");
            return 1;
        }
    };
    let line = access::token_line(id, &secret, &parsed, expires);
    let Some(file) = append else {
        return write_stdout(&format!(
            "# secret for `{id}` (shown once; the server keeps only its hash). Clients send:\n\
             #   Authorization: Bearer {secret}\n\
             # add this entry under `tokens:` in security.access_control.tokens_file:\n{line}\n"
        ));
    };
    // Check the file as it would be with the new entry before touching it.
    let existing = std::fs::read_to_string(file).unwrap_or_default();
    let mut updated = existing.clone();
    if existing.trim().is_empty() {
        updated = "tokens:\n".into();
    } else if !updated.ends_with('\n') {
        updated.push('\n');
    }
    updated.push_str(&line);
    updated.push('\n');
    if let Err(e) = access::Tokens::parse(&updated, &file.display().to_string()) {
        eprintln!("ebpf-mcp: not appending: {e}");
        return EXIT_USAGE;
    }
    // Written beside it and renamed over it: a reader never sees half a file, and the
    // result is mode 0600 whatever the old file's mode was.
    use std::os::unix::fs::OpenOptionsExt;
    let staging = file.with_extension(format!("tmp-{}", std::process::id()));
    let written = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&staging)
        .and_then(|mut f| f.write_all(updated.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&staging, file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&staging);
        eprintln!("ebpf-mcp: writing {}: {e}", file.display());
        return 1;
    }
    eprintln!(
        "ebpf-mcp: added `{id}` to {}; a running server picks it up on SIGHUP",
        file.display()
    );
    write_stdout(&format!("{secret}\n"))
}
