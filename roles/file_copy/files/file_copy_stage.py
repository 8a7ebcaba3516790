#!/usr/bin/env python3
"""Controller-side helper of the gcpgpu file_copy role (runs on the Ansible controller only).

  manifest SRC [--exclude PAT]... [--checksum]
      Print JSON {"files": [{"path", "size", "mtime", "mode", "checksum"?}], "keys", "count"}
      for the filtered tree under SRC (paths relative, POSIX, sorted).
  archive SRC [--dir DIR]   (JSON list of relative paths on stdin)
      Write a gzip tar of the listed files plus their parent directories to a new
      temporary file in DIR and print {"archive": path}. Modes and integer mtimes are kept.

Exclude patterns follow rsync's spirit: a pattern without "/" matches the name of any
file or directory at any depth ("__pycache__", "*.pyc", ".git"); a pattern with "/" is
matched against the path relative to SRC ("data/raw/*"). An excluded directory is not
descended into. Symlinks to files are copied as the files they point to; symlinks to
directories and other special files are skipped.
"""
import argparse
import fnmatch
import hashlib
import json
import os
import stat
import sys
import tarfile
import tempfile


def excluded(rel, name, patterns):
    for pat in patterns:
        pat = pat.rstrip("/")
        if "/" in pat:
            if fnmatch.fnmatchcase(rel, pat.lstrip("/")):
                return True
        elif fnmatch.fnmatchcase(name, pat):
            return True
    return False


def walk(src, patterns):
    """Yield (relpath, abspath, stat_result) of kept regular files (symlinks followed)."""
    for root, dirs, files in os.walk(src):
        reldir = os.path.relpath(root, src)
        reldir = "" if reldir == "." else reldir.replace(os.sep, "/")
        kept = []
        for d in sorted(dirs):
            rel = f"{reldir}/{d}" if reldir else d
            if not excluded(rel, d, patterns) and not os.path.islink(os.path.join(root, d)):
                kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            rel = f"{reldir}/{f}" if reldir else f
            if excluded(rel, f, patterns):
                continue
            path = os.path.join(root, f)
            try:
                st = os.stat(path)
            except OSError:  # dangling symlink
                continue
            if stat.S_ISREG(st.st_mode):
                yield rel, path, st


def sha1(path):
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cmd_manifest(args):
    if not os.path.isdir(args.src):
        sys.exit(f"file_copy: source {args.src!r} is not a directory on the controller")
    files = []
    for rel, path, st in walk(args.src, args.exclude):
        entry = {
            "path": rel,
            "size": st.st_size,
            "mtime": int(st.st_mtime),
            "mode": "%04o" % stat.S_IMODE(st.st_mode),
        }
        if args.checksum:
            entry["checksum"] = sha1(path)
        files.append(entry)
    # "path|a|b|mode" per file, a|b = size|mtime or checksum|: the role appends |owner|group and
    # compares these strings with the same keys built from the node's `find` (a set difference).
    keys = ["|".join([f["path"], *((f["checksum"], "") if args.checksum else (str(f["size"]), str(f["mtime"]))),
                      f["mode"]]) for f in files]
    json.dump({"files": files, "keys": keys, "count": len(files)}, sys.stdout)


def cmd_archive(args):
    wanted = sorted(set(json.load(sys.stdin)))
    src = os.path.abspath(args.src)
    dirs = set()
    for rel in wanted:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    fd, tmp = tempfile.mkstemp(prefix="gcpgpu-file_copy-", suffix=".tar.gz",
                               dir=args.dir or None)
    os.close(fd)
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=args.compresslevel,
                          format=tarfile.GNU_FORMAT) as tar:
            for rel in sorted(dirs) + wanted:
                path = os.path.join(src, *rel.split("/"))
                st = os.stat(path)
                info = tarfile.TarInfo(rel)
                info.mode = stat.S_IMODE(st.st_mode)
                info.mtime = int(st.st_mtime)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if stat.S_ISDIR(st.st_mode):
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                else:
                    info.size = st.st_size
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)

    except BaseException:
        os.unlink(tmp)
        raise
    json.dump({"archive": tmp, "files": len(wanted)}, sys.stdout)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("manifest")
    m.add_argument("src")
    m.add_argument("--exclude", action="append", default=[])
    m.add_argument("--checksum", action="store_true")
    a = sub.add_parser("archive")
    a.add_argument("src")
    a.add_argument("--dir", default="")
    a.add_argument("--compresslevel", type=int, default=6)
    args = p.parse_args()
    {"manifest": cmd_manifest, "archive": cmd_archive}[args.cmd](args)


if __name__ == "__main__":
    main()
