#!/usr/bin/env python3
"""perfsplit: where a proxy's CPU goes, from a perf profile with call stacks.

    perf script -i FILE.perf | bench/perfsplit.py

bench/proxy.sh's PROFILE=DIR records one such profile per vmesh path.
Each sample is charged to one component, the innermost frame of its stack
that belongs to one (net, bufio, textproto and the proxy's
net.Conn wrappers count for their caller) (the proxy's own code, httputil.ReverseProxy,
net/http's server or Transport, HTTP/2, crypto/tls, the Go runtime), and
to one activity (a system call, a heap allocation, the GC, the scheduler,
or computing). It prints both splits in % of the samples, as Markdown.
"""
import re
import sys
from collections import Counter

COMPONENTS = [  # (name, frame pattern), tried on each frame from the leaf up
    ("crypto/tls (records, handshakes, their I/O)", re.compile(r"^crypto/")),
    ("vmesh proxy code", re.compile(r"^github\.com/vmesh/vmesh/")),
    ("httputil.ReverseProxy", re.compile(r"^net/http/httputil\.")),
    ("HTTP/2 (x/net, net/http h2)", re.compile(r"^(golang\.org/x/net/http2|net/http\.http2|net/http\.\(\*http2)")),
    ("net/http Transport (client)", re.compile(r"^net/http\.(\(\*persistConn\)|\(\*Transport\)|persistConn|\(\*bodyEOFSignal\)|\(\*transferWriter\)|\(\*Request\)\.write)")),
    ("net/http server", re.compile(r"^net/http\.")),
]
# Charged only when no frame above has a component: the I/O layers
# belong to whoever called them.
# So do the proxy's net.Conn wrappers (edgeConn, countingConn, ...).
IO_LAYER = ("net, bufio, textproto (no caller above)", re.compile(r"^(net\.|bufio\.|net/textproto\.|internal/poll\.)"))
CONN_WRAPPER = re.compile(r"^github\.com/vmesh/vmesh/.*\.\(\*\w*[cC]onn\)\.(Read|Write|Close)$")
ACTIVITIES = [  # (name, frame pattern), any frame of the stack
    ("system calls and the kernel (TCP, epoll, futex)", re.compile(r"^(syscall\.|internal/runtime/syscall|runtime\.(futex|usleep|epollwait|netpoll)|\[k\]|entry_SYSCALL)")),
    ("heap allocation (mallocgc)", re.compile(r"^runtime\.(mallocgc|newobject|makeslice|growslice|makemap|newarray)")),
    ("garbage collection", re.compile(r"^runtime\.(gcBgMarkWorker|gcAssistAlloc|gcDrain|bgsweep|bgscavenge|markroot|scanobject)")),
    ("scheduler (goroutine hand-offs, sysmon)", re.compile(r"^runtime\.(schedule|findRunnable|park_m|goready|ready|sysmon|mcall|gopark|wakep|startm|stopm|notewakeup|notesleep|selectgo|chansend|chanrecv)")),
]


def stacks(f):
    cur = []
    for line in f:
        line = line.rstrip("\n")
        if not line.strip():
            if cur:
                yield cur
            cur = []
            continue
        if line.startswith((" ", "\t")):
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                sym = parts[1].rsplit(" (", 1)
                name = re.sub(r"\+0x[0-9a-f]+$", "", sym[0])
                if len(sym) == 2 and sym[1].startswith("[kernel"):
                    name = "[k]" + name
                cur.append(name)
    if cur:
        yield cur


def main():
    comp, act, n = Counter(), Counter(), 0
    for st in stacks(sys.stdin):
        n += 1
        c = "Go runtime only (GC workers, scheduler, sysmon)"
        for fr in st:
            if CONN_WRAPPER.search(fr):
                continue
            m = next((name for name, pat in COMPONENTS if pat.search(fr)), None)
            if m:
                c = m
                break
        else:
            if any(IO_LAYER[1].search(fr) for fr in st):
                c = IO_LAYER[0]
        comp[c] += 1
        a = "computing"
        for name, pat in ACTIVITIES:
            if any(pat.search(fr) for fr in st):
                a = name
                break
        act[a] += 1
    if n == 0:
        sys.exit("perfsplit: no samples with call stacks on stdin (record with perf record -g)")
    for title, cnt in (("component (innermost frame that has one)", comp), ("activity", act)):
        print(f"| {title} | % of {n} samples |\n|---|---:|")
        for k, v in cnt.most_common():
            print(f"| {k} | {100 * v / n:.1f} |")
        print()


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:
        pass
