//! Reading any map on the system: open it (by id, name or pin), fetch its BTF, and walk its
//! entries with BPF_MAP_LOOKUP_BATCH (a few syscalls per thousand entries), falling back to
//! get_next_key + lookup for map types or kernels without batch support. Entries are handed
//! to a callback chunk by chunk, so a caller can keep only what it needs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use super::bpf::{self, Object};
use super::btf_reader::Btf;
use super::inventory::{self, MapRecord};
use super::sys::SyscallError;

/// Map types whose entries are key/value pairs this module can walk.
pub fn dumpable(map_type: &str) -> bool {
    matches!(
        map_type,
        "hash"
            | "array"
            | "percpu_hash"
            | "percpu_array"
            | "lru_hash"
            | "lru_percpu_hash"
            | "lpm_trie"
            | "hash_of_maps"
            | "array_of_maps"
            | "devmap"
            | "devmap_hash"
            | "cpumap"
            | "stack_trace"
            | "cgroup_array"
    )
}

pub fn per_cpu(map_type: &str) -> bool {
    matches!(map_type, "percpu_hash" | "percpu_array" | "lru_percpu_hash")
}

/// Number of possible CPUs (the per-CPU value count), from /sys.
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap_or_default();
    let mut n = 0;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
            n = n.max(b + 1).max(a + 1);
        }
    }
    n.max(1)
}

/// An open map with what is needed to read and decode it.
#[derive(Debug)]
pub struct OpenMap {
    pub record: MapRecord,
    pub fd: OwnedFd,
    pub btf: Option<Btf>,
    /// Bytes of one value as the kernel copies it out: per-CPU maps give one 8-byte-aligned
    /// slot per possible CPU.
    pub value_stride: usize,
    pub cpus: usize,
}

impl OpenMap {
    pub fn by_id(id: u32) -> Result<Self, SyscallError> {
        let (record, fd) = inventory::read_map(id)?;
        Ok(Self::with(record, fd))
    }

    pub fn by_pin(path: &Path) -> Result<Self, SyscallError> {
        let fd = bpf::obj_get(path)?;
        let record = inventory::read_map_fd(&fd)?;
        Ok(Self::with(record, fd))
    }

    /// A map this process already holds (a gadget's).
    pub fn from_fd(fd: OwnedFd) -> Result<Self, SyscallError> {
        let record = inventory::read_map_fd(&fd)?;
        Ok(Self::with(record, fd))
    }

    fn with(record: MapRecord, fd: OwnedFd) -> Self {
        let btf = (record.btf_id != 0)
            .then(|| {
                let fd = bpf::fd_by_id(Object::Btf, record.btf_id).ok()?;
                Btf::parse(bpf::btf_bytes(fd.as_fd()).ok()?).ok()
            })
            .flatten();
        let cpus = possible_cpus();
        let value_stride = if per_cpu(&record.map_type) {
            (record.value_size as usize).div_ceil(8) * 8 * cpus
        } else {
            record.value_size as usize
        };
        Self {
            record,
            fd,
            btf,
            value_stride,
            cpus,
        }
    }

    pub fn key_size(&self) -> usize {
        self.record.key_size as usize
    }

