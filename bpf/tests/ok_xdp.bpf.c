// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Benign: counts packets and lets them through. */
#include "common.h"

COUNTER(xdp_packets);

SEC("xdp")
int count_packets(struct xdp_md *ctx)
{
	bump(&xdp_packets);
	return XDP_PASS;
}
