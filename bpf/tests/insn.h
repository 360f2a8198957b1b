/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* Raw BPF instructions for hostile test objects: what a compiler never emits, written out
 * byte for byte so the validator can be shown each encoding without a relocation. */
#ifndef EBPF_MCP_TEST_INSN_H
#define EBPF_MCP_TEST_INSN_H

#define INSN_STR(x) #x
#define INSN_XSTR(x) INSN_STR(x)

/* One 8-byte instruction: opcode, dst and src registers, offset, immediate. */
#define RAW_INSN(code, dst, src, off, imm)                                          \
	".byte " INSN_XSTR(code) ", (" INSN_XSTR(src) " << 4) | " INSN_XSTR(dst) "\n" \
	".short " INSN_XSTR(off) "\n"                                                  \
	".long " INSN_XSTR(imm) "\n"

/* dst = 64-bit immediate load with pseudo source `src` and immediate `imm`. */
#define RAW_LD_IMM64(dst, src, imm) RAW_INSN(0x18, dst, src, 0, imm) RAW_INSN(0, 0, 0, 0, 0)

/* A call with source `src` (0 helper, 1 subprogram, 2 kfunc) and immediate `imm`. */
#define RAW_CALL(src, imm) RAW_INSN(0x85, 0, src, 0, imm)

#endif
