#!/usr/bin/env python3
"""Locked instructions (atomic read-modify-writes) executed per request, from a callgrind dump.

A `lock`-prefixed instruction (or an `xchg` with memory) costs some twenty cycles on x86 even
when no other core wants the line, and it orders the memory accesses around it. nginx runs
about seven per request; what an edge runs shows up here, function by function.

    locked-instructions.py DUMP REQUESTS [TOP]

DUMP is a callgrind dump made with `--dump-instr=yes`; REQUESTS divides the counts. Callgrind gives addresses as the object file has them, which is what
objdump lists. `bench/instructions.sh` runs it when LOCKED=1.
"""
import collections
import re
import subprocess
import sys


def locked_addresses(path):
    """Address -> function of every locked instruction in an object, from objdump."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                         capture_output=True, text=True, check=False).stdout
    found, function = {}, ""
    for line in out.split("\n"):
        m = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if m:
            function = m.group(2)
            continue
        if "\tlock " in line or re.search(r"\txchg\s+.*\(", line):
            try:
                found[int(line.split(":")[0].strip(), 16)] = function
            except ValueError:
                pass
    return found


def main():
    dump, requests = sys.argv[1], int(sys.argv[2])
    top = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    names, objects, per_function = {}, {}, collections.Counter()
    current, address, after_call = None, 0, False
    for line in open(dump, errors="replace"):
        if line.startswith(("ob=", "cob=")):
            m = re.match(r"c?ob=\((\d+)\)(?: (.*))?", line.strip())
            if m.group(2):
                names[m.group(1)] = m.group(2)
            if line.startswith("ob="):
                current = names.get(m.group(1))
            continue
        if line.startswith("calls="):
            after_call = True  # the next cost line is the call's inclusive cost
            continue
        if not line or not (line[0] == "0" or line[0] in "+-*"):
            continue
        f = line.split()
        if f[0].startswith("0x"):
            address = int(f[0], 16)
        elif f[0][0] in "+-":
            address += int(f[0])
        if after_call:
            after_call = False
            continue
        if current is None or len(f) < 3:
            continue
        if current not in objects:
            objects[current] = locked_addresses(current)
        locked = objects[current]
        if address in locked:
            per_function[(current.split("/")[-1], locked[address])] += int(f[2])
    total = sum(per_function.values())
    print(f"locked instructions per request: {total / requests:.1f}")
    for (obj, function), n in per_function.most_common(top):
        print(f"  {n / requests:6.2f}  {obj}  {function[:100]}")


if __name__ == "__main__":
    main()
