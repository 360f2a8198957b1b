// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: kernel objects named by numbers the object encodes itself, with no relocation
 * for the loader to resolve. The kernel would look a map fd up in the loading process's
 * descriptor table (the server's: its deployments' and trace sessions' maps), a BTF id in
 * its own BTF. One program per encoding. */
#include "common.h"
#include "insn.h"

SEC("tracepoint/syscalls/sys_enter_getpid")
int raw_map_fd(void *ctx)
{
	/* r1 = map of fd 3; then bpf_map_update_elem(r1, &key, &value, 0) */
	asm volatile(
		RAW_LD_IMM64(1, 1, 3)
		"r2 = r10\n"
		"r2 += -8\n"
		"r3 = 0\n"
		"*(u64 *)(r10 - 8) = r3\n"
		"r3 = r10\n"
		"r3 += -8\n"
		"r4 = 0\n"
		"call 2\n"
		::: "r0", "r1", "r2", "r3", "r4", "r5");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int raw_map_value(void *ctx)
{
	asm volatile(RAW_LD_IMM64(1, 2, 4) ::: "r1");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_gettid")
int raw_btf_id(void *ctx)
{
	asm volatile(RAW_LD_IMM64(1, 3, 1) ::: "r1");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getuid")
int raw_func(void *ctx)
{
	asm volatile(RAW_LD_IMM64(1, 4, 1) ::: "r1");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_geteuid")
int raw_map_idx(void *ctx)
{
	asm volatile(RAW_LD_IMM64(1, 5, 0) RAW_LD_IMM64(2, 6, 0) ::: "r1", "r2");
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getgid")
int raw_kfunc(void *ctx)
{
	asm volatile(RAW_CALL(2, 1) ::: "r0", "r1", "r2", "r3", "r4", "r5");
	return 0;
}
