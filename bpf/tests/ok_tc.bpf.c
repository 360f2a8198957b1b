// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Benign: a TC classifier in libbpf's `tc` section that counts packets and passes them. */
#include "common.h"

#define TC_ACT_OK 0

COUNTER(tc_packets);

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
	bump(&tc_packets);
	return TC_ACT_OK;
}
