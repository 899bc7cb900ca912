/*
 * wal-gather: a SQLite VFS over the default one that gathers a transaction's WAL writes
 * and hands them to the OS in a few large writes instead of two per page.
 *
 * SQLite writes each WAL frame as two writes, its 24-byte header and then its page, so a
 * commit of many pages costs many system calls on the thread that commits (the event loop).
 * Here writes that continue the one before are copied into a buffer and written out when
 * something needs them in the file:
 *   - with a commit's last frame: the write of its page (the frame whose header carries the
 *     database size marks a commit) writes the buffer out before it returns, so a failure
 *     reaches SQLite as that write's error and the COMMIT fails and rolls back, as it
 *     would without this VFS. Nothing of the commit is published yet: SQLite shows other
 *     connections a commit only afterwards, through the WAL index;
 *   - before the WAL is read, synced, truncated, sized or closed, and before a write that
 *     does not continue the buffer (SQLite rewriting a frame in place), so the file sees
 *     the writes in the order SQLite made them;
 *   - when the buffer is full.
 * What is still gathered when the connection gives up the WAL's write lock belongs to a
 * transaction that rolled back (pages it spilled before its end), and is dropped there: it
 * must never reach the file once another connection may write the same stretch of the WAL.
 * (With locking_mode=EXCLUSIVE no such lock is taken or given up; there no other connection
 * writes, and the bytes go out at the next barrier, in the order SQLite wrote them. Set
 * before the WAL is first opened, SQLite keeps the WAL index in its own memory and calls
 * neither the barrier nor the lock, so after the first commit every write goes out as SQLite
 * makes it, as without this VFS: nothing gathered, nothing wrong. The service never uses it.)
 * The commit's answer comes after its COMMIT returns, by then its frames are in the file,
 * so the fdatasync the service runs afterwards covers them as before.
 *
 * Only writes inside the WAL's length as it was when the buffer started are gathered:
 * those reuse space the file already has. A write that grows the WAL goes straight
 * through, and a full disk is reported to SQLite at that write, as without this VFS.
 *
 * The WAL-index barrier (xShmBarrier on the database file), which SQLite calls as it
 * publishes a commit, is the last line: it should find nothing gathered, and if it does it
 * writes it out, since no reader, in this process or another, may find a published frame
 * missing from the file. It has no way to report a failure, and publishing would show
 * other connections frames that are not there, so on a failure there the process stops
 * (abort); the commit was not acknowledged, and on the next start SQLite's recovery drops
 * its frames, which never reached the file whole. Its count is in the stats (atBarrier).
 *
 * Loaded once per process (store/wal-gather.ts) and registered as the default VFS, since
 * better-sqlite3 opens every database with the default one.
 */
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The buffer's size: a batch of creates writes 100 to 200 KB of frames. */
#define GATHER_CAP (1024 * 1024)
/* A WAL frame's header; a page is at least 512 bytes, so a write this long is a header
 * (or, under synchronous=FULL without powersafe overwrite, a piece of a commit's frame split
 * at a sector, written while the commit is already going out). */
#define FRAME_HEADER 24
/* The most one write hands the unix VFS: it takes under 128 KiB at a time (its
 * seekAndWriteFd keeps only the low 17 bits of a length). */
#define WRITE_MAX (120 * 1024)

typedef struct GatherFile GatherFile;
struct GatherFile {
  sqlite3_file base;
  sqlite3_file *real;      /* the default VFS's file, allocated right after this struct */
  int isWal;
  GatherFile *wal;         /* on a database file: its WAL while open (this connection's) */
  GatherFile *db;          /* on a WAL: its database file */
  char *buf;               /* on a WAL: gathered bytes, allocated at the first write */
  int len;                 /* bytes gathered */
  sqlite3_int64 start;     /* where in the WAL they go */
  sqlite3_int64 room;      /* the WAL's length when this buffer started */
  int committing;          /* a commit frame's header is written: flush each write until published */
};

static sqlite3_vfs *realVfs;
static sqlite3_vfs gatherVfs;
static sqlite3_io_methods gatherMethods;

/* For tests: writes gathered, writes made of them, writes passed straight through, and
 * barriers that found bytes still gathered (none, but after a rollback in exclusive
 * locking mode). Counted with relaxed atomics: many connections, several threads. */
static sqlite3_int64 nGathered, nFlushWrites, nThrough, nAtBarrier;
#define COUNT(var, n) __atomic_fetch_add(&(var), (n), __ATOMIC_RELAXED)