    /// The value of one CPU inside a per-CPU value (the whole value otherwise).
    pub fn cpu_slice<'a>(&self, value: &'a [u8], cpu: usize) -> &'a [u8] {
        let one = (self.record.value_size as usize).div_ceil(8) * 8;
        let start = cpu * one;
        value
            .get(start..start + self.record.value_size as usize)
            .unwrap_or(&[])
    }

    /// Calls `each(keys, values, count)` for every chunk of entries, in the kernel's order.
    /// `keys` holds `count` keys of `key_size` bytes, `values` `count` values of
    /// `value_stride` bytes. Stops early when `each` returns false.
    ///
    /// Reading and handling overlap: a second thread issues the batch reads (kernel time)
    /// while `each` works on the previous chunk (user time), with two chunks in flight.
    pub fn scan(
        &self,
        mut each: impl FnMut(&[u8], &[u8], usize) -> bool,
    ) -> Result<ScanStats, SyscallError> {
        use std::sync::mpsc;
        const CHUNK: usize = 4096;
        let ks = self.key_size();
        let vs = self.value_stride;
        // The batch position token is at least one key wide (u32 for arrays and hashes).
        let token_size = ks.max(8);
        enum Msg {
            Chunk(Vec<u8>, Vec<u8>, usize),
            /// The kernel does not do batch reads for this map.
            Unsupported,
        }
        let mut stats = ScanStats::default();
        let mut unsupported = false;
        let read_result = std::thread::scope(|scope| {
            let (tx, rx) = mpsc::sync_channel::<Msg>(2);
            let (spare_tx, spare_rx) = mpsc::channel::<(Vec<u8>, Vec<u8>)>();
            let fd = self.fd.as_fd();
            let reader = scope.spawn(move || -> Result<u64, SyscallError> {
                let mut token = Vec::new();
                let mut calls = 0u64;
                loop {
                    let (mut keys, mut values) = spare_rx
                        .try_recv()
                        .unwrap_or_else(|_| (vec![0u8; ks * CHUNK], vec![0u8; vs * CHUNK]));
                    match bpf::lookup_batch(
                        fd,
                        &mut token,
                        token_size,
                        &mut keys,
                        &mut values,
                        CHUNK as u32,
                    ) {
                        Ok((n, done)) => {
                            calls += 1;
                            // The consumer stopped early: nothing more to read.
                            if n > 0 && tx.send(Msg::Chunk(keys, values, n as usize)).is_err() {
                                return Ok(calls);
                            }
                            if done {
                                return Ok(calls);
                            }
                        }
                        Err(e)
                            if calls == 0
                                && matches!(
                                    e.errno(),
                                    Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(524)
                                ) =>
                        {
                            let _ = tx.send(Msg::Unsupported);
                            return Ok(0);
                        }
                        Err(e) => return Err(e),
                    }
                }
            });
            for msg in rx.iter() {
                match msg {
                    Msg::Chunk(keys, values, n) => {
                        stats.entries += n as u64;
                        if !each(&keys[..n * ks], &values[..n * vs], n) {
                            break;
                        }
                        let _ = spare_tx.send((keys, values));
                    }
                    Msg::Unsupported => unsupported = true,
                }
            }
            drop(rx);
            reader.join().unwrap_or_else(|_| {
                Err(SyscallError {
                    call: "BPF_MAP_LOOKUP_BATCH",
                    source: std::io::Error::other("the map reader thread panicked"),
                })
            })
        });
        stats.batch_calls = read_result?;
        if unsupported {
            stats.fallback = true;
            return self.scan_one_by_one(each, stats);
        }
        Ok(stats)
    }

    /// The fallback walk: BPF_MAP_GET_NEXT_KEY and a lookup per entry (two syscalls each).
    pub fn scan_one_by_one(
        &self,
        mut each: impl FnMut(&[u8], &[u8], usize) -> bool,
        mut stats: ScanStats,
    ) -> Result<ScanStats, SyscallError> {
        let ks = self.key_size();
        let mut key = vec![0u8; ks];
        let mut next = vec![0u8; ks];
        let mut value = vec![0u8; self.value_stride];
        let mut first = true;
        loop {
            let more = bpf::next_key(
                self.fd.as_fd(),
                (!first).then_some(key.as_slice()),
                &mut next,
            )?;
            if !more {
                return Ok(stats);
            }
            first = false;
            std::mem::swap(&mut key, &mut next);
            // A key deleted between the two calls is simply skipped.
            if bpf::lookup(self.fd.as_fd(), &key, &mut value)? {
                stats.entries += 1;
                if !each(&key, &value, 1) {
                    return Ok(stats);
                }
            }
        }
    }

    /// One entry by key.
    pub fn lookup(&self, key: &[u8]) -> Result<Option<Vec<u8>>, SyscallError> {
        let mut value = vec![0u8; self.value_stride];
        Ok(bpf::lookup(self.fd.as_fd(), key, &mut value)?.then_some(value))
    }
}

/// How a scan went.
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub entries: u64,
    pub batch_calls: u64,
    /// The kernel refused batch reads for this map; entries were read one by one.
    pub fallback: bool,
}
