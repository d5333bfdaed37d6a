#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The README's first command, `./dev.sh demo`, as make check runs it:
tests/demo/run-demo against this test's Dovecot must end with status 0,
say that the three answers (cold, warm, direct) are identical and that
the second FETCH was answered from the cache (under 1% of the first's
upstream bytes). run-demo exits non-zero when either is not so."""
import os
import subprocess
import sys

from checks import check, summary
from proxyfixture import BUILD, ENV

RUN_TIMEOUT = 300  # seconds: a build machine under load, the corpus's first open cold


def main():
    demo = os.path.join(ENV.get("top_srcdir", "."), "tests", "demo", "run-demo")
    result = subprocess.run([sys.executable, demo, BUILD], capture_output=True, text=True, timeout=RUN_TIMEOUT)
    out = result.stdout
    check("run-demo exits 0", result.returncode == 0, out[-2000:] + result.stderr[-2000:])
    check("its three answers are identical", "the three answers are identical" in out, out[-1000:])
    check("its second FETCH was answered from the cache",
          "the second FETCH was answered from the cache" in out, out[-1000:])
    return summary()


if __name__ == "__main__":
    sys.exit(main())
