//! Which map a call means: by name, id or pin, opened with its facts; what cannot be
//! dumped is refused saying what to use instead.

use std::path::Path;

use super::*;
use crate::ebpf::bpf::Object;
use crate::ebpf::inventory;
use crate::ebpf::maps::{self, OpenMap};
use crate::error::{Code, EbpfError};

pub(crate) fn not_found(message: String) -> EbpfError {
    EbpfError::new(Code::MapNotFound, message)
}

pub(crate) fn kernel_err(what: &str, e: impl std::fmt::Display) -> EbpfError {
    EbpfError::new(Code::BpfSyscallFailed, format!("{what}: {e}"))
}

/// Opens the selected map, or says exactly what is wrong with the selection.
pub(crate) fn open(sel: &MapSelector<'_>) -> Result<OpenMap, EbpfError> {
    let given = usize::from(sel.map_name.is_some())
        + usize::from(sel.map_id.is_some())
        + usize::from(sel.pin_path.is_some());
    if given != 1 {
        return Err(EbpfError::new(
            Code::InvalidArguments,
            "give exactly one of `map_name`, `map_id` or `pin_path` (list_maps shows names and ids)",
        ));
    }
    if let Some(id) = sel.map_id {
        return OpenMap::by_id(id).map_err(|e| {
            if e.errno() == Some(libc::ENOENT) {
                not_found(format!(
                    "no map with id {id}; list_maps shows the maps on this host"
                ))
                .with_context("map_id", id)
            } else {
                kernel_err(&format!("opening map {id}"), e)
            }
        });
    }
    if let Some(path) = sel.pin_path {
        return open_pinned(Path::new(path));
    }
    let name = sel.map_name.unwrap_or_default();
    let mut matches = Vec::new();
    for id in inventory::ids(Object::Map).map_err(|e| kernel_err("listing maps", e))? {
        if let Ok((record, _)) = inventory::read_map(id)
            && record.name == name
        {
            matches.push(id);
        }
    }
    match matches.as_slice() {
        [] => Err(not_found(format!(
            "no map named `{name}` (BPF map names are at most 15 characters); list_maps shows the maps on this host"
        ))
        .with_context("map_name", name)),
        [id] => OpenMap::by_id(*id).map_err(|e| kernel_err(&format!("opening map {id}"), e)),
        many => Err(EbpfError::new(
            Code::AmbiguousMapName,
            format!("{} maps are named `{name}` (ids {}); select one with `map_id`", many.len(), join_ids(many)),
        )
        .with_context("ids", many)),
    }
}

pub(crate) fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn open_pinned(path: &Path) -> Result<OpenMap, EbpfError> {
    // One answer for a path that does not exist, is not on a bpffs or leads elsewhere: the
    // read tier must not learn what exists on the host outside bpffs.
    let none = || {
        EbpfError::new(
            Code::PinPathNotOnBpffs,
            format!(
                "no BPF object is pinned at {} (pinned maps live on a bpffs mount, /sys/fs/bpf)",
                path.display()
            ),
        )
        .with_context("pin_path", path)
    };
    let pinned = crate::ebpf::sys::PinnedFile::open(path).map_err(|_| none())?;
    if !pinned.is_on_bpffs() || pinned.is_dir() {
        return Err(none());
    }
    OpenMap::by_pin(&pinned.proc_path()).map_err(|e| match e.errno() {
        Some(libc::EINVAL) => EbpfError::new(
            Code::NotAMap,
            format!(
                "{} is not a pinned map (a program or link?)",
                pinned.real.display()
            ),
        ),
        _ => kernel_err(&format!("opening {}", pinned.real.display()), e),
    })
}

/// Refuses maps whose contents are not key/value entries, saying what to use instead.
pub(crate) fn check_dumpable(map: &OpenMap) -> Result<(), EbpfError> {
    let t = map.record.map_type.as_str();
    if maps::dumpable(t) {
        return Ok(());
    }
    let instead = match t {
        "ringbuf" | "user_ringbuf" | "perf_event_array" => {
            "it carries a stream of events, not entries; read events with the trace tools"
        }
        "prog_array" => "it holds program references; list_programs shows the programs",
        "queue" | "stack" => "reading it would pop (remove) its elements",
        "sk_storage"
        | "inode_storage"
        | "task_storage"
        | "cgrp_storage"
        | "cgroup_storage"
        | "percpu_cgroup_storage" => {
            "its entries are keyed by kernel objects and cannot be walked from user space"
        }
        "bloom_filter" => "a bloom filter cannot be enumerated; map_lookup checks one value",
        _ => "the kernel does not let user space walk its entries",
    };
    Err(EbpfError::new(
        Code::MapNotDumpable,
        format!(
            "map {} (`{}`) is a {t} map: {instead}",
            map.record.id, map.record.name
        ),
    )
    .with_context("map_type", t))
}

pub(crate) fn summary(map: &OpenMap) -> MapSummary {
    let (key_type, value_type) = match &map.btf {
        Some(btf) if map.record.btf_key_type_id != 0 || map.record.btf_value_type_id != 0 => (
            btf.type_name(map.record.btf_key_type_id),
            btf.type_name(map.record.btf_value_type_id),
        ),
        _ => (
            format!("{} bytes", map.record.key_size),
            format!("{} bytes", map.record.value_size),
        ),
    };
    MapSummary {
        id: map.record.id,
        name: map.record.name.clone(),
        map_type: map.record.map_type.clone(),
        key_type,
        value_type,
    }
}
