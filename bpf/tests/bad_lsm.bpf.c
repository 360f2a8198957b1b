// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: an LSM hook decides whether files may be opened. */
#include "common.h"

SEC("lsm/file_open")
int deny_open(u64 *ctx)
{
	return -1;
}
