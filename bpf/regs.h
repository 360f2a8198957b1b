/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * The x86-64 argument and return registers, relocated against the running kernel's
 * struct pt_regs (CO-RE): on another architecture a program reading them does not load
 * rather than report the wrong registers.
 */
#ifndef EBPF_MCP_REGS_H
#define EBPF_MCP_REGS_H

struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long cx;
	unsigned long r8;
	unsigned long r9;
	unsigned long ax;
} __attribute__((preserve_access_index));

#endif
