// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: kills whoever calls getpid(). */
#include "common.h"

SEC("tracepoint/syscalls/sys_enter_getpid")
int kill_caller(void *ctx)
{
	bpf_send_signal(9);
	return 0;
}
