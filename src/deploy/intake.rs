//! Where an object comes from: base64 in the call, or a file under
//! `tools.deploy.allowed_dirs`, pinned and judged by the path the kernel resolves.

use std::io::Read as _;

use super::*;
use crate::config::Config;
use crate::error::{Code, EbpfError};

/// The object's bytes: decoded from base64, or read from a file inside an allowed directory.
pub(crate) fn object_bytes(config: &Config, p: &DeployParams) -> Result<Vec<u8>, EbpfError> {
    use base64::Engine;
    let cap = config.tools.deploy.max_object_bytes.get();
    let too_big = |n: u64| {
        EbpfError::new(
            Code::ObjectTooLarge,
            format!("the object is {n} bytes; the limit is {cap} (tools.deploy.max_object_bytes)"),
        )
    };
    match (&p.object, &p.path) {
        (Some(_), Some(_)) => Err(invalid("give `object` or `path`, not both")),
        (None, None) => Err(invalid(
            "give the compiled object as base64 `object`, or a `path` under tools.deploy.allowed_dirs",
        )),
        (Some(b64), None) => {
            // Reject by the encoded size first: no need to decode a huge string.
            let encoded = b64.len() as u64;
            if encoded / 4 * 3 > cap + 3 {
                return Err(too_big(encoded / 4 * 3));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    EbpfError::new(
                        Code::InvalidElf,
                        format!("`object` is not valid base64 ({e}); encode the .o file with `base64 -w0`"),
                    )
                })?;
            if bytes.len() as u64 > cap {
                return Err(too_big(bytes.len() as u64));
            }
            Ok(bytes)
        }
        (None, Some(path)) => {
            let dirs = &config.tools.deploy.allowed_dirs;
            let refused = |why: String| EbpfError::new(Code::PathNotAllowed, why);
            if dirs.is_empty() {
                return Err(refused(
                    "`path` is disabled: tools.deploy.allowed_dirs is empty; send the object as base64 `object`".into(),
                ));
            }
            // The file is pinned (opened without being read: a FIFO cannot block it, a
            // device cannot act) and judged by the path the kernel resolves it to, links and
            // `..` followed. Every failure reads the same, so a refusal tells nothing about
            // what exists outside the allowed directories or where a link leads.
            let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            let not_here = || {
                refused(format!(
                    "`{path}` names no regular file inside tools.deploy.allowed_dirs ({}) once \
                     links are followed",
                    shown.join(", ")
                ))
            };
            let pinned = crate::ebpf::sys::PinnedFile::open(std::path::Path::new(path))
                .map_err(|_| not_here())?;
            let inside = dirs.iter().any(|d| {
                crate::ebpf::sys::PinnedFile::open(d)
                    .is_ok_and(|d| d.is_dir() && pinned.real.starts_with(&d.real))
            });
            if !inside || !pinned.is_regular() {
                return Err(not_here());
            }
            let file = pinned.reopen().map_err(|_| not_here())?;
            let real = pinned.real.clone();
            let meta = file
                .metadata()
                .map_err(|e| invalid(format!("`path` {}: {e}", real.display())))?;
            if meta.len() > cap {
                return Err(too_big(meta.len()));
            }
            let mut bytes = Vec::with_capacity(meta.len() as usize);
            file.take(cap + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| invalid(format!("reading {}: {e}", real.display())))?;
            if bytes.len() as u64 > cap {
                return Err(too_big(bytes.len() as u64));
            }
            Ok(bytes)
        }
    }
}
