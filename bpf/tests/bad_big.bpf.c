// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: over the default limit of 4096 instructions (about 3 per step, 2000 steps). */
#include "common.h"

SEC("tracepoint/syscalls/sys_enter_getpid")
int long_one(void *ctx)
{
	volatile u64 x = 0;

#pragma clang loop unroll(full)
	for (int i = 0; i < 2000; i++)
		x += i;
	return x & 1;
}
