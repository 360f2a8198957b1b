// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: writes into the memory of the process that made the syscall. */
#include "common.h"

struct syscall_enter {
	u64 common;
	long nr;
	u64 args[6];
};

SEC("tracepoint/syscalls/sys_enter_write")
int scribble(struct syscall_enter *ctx)
{
	char evil[4] = "pwn";

	bpf_probe_write_user((void *)ctx->args[1], evil, sizeof(evil));
	return 0;
}