static int flushGathered(GatherFile *p) {
  int rc = SQLITE_OK;
  for (int at = 0; at < p->len && rc == SQLITE_OK; at += WRITE_MAX) {
    int n = p->len - at < WRITE_MAX ? p->len - at : WRITE_MAX;
    rc = p->real->pMethods->xWrite(p->real, p->buf + at, n, p->start + at);
    COUNT(nFlushWrites, 1);
  }
  p->len = 0;
  return rc;
}

#define REAL(p) ((p)->real->pMethods)
/* Writes the buffer out, then passes the call on. */
#define FLUSHED(call)                                 \
  GatherFile *p = (GatherFile *)f;                    \
  if (p->len) {                                       \
    int rc = flushGathered(p);                        \
    if (rc != SQLITE_OK) return rc;                   \
  }                                                   \
  return call

static int gatherClose(sqlite3_file *f) {
  GatherFile *p = (GatherFile *)f;
  int rc = p->len ? flushGathered(p) : SQLITE_OK;
  if (p->isWal) {
    if (p->db && p->db->wal == p) p->db->wal = 0;
    sqlite3_free(p->buf);
  } else if (p->wal) {
    p->wal->db = 0;
  }
  int rc2 = REAL(p)->xClose(p->real);
  return rc != SQLITE_OK ? rc : rc2;
}

static int gatherRead(sqlite3_file *f, void *out, int amt, sqlite3_int64 off) {
  FLUSHED(REAL(p)->xRead(p->real, out, amt, off));
}

/* Gathers one WAL write, or writes it straight through (see the top). */
static int gatherBytes(GatherFile *p, const void *data, int amt, sqlite3_int64 off) {
  if (p->len && off == p->start + p->len && p->len + amt <= GATHER_CAP && off + amt <= p->room) {
    memcpy(p->buf + p->len, data, amt);
    p->len += amt;
    COUNT(nGathered, 1);
    return SQLITE_OK;
  }
  if (p->len) {
    int rc = flushGathered(p);
    if (rc != SQLITE_OK) return rc;
  }
  if (p->buf == 0) {
    p->buf = sqlite3_malloc(GATHER_CAP);
    if (p->buf == 0) return SQLITE_NOMEM;
  }
  /* The length now: only another connection's checkpoint changes it, under the WAL's
   * write lock, which this connection holds while it writes (and so while it gathers). */
  int rc = REAL(p)->xFileSize(p->real, &p->room);
  if (rc != SQLITE_OK) return rc;
  if (amt > WRITE_MAX || off + amt > p->room) {
    COUNT(nThrough, 1);
    return REAL(p)->xWrite(p->real, data, amt, off);
  }
  memcpy(p->buf, data, amt);
  p->start = off;
  p->len = amt;
  COUNT(nGathered, 1);
  return SQLITE_OK;
}

/* Bytes 4-7 of a frame header: the database's size in pages after a commit, 0 on the
 * frames before a transaction's last. */
