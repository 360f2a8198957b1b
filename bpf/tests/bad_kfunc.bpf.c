// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: a kfunc called by name and a kernel variable read as a typed ksym; neither has
 * anything in the object to resolve to. */
#include "common.h"

extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;
extern const int bpf_prog_active __ksym;

SEC("tracepoint/syscalls/sys_enter_getpid")
int call_kfunc(void *ctx)
{
	bpf_rcu_read_lock();
	bpf_rcu_read_unlock();
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int read_ksym(void *ctx)
{
	return *(volatile const int *)&bpf_prog_active;
}
