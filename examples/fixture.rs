//! Test and benchmark fixture (not part of the server): loads bpf/obj/fixtures.bpf.o, fills
//! its maps with known values, attaches its getppid counter, prints one JSON line with the
//! ids, and holds everything until stdin closes; then all of it is released.
//!
//!     cargo run --example fixture -- [--big N] [--programs M]
//!
//! N: entries in fixture_big (default 5000). M: extra copies of the object whose program is
//! loaded but not attached (default 0), to measure listing on a host with many programs.

use std::io::{Read, Write};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::TracePoint;
use aya::util::nr_cpus;
use aya::{Ebpf, EbpfLoader, Pod};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/obj/fixtures.bpf.o");

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlowKey {
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
    proto: u8,
    pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlowStats {
    packets: u64,
    bytes: u64,
    state: u32,
    ifname: [u8; 16],
    hist: [u32; 4],
    range_lo: u16,
    range_hi: u16,
    /// bit 0: sampled, bits 1-3: level (C bitfields in the byte at offset 56).
    bits: u8,
    /// `_Bool active` follows the bitfields' byte at once.
    active: u8,
    pad: [u8; 6],
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Counter {
    packets: u64,
    bytes: u64,
}

// SAFETY: plain #[repr(C)] structs of integers with explicit padding fields, so every byte
// is initialized and any bit pattern is valid.
unsafe impl Pod for FlowKey {}
// SAFETY: as above.
unsafe impl Pod for FlowStats {}
// SAFETY: as above.
unsafe impl Pod for Counter {}

fn name16(s: &str) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..s.len()].copy_from_slice(s.as_bytes());
    a
}

fn stats(packets: u64, state: u32, ifname: &str, sampled: bool, level: u8) -> FlowStats {
    FlowStats {
        packets,
        bytes: packets * 1500,
        state,
        ifname: name16(ifname),
        hist: [1, 2, 3, packets as u32],
        range_lo: 1024,
        range_hi: 65535,
        bits: u8::from(sampled) | (level << 1),
        active: u8::from(packets % 2 == 1),
        pad: [0; 6],
    }
}

fn data(map: &Map) -> &MapData {
    match map {
        Map::Array(d)
        | Map::HashMap(d)
        | Map::PerCpuHashMap(d)
        | Map::LruHashMap(d)
        | Map::LpmTrie(d)
        | Map::RingBuf(d) => d,
        other => panic!("unexpected map type in the fixture: {other:?}"),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let number = |flag: &str, default: u32| -> Result<u32, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == flag) {
            Some(i) => Ok(args
                .get(i + 1)
                .ok_or(format!("{flag} needs a number"))?
                .parse()?),
            None => Ok(default),
        }
    };
    let big = number("--big", 5000)?;
    let copies = number("--programs", 0)?;
    let mut ebpf: Ebpf = EbpfLoader::new()
        .map_max_entries("fixture_big", big.max(1))
        .load(OBJECT)?;

    let mut flows: HashMap<_, FlowKey, FlowStats> =
        HashMap::try_from(ebpf.map_mut("fixture_flows").ok_or("no fixture_flows")?)?;
    let key = |s: u32, sport: u16| FlowKey {
        saddr: s,
        daddr: 0x0a00_0001,
        sport,
        dport: 443,
        proto: 6,
        pad: [0; 3],
    };
    flows.insert(key(0x0a00_0002, 40000), stats(10, 1, "eth0", true, 5), 0)?;
    flows.insert(key(0x0a00_0003, 40001), stats(3, 0, "veth-a", false, 0), 0)?;
    flows.insert(key(0x0a00_0004, 40002), stats(7, 7, "lo", true, 7), 0)?;

    let mut slots: Array<_, FlowStats> =
        Array::try_from(ebpf.map_mut("fixture_slots").ok_or("no fixture_slots")?)?;
    slots.set(1, stats(42, 1, "bond0", false, 2), 0)?;
    slots.set(5, stats(5, 7, "", true, 1), 0)?;

    let cpus = nr_cpus().map_err(|(what, e)| format!("{what}: {e}"))?;
    let mut percpu: PerCpuHashMap<_, u32, Counter> =
        PerCpuHashMap::try_from(ebpf.map_mut("fixture_percpu").ok_or("no fixture_percpu")?)?;
    let values: Vec<Counter> = (0..cpus as u64)
        .map(|c| Counter {
            packets: (c + 1) * 10,
            bytes: (c + 1) * 100,
        })
        .collect();
    percpu.insert(1, PerCpuValues::try_from(values)?, 0)?;

    let mut by_comm: HashMap<_, [u8; 16], u64> = HashMap::try_from(
        ebpf.map_mut("fixture_by_comm")
            .ok_or("no fixture_by_comm")?,
    )?;
    by_comm.insert(name16("bash"), 12, 0)?;
    by_comm.insert(name16("sshd"), 3, 0)?;

    let mut lpm: LpmTrie<_, [u8; 4], u32> =
        LpmTrie::try_from(ebpf.map_mut("fixture_lpm").ok_or("no fixture_lpm")?)?;
    lpm.insert(&Key::new(8, [10, 0, 0, 0]), 1, 0)?;
    lpm.insert(&Key::new(24, [192, 168, 1, 0]), 2, 0)?;

    let mut big_map: HashMap<_, u32, Counter> =
        HashMap::try_from(ebpf.map_mut("fixture_big").ok_or("no fixture_big")?)?;
    for i in 0..big {
        // Distinct byte counts in a scrambled order, so a top-N has one right answer.
        let bytes = u64::from(i).wrapping_mul(2_654_435_761) % 1_000_000_007;
        big_map.insert(
            i,
            Counter {
                packets: u64::from(i),
                bytes,
            },
            0,
        )?;
    }

    let prog: &mut TracePoint = ebpf
        .program_mut("fixture_count_getppid")
        .ok_or("no fixture_count_getppid")?
        .try_into()?;
    prog.load()?;
    prog.attach("syscalls", "sys_enter_getppid")?;
    let prog_id = prog.info()?.id();

    let mut extra = Vec::new();
    for _ in 0..copies {
        let mut copy = EbpfLoader::new().load(OBJECT)?;
        let p: &mut TracePoint = copy
            .program_mut("fixture_count_getppid")
            .ok_or("no fixture_count_getppid")?
            .try_into()?;
        p.load()?;
        extra.push(copy);
    }

    let mut maps = serde_json::Map::new();
    for (name, map) in ebpf.maps() {
        maps.insert(name.to_owned(), serde_json::json!(data(map).info()?.id()));
    }
    let line = serde_json::json!({
        "pid": std::process::id(),
        "cpus": cpus,
        "big": big,
        "maps": maps,
        "programs": {"fixture_count_getppid": prog_id},
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);

    // Hold everything until the test closes our stdin.
    let mut sink = Vec::new();
    std::io::stdin().read_to_end(&mut sink)?;
    drop(extra);
    Ok(())
}
