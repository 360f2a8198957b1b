//! Translated BPF instructions as readable text, in the style of `bpftool prog dump xlated`
//! (`3: (85) call map_lookup_elem#1`).

use super::names;

const CLASS_LD: u8 = 0x00;
const CLASS_LDX: u8 = 0x01;
const CLASS_ST: u8 = 0x02;
const CLASS_STX: u8 = 0x03;
const CLASS_ALU: u8 = 0x04;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU64: u8 = 0x07;

fn size_suffix(code: u8) -> (&'static str, u32) {
    match code & 0x18 {
        0x00 => ("u32", 32),
        0x08 => ("u16", 16),
        0x10 => ("u8", 8),
        _ => ("u64", 64),
    }
}

fn alu_op(op: u8) -> &'static str {
    match op {
        0x00 => "+=",
        0x10 => "-=",
        0x20 => "*=",
        0x30 => "/=",
        0x40 => "|=",
        0x50 => "&=",
        0x60 => "<<=",
        0x70 => ">>=",
        0x90 => "%=",
        0xa0 => "^=",
        0xb0 => "=",
        0xc0 => "s>>=",
        _ => "?=",
    }
}

fn jmp_op(op: u8) -> &'static str {
    match op {
        0x10 => "==",
        0x20 => ">",
        0x30 => ">=",
        0x40 => "&",
        0x50 => "!=",
        0x60 => "s>",
        0x70 => "s>=",
        0xa0 => "<",
        0xb0 => "<=",
        0xc0 => "s<",
        0xd0 => "s<=",
        _ => "?",
    }
}

/// Helper-call immediates of the program (the kernel rewrites them to offsets from
/// `__bpf_call_base` in translated code), for resolving through kallsyms.
pub fn call_targets(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks_exact(8)
        .filter(|c| c[0] == 0x85 && c[1] >> 4 == 0)
        .map(|c| i32::from_le_bytes([c[4], c[5], c[6], c[7]]))
        .collect()
}

