// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Benign: counts calls of a user-space function (the target comes with the deploy call). */
#include "common.h"

COUNTER(calls);

SEC("uprobe")
int count_calls(void *ctx)
{
	bump(&calls);
	return 0;
}
