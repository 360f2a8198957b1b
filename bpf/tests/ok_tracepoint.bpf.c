// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Benign: counts getpid() calls. */
#include "common.h"

COUNTER(getpid_calls);

SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx)
{
	bump(&getpid_calls);
	return 0;
}
