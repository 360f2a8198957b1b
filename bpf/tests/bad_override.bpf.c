// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused twice over: a kprobe (not an allowed type) that fakes a function's return value. */
#include "common.h"

struct pt_regs;

SEC("kprobe/do_sys_openat2")
int fake_error(struct pt_regs *ctx)
{
	bpf_override_return(ctx, -1);
	return 0;
}
