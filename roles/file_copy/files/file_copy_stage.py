#!/usr/bin/env python3
"""Helper of the gcpgpu file_copy role: standard library only, Python 3.6+.

On the controller:
  manifest SRC [--exclude PAT]... [--checksum]
      Print JSON {"files": [{"path", "size", "mtime", "mode", "checksum"?}], "keys", "count"}
      for the filtered tree under SRC (paths relative, POSIX, sorted), or {"error"}.
  bundle SRC [--dir DIR] [--compresslevel N]   (JSON list of relative paths on stdin)
      Write a new file in DIR: a runnable zip (`python3 FILE extract ...`) holding this helper as
      __main__.py and a tar of the listed files plus their parent directories (modes and integer
      mtimes kept). Print {"bundle": path, "files": n}.

On the node (as root; neither needs Ansible's module machinery, so no module_utils are compiled):
  listing DEST --owner USER [--group GROUP] [--checksum]
      Print JSON {"group", "keys"}: the regular files under DEST with the manifest's keys plus
      "|owner|group", and the group files should have (GROUP, else USER's primary group).
      Fails when DEST is not absolute, or exists and is not a directory.
  extract --dest DEST --owner USER [--group GROUP] [--mode MODE]   (run from a bundle)
      Create DEST (and missing parents) with MODE, owner and group; write the bundle's files and
      directories under it with their modes and mtimes, owned by USER:GROUP (each file replaced
      atomically). Print {"changed": true, "files": n}.

Exclude patterns follow rsync's spirit: a pattern without "/" matches the name of any
file or directory at any depth ("__pycache__", "*.pyc", ".git"); a pattern with "/" is
matched against the path relative to SRC ("data/raw/*"). An excluded directory is not
descended into. Symlinks to files are copied as the files they point to; symlinks to
directories and other special files are skipped.
"""
import argparse
import fnmatch
import grp
import hashlib
import json
import os
import pwd
import stat
import sys
import tarfile
import tempfile
import zipfile


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
            rel = reldir + "/" + d if reldir else d
            if not excluded(rel, d, patterns) and not os.path.islink(os.path.join(root, d)):
                kept.append(d)
        dirs[:] = kept
        for f in sorted(files):
            rel = reldir + "/" + f if reldir else f
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


def key(rel, path, st, checksum):
    """The key of a file on either side: path|a|b|mode, a|b = size|mtime, or checksum|."""
    a, b = (sha1(path), "") if checksum else (str(st.st_size), str(int(st.st_mtime)))
    return "|".join([rel, a, b, "%04o" % stat.S_IMODE(st.st_mode)])


def cmd_manifest(args):
    if not os.path.isdir(args.src):
        # Said in the JSON: the role reads this through a pipe lookup, which drops stderr.
        json.dump({"error": "file_copy: source %r is not a directory on the controller" % args.src}, sys.stdout)
        return
    files, keys = [], []
    for rel, path, st in walk(args.src, args.exclude):
        entry = {"path": rel, "size": st.st_size, "mtime": int(st.st_mtime),
                 "mode": "%04o" % stat.S_IMODE(st.st_mode)}
        if args.checksum:
            entry["checksum"] = sha1(path)
        files.append(entry)
        # The role appends |owner|group and compares with the node's listing (a set difference).
        keys.append(key(rel, path, st, args.checksum))
    json.dump({"files": files, "keys": keys, "count": len(files)}, sys.stdout)


def cmd_bundle(args):
    wanted = sorted(set(json.load(sys.stdin)))
    src = os.path.abspath(args.src)
    dirs = set()
    for rel in wanted:
        parts = rel.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    fd, bundle = tempfile.mkstemp(prefix="gcpgpu-file_copy-", suffix=".pyz", dir=args.dir or None)
    os.close(fd)
    try:
        with zipfile.ZipFile(bundle, "w", zipfile.ZIP_DEFLATED, compresslevel=args.compresslevel) as zf:
            zf.write(os.path.abspath(__file__), "__main__.py")
            with zf.open("payload.tar", "w", force_zip64=True) as payload, \
                    tarfile.open(fileobj=payload, mode="w|", format=tarfile.GNU_FORMAT) as tar:
                for rel in sorted(dirs) + wanted:
                    add_member(tar, src, rel)
    except BaseException:
        os.unlink(bundle)
        raise
    json.dump({"bundle": bundle, "files": len(wanted)}, sys.stdout)