/// One instruction per line, at most `max` lines; `symbol` names a helper call's target
/// (a kernel function) when it can. Returns the lines and the number of instructions.
pub fn disassemble(
    bytes: &[u8],
    max: usize,
    symbol: impl Fn(i32) -> Option<String>,
) -> (Vec<String>, usize) {
    let insns: Vec<[u8; 8]> = bytes
        .chunks_exact(8)
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
        .collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < insns.len() && out.len() < max {
        let b = insns[i];
        let code = b[0];
        let dst = b[1] & 0x0f;
        let src = b[1] >> 4;
        let off = i16::from_le_bytes([b[2], b[3]]);
        let imm = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        let class = code & 0x07;
        let op = code & 0xf0;
        let reg_src = code & 0x08 != 0;
        let text = match class {
            CLASS_ALU | CLASS_ALU64 => {
                let w = if class == CLASS_ALU { "w" } else { "r" };
                if op == 0x80 {
                    format!("{w}{dst} = -{w}{dst}")
                } else if op == 0xd0 {
                    let kind = if reg_src { "be" } else { "le" };
                    format!("r{dst} = {kind}{imm} r{dst}")
                } else if reg_src {
                    format!("{w}{dst} {} {w}{src}", alu_op(op))
                } else {
                    format!("{w}{dst} {} {imm}", alu_op(op))
                }
            }
            CLASS_JMP | CLASS_JMP32 => {
                let w = if class == CLASS_JMP32 { "w" } else { "r" };
                match op {
                    0x00 => format!("goto pc{off:+}"),
                    0x80 if src == 1 => format!("call pc{imm:+}"),
                    0x80 if src == 2 => format!("call kfunc#{imm}"),
                    0x80 => match symbol(imm).or_else(|| names::helper(imm)) {
                        Some(name) => format!("call {name}#{imm}"),
                        None => format!("call #{imm}"),
                    },
                    0x90 => "exit".to_owned(),
                    _ if reg_src => format!("if {w}{dst} {} {w}{src} goto pc{off:+}", jmp_op(op)),
                    _ => format!("if {w}{dst} {} {imm:#x} goto pc{off:+}", jmp_op(op)),
                }
            }
            CLASS_LDX => {
                let (ty, _) = size_suffix(code);
                format!("r{dst} = *({ty} *)(r{src} {off:+})")
            }
            CLASS_STX if code & 0xe0 == 0xc0 => {
                let (ty, _) = size_suffix(code);
                format!("lock *({ty} *)(r{dst} {off:+}) op{imm:#x}= r{src}")
            }
            CLASS_STX => {
                let (ty, _) = size_suffix(code);
                format!("*({ty} *)(r{dst} {off:+}) = r{src}")
            }
            CLASS_ST => {
                let (ty, _) = size_suffix(code);
                format!("*({ty} *)(r{dst} {off:+}) = {imm}")
            }
            CLASS_LD if code == 0x18 && i + 1 < insns.len() => {
                let hi = i32::from_le_bytes([
                    insns[i + 1][4],
                    insns[i + 1][5],
                    insns[i + 1][6],
                    insns[i + 1][7],
                ]);
                let value = (u64::from(hi as u32) << 32) | u64::from(imm as u32);
                // Translated code carries map ids where the program had map fds.
                let line = match src {
                    1 | 5 => format!("r{dst} = map[id:{imm}]"),
                    2 | 6 => format!("r{dst} = map[id:{imm}][0]+{hi}"),
                    _ => format!("r{dst} = {value:#x}"),
                };
                out.push(format!("{i}: ({code:02x}) {line}"));
                i += 2;
                continue;
            }
            _ => format!("(unknown {code:#04x})"),
        };
        out.push(format!("{i}: ({code:02x}) {text}"));
        i += 1;
    }
    (out, insns.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Vec<u8> {
        let mut v = vec![code, dst | (src << 4)];
        v.extend_from_slice(&off.to_le_bytes());
        v.extend_from_slice(&imm.to_le_bytes());
        v
    }

    #[test]
    fn disassembles_like_bpftool() {
        let mut prog = Vec::new();
        prog.extend(insn(0xb7, 0, 0, 0, 0)); // r0 = 0
        prog.extend(insn(0x85, 0, 0, 0, 1)); // call map_lookup_elem
        prog.extend(insn(0x15, 0, 0, 2, 0)); // if r0 == 0x0 goto pc+2
        prog.extend(insn(0x79, 1, 0, 8, 0)); // r1 = *(u64 *)(r0 +8)
        prog.extend(insn(0x18, 2, 0, 0, 5)); // r2 = 0x5 (two slots)
        prog.extend(insn(0x00, 0, 0, 0, 0));
        prog.extend(insn(0x95, 0, 0, 0, 0)); // exit
        let (lines, n) = disassemble(&prog, 100, |_| None);
        assert_eq!(n, 7);
        assert_eq!(
            lines,
            [
                "0: (b7) r0 = 0",
                "1: (85) call map_lookup_elem#1",
                "2: (15) if r0 == 0x0 goto pc+2",
                "3: (79) r1 = *(u64 *)(r0 +8)",
                "4: (18) r2 = 0x5",
                "6: (95) exit",
            ]
        );
        assert_eq!(disassemble(&prog, 2, |_| None).0.len(), 2);
        let named = disassemble(&prog, 2, |imm| (imm == 1).then(|| "htab_lookup".to_owned())).0;
        assert_eq!(named[1], "1: (85) call htab_lookup#1");
        assert_eq!(call_targets(&prog), [1]);
    }

    #[test]
    fn every_operator_and_class_reads_back() {
        let one = |code: u8, dst: u8, src: u8, off: i16, imm: i32| {
            let (lines, _) = disassemble(&insn(code, dst, src, off, imm), 1, |_| None);
            lines[0].split_once(") ").unwrap().1.to_owned()
        };
        // ALU (64 and 32 bits, immediate and register), negation, byte swaps.
        for (op, text) in [
            (0x00, "+="),
            (0x10, "-="),
            (0x20, "*="),
            (0x30, "/="),
            (0x40, "|="),
            (0x50, "&="),
            (0x60, "<<="),
            (0x70, ">>="),
            (0x90, "%="),
            (0xa0, "^="),
            (0xb0, "="),
            (0xc0, "s>>="),
            (0xe0, "?="),
        ] {
            assert_eq!(one(0x07 | op, 1, 0, 0, 3), format!("r1 {text} 3"));
            assert_eq!(one(0x0c | op, 1, 2, 0, 0), format!("w1 {text} w2"));
        }
        assert_eq!(one(0x87, 3, 0, 0, 0), "r3 = -r3");
        assert_eq!(one(0xd4, 1, 0, 0, 16), "r1 = le16 r1");
        assert_eq!(one(0xdc, 1, 0, 0, 32), "r1 = be32 r1");
        // Jumps: every comparison, immediate and register, 32-bit too.
        for (op, text) in [
            (0x10, "=="),
            (0x20, ">"),
            (0x30, ">="),
            (0x40, "&"),
            (0x50, "!="),
            (0x60, "s>"),
            (0x70, "s>="),
            (0xa0, "<"),
            (0xb0, "<="),
            (0xc0, "s<"),
            (0xd0, "s<="),
            (0xe0, "?"),
        ] {
            assert_eq!(
                one(0x05 | op, 1, 0, -2, 7),
                format!("if r1 {text} 0x7 goto pc-2")
            );
            assert_eq!(
                one(0x0e | op, 1, 2, 3, 0),
                format!("if w1 {text} w2 goto pc+3")
            );
        }
        assert_eq!(one(0x05, 0, 0, 4, 0), "goto pc+4");
        assert_eq!(one(0x85, 0, 1, 0, 9), "call pc+9");
        assert_eq!(one(0x85, 0, 2, 0, 77), "call kfunc#77");
        assert_eq!(one(0x85, 0, 0, 0, 100_000), "call #100000");
        // Loads and stores of every size, atomics, immediates to memory.
        assert_eq!(one(0x61, 1, 2, 4, 0), "r1 = *(u32 *)(r2 +4)");
        assert_eq!(one(0x69, 1, 2, 4, 0), "r1 = *(u16 *)(r2 +4)");
        assert_eq!(one(0x71, 1, 2, -4, 0), "r1 = *(u8 *)(r2 -4)");
        assert_eq!(one(0x7b, 10, 1, -8, 0), "*(u64 *)(r10 -8) = r1");
        assert_eq!(one(0xdb, 1, 2, 0, 1), "lock *(u64 *)(r1 +0) op0x1= r2");
        assert_eq!(one(0x62, 10, 0, -4, 5), "*(u32 *)(r10 -4) = 5");
        assert_eq!(one(0x20, 0, 0, 0, 0), "(unknown 0x20)");
        // 64-bit loads of map references (ids in translated code).
        let mut ld = insn(0x18, 1, 1, 0, 12);
        ld.extend(insn(0, 0, 0, 0, 0));
        assert_eq!(disassemble(&ld, 5, |_| None).0, ["0: (18) r1 = map[id:12]"]);
        let mut value = insn(0x18, 2, 2, 0, 12);
        value.extend(insn(0, 0, 0, 0, 16));
        assert_eq!(
            disassemble(&value, 5, |_| None).0,
            ["0: (18) r2 = map[id:12][0]+16"]
        );
    }
}
