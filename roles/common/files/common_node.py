#!/usr/bin/env python3
"""Node-side helper of the gcpgpu common role: standard library only, Python 3.6+, run as root.

The role sends it inline (`python3 -c`) through ansible.builtin.raw: one shell call for both files
and no Ansible module machinery on the node (no module_utils to compile per call).

  OPERATION [OPERATION ...] [--check], each OPERATION one of:

  hosts FILE DATA [--check]
      DATA: base64 of the block's text (one "ip<TAB>name" line per host). Keep it in FILE
      between the markers, with blockinfile's semantics: the lines between the markers are
      replaced, else the block is appended; an empty block removes it. The rest of FILE is
      kept. Written atomically, or in place when FILE is a bind mount (rename fails with EBUSY).
  facts FILE DATA [--check]
      DATA: base64 of the facts as JSON. Keep them as one line of sorted JSON in FILE (the last
      line starting with "{" is replaced, else the line is appended).

Each makes its FILE root:root 0644. One JSON line {"changed", "diff"} answers for all of them
(diff: unified text, empty when nothing changes). --check changes nothing and says what would change.
"""
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
    """(changed, diff) of making `path` hold `after`; written unless `check`."""
    changed = before != after or (before is not None and attributes_differ(path))
    diff = "".join(difflib.unified_diff(before or [], after, path + " (before)", path + " (after)"))
    if changed and not check:
        if before != after:
            write(path, "".join(after))
        os.chown(path, 0, 0)
        os.chmod(path, 0o644)
    return changed, diff


def operate(what, path, data, check):
    data = decode(data)
    before = read_lines(path)
    if what == "hosts":
        block = [line + "\n" for line in data.splitlines() if line.strip()]
        if before is None and not block:
            return False, ""
        after = with_block(before or [], block)
    else:
        after = with_fact_line(before or [], json.dumps(json.loads(data), sort_keys=True) + "\n")
    return apply(path, before, after, check)


def main():
    args = sys.argv[1:]
    check = "--check" in args
    args = [arg for arg in args if arg != "--check"]
    if len(args) % 3 or not args or any(what not in ("hosts", "facts") for what in args[::3]):
        sys.exit(__doc__)
    results = [operate(*args[i:i + 3], check) for i in range(0, len(args), 3)]
    print(json.dumps({"changed": any(changed for changed, _ in results),
                      "diff": "".join(diff for _, diff in results)}))


if __name__ == "__main__":
    sys.exit(main())
