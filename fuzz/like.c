/* Differential target: bic_like (src/like.c) against SQLite's own like() on the
 * same pattern, subject and escape. Any disagreement is a crash.
 * Input: byte 0 = flags (bit 0: ESCAPE '!'), byte 1 = the pattern's length
 * (taken modulo what is left), then the pattern, then the subject. */
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql.h"

static sqlite3 *db;
static sqlite3_stmt *with_escape, *without_escape;

static void setup(void) {
  if (db != NULL) return;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "SELECT ?2 LIKE ?1 ESCAPE '!'", -1, &with_escape, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db, "SELECT ?2 LIKE ?1", -1, &without_escape, NULL) != SQLITE_OK)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int escape, want, got;
  size_t plen, n;
  const char *pattern, *subject;
  sqlite3_stmt *st;
  setup();
  if (size < 2) return 0;
  escape = data[0] & 1;
  n = size - 2;
  plen = n ? data[1] % (n + 1) : 0;
  pattern = (const char *)data + 2;
  subject = pattern + plen;
  /* SQLite reads its text up to a NUL: compare what it sees */
  if (memchr(pattern, 0, plen) != NULL || memchr(subject, 0, n - plen) != NULL) return 0;
  st = escape ? with_escape : without_escape;
  sqlite3_reset(st);
  sqlite3_bind_text(st, 1, pattern, (int)plen, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, subject, (int)(n - plen), SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_ROW) return 0; /* a pattern SQLite refuses (too long) */
  want = sqlite3_column_int(st, 0);
  got = bic_like(pattern, plen, subject, n - plen, escape ? "!" : NULL, escape ? 1 : 0, NULL);
  if (got != want) {
    fprintf(stderr, "like disagrees with SQLite: ours %d, SQLite %d, escape %d, pattern %zu bytes, subject %zu bytes\n",
            got, want, escape, plen, n - plen);
    abort();
  }
  return 0;
}