def add_member(tar, src, rel):
    path = os.path.join(src, *rel.split("/"))
    st = os.stat(path)
    info = tarfile.TarInfo(rel)
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    else:
        info.size = st.st_size
        with open(path, "rb") as fh:
            tar.addfile(info, fh)


def primary_group(user):
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def name_of(lookup, ident):
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def cmd_listing(args):
    dest = args.dest
    if not os.path.isabs(dest):
        sys.exit("file_copy: file_copy_dest must be an absolute path on the nodes, got %r" % dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        sys.exit("file_copy: %s exists on the node and is not a directory" % dest)
    keys = []
    for root, dirs, files in os.walk(dest):
        reldir = os.path.relpath(root, dest)
        for f in files:
            path = os.path.join(root, f)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            rel = f if reldir == "." else reldir + "/" + f
            keys.append("|".join([key(rel, path, st, args.checksum), name_of(pwd.getpwuid, st.st_uid),
                                  name_of(grp.getgrgid, st.st_gid)]))
    json.dump({"group": args.group or primary_group(args.owner), "keys": keys}, sys.stdout)
    sys.stdout.write("\n")


def set_attrs(path, mode, uid, gid):
    """chown/chmod `path` (no symlink following) when they differ; True when it changed."""
    st = os.lstat(path)
    changed = False
    if (st.st_uid, st.st_gid) != (uid, gid):
        os.lchown(path, uid, gid)
        changed = True
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)
        changed = True
    return changed


def make_dirs(path, mode, uid, gid):
    """mkdir -p, giving each directory it creates `mode`, uid and gid (what Ansible's file
    module does for missing parents)."""
    parent = os.path.dirname(path)
    if parent != path and not os.path.isdir(parent):
        make_dirs(parent, mode, uid, gid)
    if not os.path.isdir(path):
        os.mkdir(path)
        set_attrs(path, mode, uid, gid)


def write_file(tar, member, path, uid, gid):
    fd, tmp = tempfile.mkstemp(prefix=".gcpgpu-", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(member)
            for chunk in iter(lambda: src.read(1 << 20), b""):
                out.write(chunk)
            os.fchown(out.fileno(), uid, gid)
            os.fchmod(out.fileno(), member.mode)
        os.utime(tmp, (member.mtime, member.mtime))
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def cmd_extract(args):
    user = pwd.getpwnam(args.owner)
    uid, gid = user.pw_uid, grp.getgrnam(args.group).gr_gid if args.group else user.pw_gid
    mode = int(args.mode, 8)
    dest = os.path.abspath(args.dest)
    make_dirs(dest, mode, uid, gid)
    set_attrs(dest, mode, uid, gid)
    count = 0
    with zipfile.ZipFile(sys.argv[0]) as bundle, bundle.open("payload.tar") as payload, \
            tarfile.open(fileobj=payload, mode="r|") as tar:
        for member in tar:
            parts = member.name.split("/")
            if member.name.startswith("/") or ".." in parts:
                sys.exit("file_copy: unsafe path in bundle: %r" % member.name)
            path = os.path.join(dest, *parts)
            if member.isdir():
                if not os.path.isdir(path):
                    os.mkdir(path)
                set_attrs(path, member.mode, uid, gid)
            elif member.isfile():
                write_file(tar, member, path, uid, gid)
                count += 1
    json.dump({"changed": True, "files": count}, sys.stdout)
    sys.stdout.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd")
    sub.required = True
    m = sub.add_parser("manifest")
    m.add_argument("src")
    m.add_argument("--exclude", action="append", default=[])
    m.add_argument("--checksum", action="store_true")
    b = sub.add_parser("bundle")
    b.add_argument("src")
    b.add_argument("--dir", default="")
    b.add_argument("--compresslevel", type=int, default=6)
    ls = sub.add_parser("listing")
    ls.add_argument("dest")
    ls.add_argument("--owner", required=True)
    ls.add_argument("--group", default="")
    ls.add_argument("--checksum", action="store_true")
    x = sub.add_parser("extract")
    x.add_argument("--dest", required=True)
    x.add_argument("--owner", required=True)
    x.add_argument("--group", default="")
    x.add_argument("--mode", default="0755")
    args = p.parse_args()
    {"manifest": cmd_manifest, "bundle": cmd_bundle, "listing": cmd_listing, "extract": cmd_extract}[args.cmd](args)


if __name__ == "__main__":
    main()
