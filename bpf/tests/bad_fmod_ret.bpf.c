// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: fmod_ret replaces a kernel function's return value. */
#include "common.h"

SEC("fmod_ret/security_file_open")
int deny_opens(u64 *ctx)
{
	return -1;
}
