#!/usr/bin/env python3
"""treecmp.py - are two directory trees exact copies of each other?

usage: treecmp.py [--exclude NAME]... [--no-atime] [--data-only | --no-meta] A B

Exit status: 0 when the trees are equal, 1 when they differ (one line per
difference on stdout, at most MAX_LINES of them and then a count), 2 on a
usage error or when a tree cannot be read (the reason on stderr).

Compared for every entry below the roots and for the roots themselves
(except their names):
  type      regular file, directory, symlink, fifo, socket, char/block device
  mode      all of 07777 (setuid, setgid and sticky included)
  uid, gid
  size      of regular files
  rdev      device number of char and block devices
  links     hard-link groups: names that share an inode in A share one in B,
            and names that do not, do not (names outside the roots are not
            part of the trees: link counts are not compared)
  xattr     every extended attribute the caller can see (user, trusted,
            security, system.posix_acl_*), as a name -> value map
  mtime     in nanoseconds, directories and symlinks too
  atime     in nanoseconds, unless --no-atime
  symlink   the target of symlinks
  content   the bytes of regular files (not read when the sizes differ)
An entry on one side only is reported as "only in A" or "only in B"; what
lies below such a directory, or below a path whose type differs, is counted
in that line rather than listed.

--data-only  only the regular files: their set of paths, sizes and bytes
             (for targets where only the image data is mirrored).
--no-meta    the entries, their types, sizes, device numbers, symlink
             targets and bytes, but no mode, owner, link, xattr or time
             (for a comparison while a job still runs).
--exclude NAME  leave out the entry NAME at the top level of both trees
             (repeatable), e.g. --exclude .mirror.

Reading a tree must not change what is compared, and reads change access
times (relatime).  So every entry is lstat()ed before anything is read
from it: a directory is listed only after its entry was stat()ed through
its parent (the root: lstat() first), all metadata of both trees is
gathered and compared before any symlink target or file content is read,
and directories and files are opened with O_NOATIME (allowed for root and
for the owner; without it on EPERM).  readlink() has no such flag: when it
moves a symlink's atime, treecmp sets it back (utimensat, which changes
only the ctime, not compared), so that a second run sees the same times.
"""

import argparse
import errno
import os
import stat
import sys

MAX_LINES = 50
CHUNK = 1 << 20
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class Trouble(Exception):
    """A tree cannot be read: exit 2."""


def open_noatime(path, flags, dir_fd=None):
    try:
        return os.open(path, flags | os.O_NOATIME, dir_fd=dir_fd)
    except OSError as e:
        if e.errno != errno.EPERM:
            raise
    # Neither root nor the owner: read anyway, atimes may move.
    return os.open(path, flags, dir_fd=dir_fd)


