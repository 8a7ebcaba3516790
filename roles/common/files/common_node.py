#!/usr/bin/env python3
"""Node-side helper of the gcpgpu common role: standard library only, Python 3.6+, run as root.

The role sends it inline (`python3 -c`) through ansible.builtin.raw: one shell call per file and
no Ansible module machinery on the node (no module_utils to compile per call).

  hosts FILE DATA [--check]
      DATA: base64 of the block's text (one "ip<TAB>name" line per host). Keep it in FILE
      between the markers, with blockinfile's semantics: the lines between the markers are
      replaced, else the block is appended; an empty block removes it. The rest of FILE is
      kept. Written atomically, or in place when FILE is a bind mount (rename fails with EBUSY).
  facts FILE DATA [--check]
      DATA: base64 of the facts as JSON. Keep them as one line of sorted JSON in FILE (the last
      line starting with "{" is replaced, else the line is appended).

Both make FILE root:root 0644 and print one JSON line {"changed", "diff"} (diff: unified text,
empty when nothing changes). --check changes nothing and says what would change.
"""
import argparse
import base64
import difflib
import errno
import json
import os
import sys
import tempfile

BEGIN = "# BEGIN gcpgpu cluster hosts (managed by gcpgpu, do not edit)\n"
END = "# END gcpgpu cluster hosts (managed by gcpgpu, do not edit)\n"


def decode(data):
    return base64.b64decode(data).decode("utf-8")


def read_lines(path):
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            return fh.read().splitlines(True)
    except FileNotFoundError:
        return None


def with_block(lines, block):
    """blockinfile: replace the lines between the markers by `block`, else add it at the end."""
    lines = list(lines)
    if BEGIN in lines and END in lines and lines.index(BEGIN) < lines.index(END):
        start = lines.index(BEGIN)
        del lines[start:lines.index(END) + 1]
    else:
        start = len(lines)
    if start > 0 and not lines[start - 1].endswith("\n"):
        lines[start - 1] += "\n"
    lines[start:start] = [BEGIN, *block, END] if block else []
    return lines


def with_fact_line(lines, line):
    """lineinfile with regexp ^{: replace the last such line, else append."""
    lines = list(lines)
    matches = [i for i, text in enumerate(lines) if text.startswith("{")]
    if matches:
        lines[matches[-1]] = line
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(line)
    return lines


def write(path, text):
    """Atomic replace; in place where the rename is refused (a bind-mounted /etc/hosts)."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".gcpgpu-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
            os.fchmod(out.fileno(), 0o644)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EXDEV, errno.EPERM):
                raise
            with open(path, "w", encoding="utf-8", newline="") as out:
                out.write(text)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


def attributes_differ(path):
    st = os.stat(path)
    return (st.st_uid, st.st_gid, st.st_mode & 0o7777) != (0, 0, 0o644)


def apply(path, before, after, check):
    changed = before != after or (before is not None and attributes_differ(path))
    diff = "".join(difflib.unified_diff(before or [], after, path + " (before)", path + " (after)"))
    if changed and not check:
        if before != after:
            write(path, "".join(after))
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)
    print(json.dumps({"changed": changed, "diff": diff}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["hosts", "facts"])
    parser.add_argument("file")
    parser.add_argument("data")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    data = decode(args.data)
    before = read_lines(args.file)
    if args.what == "hosts":
        block = [line + "\n" for line in data.splitlines() if line.strip()]
        if before is None and not block:
            print(json.dumps({"changed": False, "diff": ""}))
            return
        after = with_block(before or [], block)
    else:
        after = with_fact_line(before or [], json.dumps(json.loads(data), sort_keys=True) + "\n")
    apply(args.file, before, after, args.check)


if __name__ == "__main__":
    sys.exit(main())
