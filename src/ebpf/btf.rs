//! The kernel's vmlinux BTF, parsed while some work needs it and shared by everything
//! running at that time, and the BPF object loaders that use it. A parse costs ~20 ms and
//! ~15 MB: held for the life of the process it would be most of an idle server's memory,
//! so it is dropped (and the memory given back) as soon as the last user is done, and
//! parsed again by the next. aya 0.14's `EbpfLoader::new()` parses it too, so loaders are
//! made once each and handed the shared copy for each load.

use std::sync::{Arc, Mutex, OnceLock, Weak};

use aya::{Btf, Ebpf, EbpfError, EbpfLoader};

/// The parsed vmlinux BTF; freed, and the heap trimmed, when the last holder drops it.
#[derive(Debug)]
pub struct Vmlinux(Option<Btf>);

impl std::ops::Deref for Vmlinux {
    type Target = Btf;

    fn deref(&self) -> &Btf {
        self.0
            .as_ref()
            .expect("set at construction, taken only when dropped")
    }
}

impl Drop for Vmlinux {
    fn drop(&mut self) {
        drop(self.0.take());
        super::sys::trim_heap();
    }
}

/// Whoever holds the parse now (a weak reference: it goes with its last user).
static SHARED: Mutex<Weak<Vmlinux>> = Mutex::new(Weak::new());
/// Why vmlinux BTF cannot be parsed, once known (it does not appear at run time).
static MISSING: OnceLock<String> = OnceLock::new();

/// The parsed /sys/kernel/btf/vmlinux: the copy in use if there is one, else a new parse.
/// Hold the `Arc` for the whole piece of work that needs it.
pub fn vmlinux() -> Result<Arc<Vmlinux>, String> {
    if let Some(why) = MISSING.get() {
        return Err(why.clone());
    }
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(btf) = shared.upgrade() {
        return Ok(btf);
    }
    let started = std::time::Instant::now();
    match Btf::from_sys_fs() {
        Ok(btf) => {
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis(),
                "parsed vmlinux BTF"
            );
            let btf = Arc::new(Vmlinux(Some(btf)));
            *shared = Arc::downgrade(&btf);
            Ok(btf)
        }
        Err(e) => {
            let why = format!("reading vmlinux BTF: {e}");
            let _ = MISSING.set(why.clone());
            Err(why)
        }
    }
}

/// Whether the kernel's BTF describes struct `name` (false without BTF).
pub fn vmlinux_has_struct(name: &str) -> bool {
    vmlinux().is_ok_and(|btf| {
        btf.id_by_type_name_kind(name, aya_obj::btf::BtfKind::Struct)
            .is_ok()
    })
}

static LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();
/// The loader of `info`'s gadget checks, so that they do not queue behind the feature
/// probes on the gadgets' loader.
static CHECK_LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();
static DEPLOY_LOADER: OnceLock<Mutex<EbpfLoader<'static>>> = OnceLock::new();

/// A loader made once: `new()` parses BTF of its own, dropped at once (and the heap
/// trimmed); each load is then given the shared parse.
fn loader(
    slot: &'static OnceLock<Mutex<EbpfLoader<'static>>>,
) -> &'static Mutex<EbpfLoader<'static>> {
    slot.get_or_init(|| {
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        super::sys::trim_heap();
        Mutex::new(loader)
    })
}

/// Makes both loaders now, one after the other, so that their own BTF parses never overlap
/// with each other or with the shared one (memory).
pub fn prepare_loaders() {
    loader(&LOADER);
    loader(&CHECK_LOADER);
    loader(&DEPLOY_LOADER);
}