static int isCommitHeader(const void *data, int amt) {
  const unsigned char *h = data;
  return amt == FRAME_HEADER && (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int gatherWrite(sqlite3_file *f, const void *data, int amt, sqlite3_int64 off) {
  GatherFile *p = (GatherFile *)f;
  if (!p->isWal) return REAL(p)->xWrite(p->real, data, amt, off);
  int rc = gatherBytes(p, data, amt, off);
  if (rc != SQLITE_OK) return rc;
  if (isCommitHeader(data, amt)) {
    /* From here to the commit's publication (or the write lock's release, if it failed)
     * every write reaches the file before it returns. The header itself may wait for its
     * page if it continues the buffer. One that starts the buffer goes out now: it may be
     * SQLite rewriting the headers of frames it wrote twice, and then no page follows. */
    p->committing = 1;
    return p->len == amt ? flushGathered(p) : SQLITE_OK;
  }
  return p->committing && p->len ? flushGathered(p) : SQLITE_OK;
}

static int gatherTruncate(sqlite3_file *f, sqlite3_int64 size) { FLUSHED(REAL(p)->xTruncate(p->real, size)); }
static int gatherSync(sqlite3_file *f, int flags) { FLUSHED(REAL(p)->xSync(p->real, flags)); }
static int gatherFileSize(sqlite3_file *f, sqlite3_int64 *size) { FLUSHED(REAL(p)->xFileSize(p->real, size)); }
static int gatherFileControl(sqlite3_file *f, int op, void *arg) { FLUSHED(REAL(p)->xFileControl(p->real, op, arg)); }

static int gatherLock(sqlite3_file *f, int level) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xLock(p->real, level);
}
static int gatherUnlock(sqlite3_file *f, int level) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xUnlock(p->real, level);
}
static int gatherCheckReservedLock(sqlite3_file *f, int *out) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xCheckReservedLock(p->real, out);
}
static int gatherSectorSize(sqlite3_file *f) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xSectorSize(p->real);
}
static int gatherDeviceCharacteristics(sqlite3_file *f) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xDeviceCharacteristics(p->real);
}
static int gatherShmMap(sqlite3_file *f, int page, int size, int extend, void volatile **out) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xShmMap(p->real, page, size, extend, out);
}
/* The WAL's write lock: the first of the locks in the -shm (WAL_WRITE_LOCK in SQLite). */
#define WAL_WRITE_LOCK 0
static int gatherShmLock(sqlite3_file *f, int offset, int n, int flags) {
  GatherFile *p = (GatherFile *)f;
  if (p->wal && offset == WAL_WRITE_LOCK && (flags & SQLITE_SHM_UNLOCK) && (flags & SQLITE_SHM_EXCLUSIVE)) {
    /* A commit's frames went out with its last one, so what is still gathered when the
     * write lock goes belongs to a transaction that rolled back (pages it spilled before
     * its end). Those bytes are dropped: written out later, past the end SQLite keeps, they
     * would land on frames another connection commits there once it has the lock. */
    p->wal->len = 0;
    p->wal->committing = 0;
  }
  return REAL(p)->xShmLock(p->real, offset, n, flags);
}
static void gatherShmBarrier(sqlite3_file *f) {
  GatherFile *p = (GatherFile *)f;
  /* See the top: the commit is about to be published, its frames must be in the file. */
  if (p->wal) p->wal->committing = 0;
  if (p->wal && p->wal->len) {
    COUNT(nAtBarrier, 1);
    int rc = flushGathered(p->wal);
    if (rc != SQLITE_OK) {
      fprintf(stderr, "wal-gather: writing a commit's frames to the WAL failed (SQLite code %d); stopping before the commit is shown\n", rc);
      abort();
    }
  }
  REAL(p)->xShmBarrier(p->real);
}
static int gatherShmUnmap(sqlite3_file *f, int deleteFlag) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xShmUnmap(p->real, deleteFlag);
}
static int gatherFetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **out) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xFetch(p->real, off, amt, out);
}
static int gatherUnfetch(sqlite3_file *f, sqlite3_int64 off, void *ptr) {
  GatherFile *p = (GatherFile *)f;
  return REAL(p)->xUnfetch(p->real, off, ptr);
}

static int gatherOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *outFlags) {
  GatherFile *p = (GatherFile *)f;
  (void)vfs;
  memset(p, 0, sizeof(*p));
  p->real = (sqlite3_file *)&p[1];
  int rc = realVfs->xOpen(realVfs, name, p->real, flags, outFlags);
  if (rc != SQLITE_OK) {
    /* SQLite calls xClose only on a file whose pMethods is set. */
    if (p->real->pMethods) p->real->pMethods->xClose(p->real);
    return rc;
  }
  if ((flags & SQLITE_OPEN_WAL) && name) {
    p->isWal = 1;
    /* The database file this WAL belongs to, opened through this VFS by the same pager. */
    sqlite3_file *db = sqlite3_database_file_object(name);
    if (db && db->pMethods == &gatherMethods) {
      p->db = (GatherFile *)db;
      p->db->wal = p;
    }
  }
  p->base.pMethods = &gatherMethods;
  return SQLITE_OK;
}