TYPES = (
    (stat.S_ISREG, "regular file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISLNK, "symlink"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "char device"),
    (stat.S_ISBLK, "block device"),
)


def type_name(mode):
    for test, name in TYPES:
        if test(mode):
            return name
    return "unknown type %o" % stat.S_IFMT(mode)


def show_path(rel):
    """One line, whatever bytes the name holds."""
    s = rel or "."
    s = s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if any(c < " " or c == "\x7f" for c in s):
        s = repr(s)
    return s


def show_time(ns):
    return "%d.%09d" % divmod(ns, 1000000000)


def show_bytes(b, limit=40):
    r = repr(bytes(b[:limit]))
    return r + ("...(%d bytes)" % len(b) if len(b) > limit else "")


def path_key(rel):
    return rel.split("/") if rel else []


class Tree:
    """The lstat() of every entry of one tree, gathered before any read."""

    def __init__(self, root, excludes):
        self.root = root
        self.entries = {}
        try:
            st = os.lstat(root)
        except OSError as e:
            raise Trouble("%s: %s" % (root, e.strerror))
        if not stat.S_ISDIR(st.st_mode):
            raise Trouble("%s: not a directory" % root)
        self.entries[""] = st
        try:
            self.fd = open_noatime(root, DIR_FLAGS)
        except OSError as e:
            raise Trouble("%s: %s" % (root, e.strerror))
        self._walk(excludes)

    def _walk(self, excludes):
        # Directories are opened by their path relative to the root, one at
        # a time: a wide tree does not need an fd per pending directory.
        stack = [""]
        while stack:
            rel = stack.pop()
            try:
                fd = open_noatime(rel, DIR_FLAGS, self.fd) if rel else os.dup(self.fd)
            except OSError as e:
                raise Trouble("%s: %s" % (os.path.join(self.root, rel), e.strerror))
            try:
                with os.scandir(fd) as it:
                    for e in it:
                        if not rel and e.name in excludes:
                            continue
                        p = rel + "/" + e.name if rel else e.name
                        st = e.stat(follow_symlinks=False)
                        self.entries[p] = st
                        if stat.S_ISDIR(st.st_mode):
                            stack.append(p)
            except OSError as e:
                raise Trouble("%s: %s" % (os.path.join(self.root, rel), e.strerror))
            finally:
                os.close(fd)

    def xattrs(self, rel):
        # Through the parent's /proc link: the path from / may be longer
        # than PATH_MAX, and the l* calls do not follow the entry itself.
        pfd = None
        try:
            if rel:
                parent, name = rel.rpartition("/")[::2]
                pfd = (os.open(parent, os.O_PATH | os.O_DIRECTORY, dir_fd=self.fd)
                       if parent else os.dup(self.fd))
                path = "/proc/self/fd/%d/%s" % (pfd, name)
            else:
                path = "/proc/self/fd/%d" % self.fd
            try:
                names = os.listxattr(path, follow_symlinks=not rel)
            except OSError as e:
                if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                    return {}
                raise Trouble("listxattr %s: %s" % (show_path(rel), e.strerror))
            out = {}
            for n in names:
                try:
                    out[n] = os.getxattr(path, n, follow_symlinks=not rel)
                except OSError as e:
                    if e.errno == errno.ENODATA:  # removed meanwhile
                        continue
                    raise Trouble("getxattr %s %s: %s" % (show_path(rel), n, e.strerror))
            return out
        except OSError as e:
            raise Trouble("%s: %s" % (show_path(rel), e.strerror))
        finally:
            if pfd is not None:
                os.close(pfd)

    def readlink(self, rel):
        try:
            target = os.readlink(rel, dir_fd=self.fd)
        except OSError as e:
            raise Trouble("readlink %s: %s" % (os.path.join(self.root, rel), e.strerror))
        # readlink() has no O_NOATIME: if it moved the atime (relatime does
        # when the atime was not newer than the mtime or ctime), put back the
        # one gathered before, so that the next comparison sees what this
        # one did.  Only the ctime, which is never compared, keeps a trace.
        try:
            st = os.stat(rel, dir_fd=self.fd, follow_symlinks=False)
            before = self.entries[rel]
            if st.st_atime_ns != before.st_atime_ns and st.st_mtime_ns == before.st_mtime_ns:
                os.utime(rel, ns=(before.st_atime_ns, st.st_mtime_ns),
                         dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            pass  # not ours to change: the atime moves, as it would anyway
        return target

    def open_file(self, rel):
        try:
            return open_noatime(rel, FILE_FLAGS, self.fd)
        except OSError as e:
            raise Trouble("open %s: %s" % (os.path.join(self.root, rel), e.strerror))


def data_ranges(fa, fb, size):
    """Yield (start, end) ranges that hold data in A or in B; what lies
    outside them is a hole on both sides, so zeros on both."""
    def next_data(fd, off):
        try:
            return os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return size
            raise

    def next_hole(fd, off):
        return min(os.lseek(fd, off, os.SEEK_HOLE), size)

    if size <= 4 * CHUNK:
        yield 0, size
        return
    try:
        off = 0
        while off < size:
            da, db = next_data(fa, off), next_data(fb, off)
            start = min(da, db, size)
            if start >= size:
                return
            end = start
            if da <= start:
                end = max(end, next_hole(fa, start))
            if db <= start:
                end = max(end, next_hole(fb, start))
            yield start, end
            off = end
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # No SEEK_DATA here: read everything (after what was compared).
        yield off, size


def first_difference(fa, fb, size):
    """Offset of the first byte that differs, or None."""
    for start, end in data_ranges(fa, fb, size):
        off = start
        while off < end:
            n = min(CHUNK, end - off)
            a = os.pread(fa, n, off)
            b = os.pread(fb, n, off)
            if a != b:
                m = min(len(a), len(b))
                lo, hi = 0, m
                # Bisect for the first differing byte (memcmp per step).
                while lo < hi:
                    mid = (lo + hi) // 2
                    if a[lo:mid + 1] == b[lo:mid + 1]:
                        lo = mid + 1
                    else:
                        hi = mid
                return off + lo
            if len(a) < n:  # both ended early: the files shrank meanwhile
                return off + len(a)
            off += n
    return None


class Comparison:
    def __init__(self, a, b, args):
        self.a, self.b, self.args = a, b, args
        self.lines = []

    def diff(self, rel, what, va=None, vb=None):
        if va is None and vb is None:
            self.lines.append("%s: %s" % (show_path(rel), what))
        else:
            self.lines.append("%s: %s: A=%s B=%s" % (show_path(rel), what, va, vb))

    def run(self):
        ea, eb = self.a.entries, self.b.entries
        data_only = self.args.data_only
        if data_only:
            ea = {p: s for p, s in ea.items() if stat.S_ISREG(s.st_mode)}
            eb = {p: s for p, s in eb.items() if stat.S_ISREG(s.st_mode)}
        paths = sorted(set(ea) | set(eb), key=path_key)

        # 1. Presence and type.  Below a path that is on one side only, or
        # whose type differs, nothing is compared (counted, not listed).
        common = []
        cut = None
        below = 0
        for p in paths:
            if cut is not None and p.startswith(cut):
                below += 1
                continue
            if cut is not None and below:
                self.lines[-1] += " (and %d entries below)" % below
            cut, below = None, 0
            sa, sb = ea.get(p), eb.get(p)
            if sa is None or sb is None:
                side, st = ("A", sa) if sb is None else ("B", sb)
                self.diff(p, "only in %s (%s)" % (side, type_name(st.st_mode)))
                cut = p + "/" if p else ""
                continue
            ta, tb = stat.S_IFMT(sa.st_mode), stat.S_IFMT(sb.st_mode)
            if ta != tb:
                self.diff(p, "type", type_name(sa.st_mode), type_name(sb.st_mode))
                cut = p + "/" if p else ""
                continue
            common.append(p)
        if cut is not None and below:
            self.lines[-1] += " (and %d entries below)" % below

        # 2. Metadata of every common entry, before anything is read.
        full = not (data_only or self.args.no_meta)
        for p in common:
            sa, sb = ea[p], eb[p]
            mode = sa.st_mode
            if full:
                if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
                    self.diff(p, "mode", "%04o" % stat.S_IMODE(sa.st_mode),
                              "%04o" % stat.S_IMODE(sb.st_mode))
                if sa.st_uid != sb.st_uid:
                    self.diff(p, "uid", sa.st_uid, sb.st_uid)
                if sa.st_gid != sb.st_gid:
                    self.diff(p, "gid", sa.st_gid, sb.st_gid)
            if stat.S_ISREG(mode) and sa.st_size != sb.st_size:
                self.diff(p, "size", sa.st_size, sb.st_size)
            if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) and sa.st_rdev != sb.st_rdev:
                self.diff(p, "rdev", "%d:%d" % (os.major(sa.st_rdev), os.minor(sa.st_rdev)),
                          "%d:%d" % (os.major(sb.st_rdev), os.minor(sb.st_rdev)))
            if not full:
                continue
            xa, xb = self.a.xattrs(p), self.b.xattrs(p)
            for n in sorted(set(xa) | set(xb)):
                va, vb = xa.get(n), xb.get(n)
                if va != vb:
                    self.diff(p, "xattr %s" % n,
                              "(none)" if va is None else show_bytes(va),
                              "(none)" if vb is None else show_bytes(vb))
            if sa.st_mtime_ns != sb.st_mtime_ns:
                self.diff(p, "mtime", show_time(sa.st_mtime_ns), show_time(sb.st_mtime_ns))
            if not self.args.no_atime and sa.st_atime_ns != sb.st_atime_ns:
                self.diff(p, "atime", show_time(sa.st_atime_ns), show_time(sb.st_atime_ns))
        if full:
            self.compare_links(common)

        # 3. Contents last: symlink targets, then bytes of equal-sized files.
        for p in common:
            sa, sb = ea[p], eb[p]
            if stat.S_ISLNK(sa.st_mode) and not data_only:
                la, lb = self.a.readlink(p), self.b.readlink(p)
                if la != lb:
                    self.diff(p, "symlink", repr(la), repr(lb))
        for p in common:
            sa, sb = ea[p], eb[p]
            if stat.S_ISREG(sa.st_mode) and sa.st_size == sb.st_size and sa.st_size:
                self.compare_content(p, sa.st_size)

    def compare_links(self, common):
        """The partition of the common non-directories into names of one
        inode must be the same on both sides."""
        ga, gb = {}, {}
        for p in common:
            sa = self.a.entries[p]
            if stat.S_ISDIR(sa.st_mode):
                continue
            sb = self.b.entries[p]
            ga.setdefault((sa.st_dev, sa.st_ino), []).append(p)
            gb.setdefault((sb.st_dev, sb.st_ino), []).append(p)
        reported = set()
        for p in common:
            sa = self.a.entries[p]
            if stat.S_ISDIR(sa.st_mode) or p in reported:
                continue
            sb = self.b.entries[p]
            na, nb = ga[(sa.st_dev, sa.st_ino)], gb[(sb.st_dev, sb.st_ino)]
            if set(na) != set(nb):
                self.diff(p, "links (names of one inode)",
                          "{%s}" % ",".join(map(show_path, na)),
                          "{%s}" % ",".join(map(show_path, nb)))
                reported.update(na)
                reported.update(nb)

    def compare_content(self, rel, size):
        fa = self.a.open_file(rel)
        try:
            fb = self.b.open_file(rel)
            try:
                off = first_difference(fa, fb, size)
            finally:
                os.close(fb)
        finally:
            os.close(fa)
        if off is not None:
            self.diff(rel, "content differs from byte %d (of %d)" % (off, size))


def main(argv):
    ap = argparse.ArgumentParser(
        prog="treecmp.py",
        description="Compare two directory trees: exit 0 equal, 1 different, 2 trouble.")
    ap.add_argument("--exclude", action="append", default=[], metavar="NAME",
                    help="skip the entry NAME at the top level (repeatable)")
    ap.add_argument("--no-atime", action="store_true", help="do not compare access times")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--data-only", action="store_true",
                      help="compare only regular files: paths, sizes and bytes")
    mode.add_argument("--no-meta", action="store_true",
                      help="compare entries, types, sizes, symlinks, devices and bytes only")
    ap.add_argument("a", metavar="A")
    ap.add_argument("b", metavar="B")
    args = ap.parse_args(argv)
    for n in args.exclude:
        if not n or "/" in n or n in (".", ".."):
            ap.error("--exclude takes a name, not a path: %r" % n)

    try:
        ta = Tree(args.a, set(args.exclude))
        tb = Tree(args.b, set(args.exclude))
        c = Comparison(ta, tb, args)
        c.run()
    except Trouble as e:
        print("treecmp: %s" % e, file=sys.stderr)
        return 2
    if not c.lines:
        return 0
    out = sys.stdout
    for line in c.lines[:MAX_LINES]:
        out.write(line + "\n")
    if len(c.lines) > MAX_LINES:
        out.write("... %d more differences (%d in all)\n" % (len(c.lines) - MAX_LINES, len(c.lines)))
    out.flush()
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
