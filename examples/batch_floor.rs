//! Benchmark floor for map_dump: read every entry of a map with BPF_MAP_LOOKUP_BATCH and
//! print `key packets bytes` as numbers, nothing else (no BTF, no JSON). Expects a u32 key
//! and a value starting with two u64s, like the fixture's `fixture_big`.
//!
//!     cargo run --release --example batch_floor -- MAP_ID > /dev/null

use std::io::Write;
use std::os::fd::AsFd;

use ebpf_mcp::ebpf::bpf::{self, Object};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id: u32 = std::env::args()
        .nth(1)
        .ok_or("usage: batch_floor MAP_ID")?
        .parse()?;
    let fd = bpf::fd_by_id(Object::Map, id)?;
    let info = bpf::map_info(fd.as_fd())?;
    let (ks, vs) = (info.key_size as usize, info.value_size as usize);
    const CHUNK: usize = 4096;
    let mut keys = vec![0u8; ks * CHUNK];
    let mut values = vec![0u8; vs * CHUNK];
    let mut token = Vec::new();
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out.lock());
    loop {
        let (n, done) = bpf::lookup_batch(
            fd.as_fd(),
            &mut token,
            ks.max(8),
            &mut keys,
            &mut values,
            CHUNK as u32,
        )?;
        for i in 0..n as usize {
            let k = u32::from_le_bytes(keys[i * ks..i * ks + 4].try_into()?);
            let v = &values[i * vs..];
            let packets = u64::from_le_bytes(v[..8].try_into()?);
            let bytes = u64::from_le_bytes(v[8..16].try_into()?);
            writeln!(out, "{k} {packets} {bytes}")?;
        }
        if done {
            break;
        }
    }
    out.flush()?;
    Ok(())
}
