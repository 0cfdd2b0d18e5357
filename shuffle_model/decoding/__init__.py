"""Decoding: the loop (propose -> plan -> forward -> verify), the draft sources, the shuffle
and the filter, the plan and the machine's cost curve, verification, sampling, settings and
the traces that record each step."""