/// Runs `load` with the loader's BTF set to the shared vmlinux parse (when there is one) for
/// exactly that call.
fn with_btf<T>(
    loader: &mut EbpfLoader<'static>,
    load: impl FnOnce(&mut EbpfLoader<'static>) -> T,
) -> T {
    let Ok(btf) = vmlinux() else {
        loader.btf(None);
        return load(loader);
    };
    let raw: *const Vmlinux = Arc::into_raw(btf);
    // SAFETY: `raw` comes from `Arc::into_raw` just above, so it points to a live `Vmlinux`
    // for as long as that reference is not released; it is released below, after the loader
    // was told to forget it (`btf(None)`) and the load returned. The `Ebpf` a load returns
    // has no lifetime, so it cannot keep the reference either: nothing reads through it
    // after the release.
    let btf: &'static Btf = unsafe { &*raw };
    loader.btf(Some(btf));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| load(loader)));
    loader.btf(None);
    // SAFETY: `raw` came from `Arc::into_raw` above and is turned back exactly once; the
    // loader no longer refers to it.
    drop(unsafe { Arc::from_raw(raw) });
    match out {
        Ok(v) => v,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Loads a BPF object (maps created, programs not yet loaded) with CO-RE relocations
/// against vmlinux BTF. Loads are serialized; they take milliseconds.
pub fn load_object(bytes: &[u8]) -> Result<Ebpf, EbpfError> {
    load_object_with(bytes, |_| {})
}

/// As [`load_object`], with per-load settings (map sizes). The loader is shared, so
/// settings stay until overwritten: every caller sets each setting its object relies on.
pub fn load_object_with(
    bytes: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'static>),
) -> Result<Ebpf, EbpfError> {
    load_on(&LOADER, bytes, configure)
}

fn load_on(
    slot: &'static OnceLock<Mutex<EbpfLoader<'static>>>,
    bytes: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'static>),
) -> Result<Ebpf, EbpfError> {
    let mut loader = loader(slot).lock().unwrap_or_else(|p| p.into_inner());
    configure(&mut loader);
    with_btf(&mut loader, |l| l.load(bytes))
}

/// As [`load_object_with`], on the loader of `info`'s gadget checks.
pub fn load_check_object(
    bytes: &[u8],
    configure: impl FnOnce(&mut EbpfLoader<'static>),
) -> Result<Ebpf, EbpfError> {
    load_on(&CHECK_LOADER, bytes, configure)
}

/// Loads an agent's object with a loader of its own: the gadgets' loader carries their map
/// settings (sizes by map name), which must never apply to someone else's maps. Maps the
/// object asks to pin go under `pin_dir` only. Errors are the loader's, as text.
/// Why an object could not be loaded or linked as the loader would.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error(transparent)]
    Load(#[from] aya::EbpfError),
    #[error(transparent)]
    Btf(#[from] aya_obj::btf::BtfError),
    #[error(transparent)]
    CoRe(#[from] aya_obj::btf::BtfRelocationError),
    #[error(transparent)]
    Relocation(#[from] aya_obj::relocation::EbpfRelocationError),
    /// aya panicked on it (hostile input); the panic was caught.
    #[error("the object is malformed (the {0} gave up on it)")]
    Malformed(&'static str),
}

pub fn load_deploy_object(bytes: &[u8], pin_dir: &std::path::Path) -> Result<Ebpf, LoaderError> {
    let mut loader = loader(&DEPLOY_LOADER)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    loader.default_map_pin_directory(pin_dir);
    // The validator has parsed these bytes already, but the loader goes further (BTF fix-ups,
    // relocations) in code that can panic on hostile input: a panic is a refusal, never a
    // crash. Whatever it had created is dropped, so closed, during unwinding.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        with_btf(&mut loader, |l| l.load(bytes))
    })) {
        Ok(loaded) => loaded.map_err(LoaderError::from),
        Err(_) => Err(LoaderError::Malformed("loader")),
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
pub fn link_as_loader(obj: &aya_obj::Object) -> Result<aya_obj::Object, LoaderError> {
    // The linker panics on some hostile relocations: that is a refusal, not a crash.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| link_inner(obj)))
        .unwrap_or_else(|_| Err(LoaderError::Malformed("linker")))
}

fn link_inner(obj: &aya_obj::Object) -> Result<aya_obj::Object, LoaderError> {
    use std::collections::HashSet;
    let mut linked = obj.clone();
    if let Some(features) = aya::features().btf() {
        linked.fixup_and_sanitize_btf(features)?;
    }
    if let Ok(btf) = vmlinux() {
        linked.relocate_btf(&btf)?;
    }
    let text_sections: HashSet<usize> = linked.functions.keys().map(|(s, _)| *s).collect();
    let maps: Vec<(String, aya_obj::Map)> = linked
        .maps
        .iter()
        .map(|(n, m)| (n.clone(), m.clone()))
        .collect();
    linked.relocate_maps(
        maps.iter().map(|(n, m)| (n.as_str(), i32::MAX, m)),
        &text_sections,
    )?;
    linked.relocate_calls(&text_sections)?;
    Ok(linked)
}
