"""Runs a command and writes the CPU it used (its own and its waited-for children's) as JSON:
{"cpu_s": user+system seconds, "user_s", "sys_s", "max_rss_kb"}. scripts/bench.sh uses it for
the load generator, which has exited (and left /proc) before the script could read its times.
Exits with the command's exit code.   Usage: python3 rusage.py OUT.json COMMAND [ARG...]"""
import json
import os
import subprocess
import sys

out, cmd = sys.argv[1], sys.argv[2:]
proc = subprocess.Popen(cmd)
_, status, ru = os.wait4(proc.pid, 0)
proc.returncode = os.waitstatus_to_exitcode(status)
with open(out, "w") as f:
    json.dump({"cpu_s": ru.ru_utime + ru.ru_stime, "user_s": ru.ru_utime, "sys_s": ru.ru_stime,
               "max_rss_kb": ru.ru_maxrss}, f)
code = proc.returncode
sys.exit(code if code >= 0 else 128 - code)
