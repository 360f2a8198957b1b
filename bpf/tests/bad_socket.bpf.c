// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused by the default allowed_types: a socket filter. */
#include "common.h"

SEC("socket")
int take_all(struct __sk_buff *skb)
{
	return skb->len;
}
