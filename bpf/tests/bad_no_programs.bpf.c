// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* Refused: maps but no program. */
#include "common.h"

COUNTER(lonely);
