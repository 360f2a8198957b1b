//! Map reading against the real kernel, below the tools: the batch walk and the one-by-one
//! fallback see exactly the same entries, and the decoder agrees with the bytes written.

use std::collections::BTreeSet;

use aya::maps::HashMap;
use ebpf_mcp::ebpf::maps::{OpenMap, ScanStats};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/obj/fixtures.bpf.o");

/// Tests that load BPF need root. They are `#[ignore = "needs root"]`, so a plain
/// `cargo test` lists them as ignored; scripts/test runs them with `--include-ignored`.
/// Run without root, they fail here with the reason rather than deep inside.
fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root (CAP_BPF, CAP_PERFMON): run the tests as root (scripts/test)"
    );
}

#[test]
#[ignore = "needs root"]
fn batch_and_one_by_one_walks_agree() {
    require_root();
    let n = 5000u32;
    let mut ebpf = aya::EbpfLoader::new()
        .map_max_entries("fixture_big", n)
        .load(OBJECT)
        .expect("load fixtures");
    let map = ebpf.map_mut("fixture_big").unwrap();
    let id = match &*map {
        aya::maps::Map::HashMap(d) => d.info().unwrap().id(),
        _ => unreachable!(),
    };
    let mut big: HashMap<_, u32, [u64; 2]> = HashMap::try_from(map).unwrap();
    for k in 0..n {
        big.insert(k, [u64::from(k), u64::from(k) * 3], 0).unwrap();
    }
    let open = OpenMap::by_id(id).unwrap();
    let collect = |batch: bool| {
        let mut seen = BTreeSet::new();
        let each = |keys: &[u8], values: &[u8], count: usize| {
            for i in 0..count {
                let k = u32::from_le_bytes(keys[i * 4..i * 4 + 4].try_into().unwrap());
                let v = &values[i * 16..i * 16 + 16];
                let packets = u64::from_le_bytes(v[..8].try_into().unwrap());
                let bytes = u64::from_le_bytes(v[8..].try_into().unwrap());
                assert_eq!((packets, bytes), (u64::from(k), u64::from(k) * 3));
                assert!(seen.insert(k), "key {k} seen twice");
            }
            true
        };
        let stats = if batch {
            open.scan(each).unwrap()
        } else {
            open.scan_one_by_one(each, ScanStats::default()).unwrap()
        };
        assert_eq!(stats.entries, u64::from(n));
        if batch {
            assert!(!stats.fallback && stats.batch_calls >= 2, "{stats:?}");
        }
        seen
    };
    let by_batch = collect(true);
    assert_eq!(by_batch, collect(false));
    assert_eq!(by_batch, (0..n).collect());

    // The decoder, through the map's own BTF.
    let btf = open.btf.as_ref().expect("the fixture map has BTF");
    let value = open.lookup(&7u32.to_le_bytes()).unwrap().unwrap();
    assert_eq!(
        btf.decode(open.record.btf_value_type_id, &value),
        serde_json::json!({"packets": 7, "bytes": 21})
    );
    assert_eq!(
        btf.type_name(open.record.btf_value_type_id),
        "struct counter"
    );
}
