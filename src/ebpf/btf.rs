//! The kernel's vmlinux BTF, parsed once per process and shared, and the one BPF object
//! loader that uses it. Parsing costs ~20-50 ms and tens of MB, and aya 0.14's
//! `EbpfLoader::new()` parses it again on every call, so nothing else may create loaders.

use std::sync::{Mutex, OnceLock};

use aya::{Btf, Ebpf, EbpfError, EbpfLoader};

static VMLINUX: OnceLock<Result<Btf, String>> = OnceLock::new();
static LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();

/// The parsed /sys/kernel/btf/vmlinux, or why it could not be parsed (the error is cached
/// too: the file does not appear at run time).
pub fn vmlinux() -> Result<&'static Btf, String> {
    VMLINUX
        .get_or_init(|| {
            let started = std::time::Instant::now();
            let btf = Btf::from_sys_fs().map_err(|e| format!("reading vmlinux BTF: {e}"))?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis(),
                "parsed vmlinux BTF"
            );
            Ok(btf)
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Loads a BPF object (maps created, programs not yet loaded) with CO-RE relocations
/// against the shared vmlinux BTF. Loads are serialized; they take milliseconds.
pub fn load_object(bytes: &[u8]) -> Result<Ebpf, EbpfError> {
    load_object_with(bytes, |_| {})
}

/// As [`load_object`], with per-load settings (map sizes). The loader is shared, so
/// settings stay until overwritten: every caller sets each setting its object relies on.
pub fn load_object_with(
    bytes: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'static>),
) -> Result<Ebpf, EbpfError> {
    let loader = LOADER.get_or_init(|| {
        // `new()` parses BTF once here; it is replaced by the shared copy at once.
        let mut loader = EbpfLoader::new();
        loader.btf(vmlinux().ok());
        Mutex::new(loader)
    });
    let mut loader = loader.lock().unwrap_or_else(|p| p.into_inner());
    configure(&mut loader);
    loader.load(bytes)
}

static DEPLOY_LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();

/// Loads an agent's object with a loader of its own: the gadgets' loader carries their map
/// settings (sizes by map name), which must never apply to someone else's maps. Maps the
/// object asks to pin go under `pin_dir` only. Errors are the loader's, as text.
pub fn load_deploy_object(bytes: &[u8], pin_dir: &std::path::Path) -> Result<Ebpf, String> {
    let loader = DEPLOY_LOADER.get_or_init(|| {
        let mut loader = EbpfLoader::new();
        loader.btf(vmlinux().ok());
        Mutex::new(loader)
    });
    let mut loader = loader.lock().unwrap_or_else(|p| p.into_inner());
    loader.default_map_pin_directory(pin_dir);
    // The validator has parsed these bytes already, but the loader goes further (BTF fix-ups,
    // relocations) in code that can panic on hostile input: a panic is a refusal, never a
    // crash. Whatever it had created is dropped, so closed, during unwinding.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loader.load(bytes))) {
        Ok(loaded) => loaded.map_err(|e| e.to_string()),
        Err(_) => Err("the object is malformed (the loader gave up on it)".into()),
    }
}

/// The name and kind (`func`, `var`, ...) of type `id` in the kernel's vmlinux BTF, for
/// naming what an object refers to by a raw BTF id. Parsed on each call with the small BTF
/// reader: only refusals need it, and keeping a second copy of vmlinux BTF would cost tens
/// of MB for the life of the process.
pub fn vmlinux_type_name(id: u32) -> Option<(String, &'static str)> {
    use super::btf_reader::{Btf as Reader, Kind};
    let data = std::fs::read("/sys/kernel/btf/vmlinux").ok()?;
    let btf = Reader::parse(data).ok()?;
    let ty = btf.get(id).ok()?;
    let kind = match ty.kind {
        Kind::Func => "function",
        Kind::Var => "variable",
        Kind::Datasec => "section",
        _ => "type",
    };
    let name = btf.name(id);
    (!name.is_empty()).then(|| (name.to_owned(), kind))
}

/// `obj` linked exactly as [`load_deploy_object`]'s loader links it before loading: BTF
/// fixed up for this kernel's features, CO-RE relocated against the shared vmlinux BTF (when
/// there is one), map references set (to placeholder descriptors: the validator needs the
/// instructions, not the maps), then calls and function references linked. The validator
/// checks what this returns, so it sees every instruction the kernel will be given.
pub fn link_as_loader(obj: &aya_obj::Object) -> Result<aya_obj::Object, String> {
    // The linker panics on some hostile relocations: that is a refusal, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| link_inner(obj)))
        .unwrap_or_else(|_| Err("the linker gave up on it".into()))
}

fn link_inner(obj: &aya_obj::Object) -> Result<aya_obj::Object, String> {
    use std::collections::HashSet;
    let mut linked = obj.clone();
    if let Some(features) = aya::features().btf() {
        linked
            .fixup_and_sanitize_btf(features)
            .map_err(|e| e.to_string())?;
    }
    if let Ok(btf) = vmlinux() {
        linked.relocate_btf(btf).map_err(|e| e.to_string())?;
    }
    let text_sections: HashSet<usize> = linked.functions.keys().map(|(s, _)| *s).collect();
    let maps: Vec<(String, aya_obj::Map)> = linked
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    linked
        .relocate_maps(
            maps.iter().map(|(n, m)| (n.as_str(), i32::MAX, m)),
            &text_sections,
        )
        .map_err(|e| e.to_string())?;
    linked
        .relocate_calls(&text_sections)
        .map_err(|e| e.to_string())?;
    Ok(linked)
}
