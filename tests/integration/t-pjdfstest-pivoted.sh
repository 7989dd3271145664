#!/bin/bash
# t-pjdfstest-pivoted: pjdfstest, the POSIX conformance suite, through a
# mount that pivoted to its target (t-pjdfstest.sh with PJDFSTEST_PIVOT):
# it passes in full as on plain ext4, the daemon exits 0 with the result
# `pivoted`, and nothing of the suite reaches the old source.
PJDFSTEST_PIVOT=1 exec bash "$(dirname "$0")/t-pjdfstest.sh"