/* Everything but opening files is the default VFS's. */
static int gDelete(sqlite3_vfs *v, const char *n, int s) { (void)v; return realVfs->xDelete(realVfs, n, s); }
static int gAccess(sqlite3_vfs *v, const char *n, int fl, int *o) { (void)v; return realVfs->xAccess(realVfs, n, fl, o); }
static int gFullPathname(sqlite3_vfs *v, const char *n, int sz, char *o) { (void)v; return realVfs->xFullPathname(realVfs, n, sz, o); }
static void *gDlOpen(sqlite3_vfs *v, const char *n) { (void)v; return realVfs->xDlOpen(realVfs, n); }
static void gDlError(sqlite3_vfs *v, int n, char *o) { (void)v; realVfs->xDlError(realVfs, n, o); }
static void (*gDlSym(sqlite3_vfs *v, void *h, const char *s))(void) { (void)v; return realVfs->xDlSym(realVfs, h, s); }
static void gDlClose(sqlite3_vfs *v, void *h) { (void)v; realVfs->xDlClose(realVfs, h); }
static int gRandomness(sqlite3_vfs *v, int n, char *o) { (void)v; return realVfs->xRandomness(realVfs, n, o); }
static int gSleep(sqlite3_vfs *v, int us) { (void)v; return realVfs->xSleep(realVfs, us); }
static int gCurrentTime(sqlite3_vfs *v, double *o) { (void)v; return realVfs->xCurrentTime(realVfs, o); }
static int gGetLastError(sqlite3_vfs *v, int n, char *o) { (void)v; return realVfs->xGetLastError(realVfs, n, o); }
static int gCurrentTimeInt64(sqlite3_vfs *v, sqlite3_int64 *o) { (void)v; return realVfs->xCurrentTimeInt64(realVfs, o); }
static int gSetSystemCall(sqlite3_vfs *v, const char *n, sqlite3_syscall_ptr fn) { (void)v; return realVfs->xSetSystemCall(realVfs, n, fn); }
static sqlite3_syscall_ptr gGetSystemCall(sqlite3_vfs *v, const char *n) { (void)v; return realVfs->xGetSystemCall(realVfs, n); }
static const char *gNextSystemCall(sqlite3_vfs *v, const char *n) { (void)v; return realVfs->xNextSystemCall(realVfs, n); }

/* wal_gather_stats(): the counts above as JSON, on every connection opened after loading. */
static void statsFunction(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  char *json = sqlite3_mprintf("{\"gathered\":%lld,\"flushWrites\":%lld,\"through\":%lld,\"atBarrier\":%lld}",
      __atomic_load_n(&nGathered, __ATOMIC_RELAXED), __atomic_load_n(&nFlushWrites, __ATOMIC_RELAXED),
      __atomic_load_n(&nThrough, __ATOMIC_RELAXED), __atomic_load_n(&nAtBarrier, __ATOMIC_RELAXED));
  if (json == 0) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_text(ctx, json, -1, sqlite3_free);
}

static int addStats(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  (void)err;
  (void)api;
  return sqlite3_create_function(db, "wal_gather_stats", 0, SQLITE_UTF8 | SQLITE_INNOCUOUS, 0, statsFunction, 0, 0);
}

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_walgather_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
  SQLITE_EXTENSION_INIT2(api);
  (void)err;
  if (sqlite3_vfs_find("wal-gather") == 0) {
    realVfs = sqlite3_vfs_find(0);
    if (realVfs == 0 || realVfs->iVersion < 3) return SQLITE_ERROR;
    const sqlite3_io_methods m = {3, gatherClose, gatherRead, gatherWrite, gatherTruncate, gatherSync,
        gatherFileSize, gatherLock, gatherUnlock, gatherCheckReservedLock, gatherFileControl,
        gatherSectorSize, gatherDeviceCharacteristics, gatherShmMap, gatherShmLock, gatherShmBarrier,
        gatherShmUnmap, gatherFetch, gatherUnfetch};
    gatherMethods = m;
    gatherVfs = *realVfs;
    gatherVfs.pNext = 0;
    gatherVfs.zName = "wal-gather";
    gatherVfs.szOsFile = (int)sizeof(GatherFile) + realVfs->szOsFile;
    gatherVfs.xOpen = gatherOpen;
    gatherVfs.xDelete = gDelete;
    gatherVfs.xAccess = gAccess;
    gatherVfs.xFullPathname = gFullPathname;
    gatherVfs.xDlOpen = gDlOpen;
    gatherVfs.xDlError = gDlError;
    gatherVfs.xDlSym = gDlSym;
    gatherVfs.xDlClose = gDlClose;
    gatherVfs.xRandomness = gRandomness;
    gatherVfs.xSleep = gSleep;
    gatherVfs.xCurrentTime = gCurrentTime;
    gatherVfs.xGetLastError = gGetLastError;
    gatherVfs.xCurrentTimeInt64 = gCurrentTimeInt64;
    gatherVfs.xSetSystemCall = gSetSystemCall;
    gatherVfs.xGetSystemCall = gGetSystemCall;
    gatherVfs.xNextSystemCall = gNextSystemCall;
    int rc = sqlite3_vfs_register(&gatherVfs, 1);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_auto_extension((void (*)(void))addStats);
    if (rc != SQLITE_OK) return rc;
  }
  int rc = addStats(db, err, api);
  return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
