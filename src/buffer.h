/* Growable byte buffer shared by the codecs. Never aborts: growth failures are
 * reported to the caller, which turns them into a Lua error or nil, err. */
#ifndef BIC_BUFFER_H
#define BIC_BUFFER_H

#include <stddef.h>
#include <string.h>
#include "compat.h"

typedef struct bic_buffer {
  char *data;
  size_t len;
  size_t cap;
} bic_buffer;

void bic_buffer_init(bic_buffer *b);
void bic_buffer_free(bic_buffer *b);
/* Make room for n more bytes; returns 0, or -1 when memory is exhausted. */
int bic_buffer_grow(bic_buffer *b, size_t n);

static inline int bic_buffer_put(bic_buffer *b, const void *p, size_t n) {
  if (n == 0) return 0; /* an empty buffer has no data pointer to add 0 to */
  if (b->cap - b->len < n && bic_buffer_grow(b, n) != 0) return -1;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static inline int bic_buffer_putc(bic_buffer *b, char c) {
  if (b->len == b->cap && bic_buffer_grow(b, 1) != 0) return -1;
  b->data[b->len++] = c;
  return 0;
}

#define bic_buffer_puts(b, lit) bic_buffer_put((b), (lit), sizeof(lit) - 1)

/* Percent-decodes s[0..n) into out (room for n + 1 bytes), NUL-terminated;
 * returns the decoded length. `%XX` is a byte, a malformed escape stays as is,
 * and `+` is a space when plus_is_space (PHP's urldecode), else a `+`. */
size_t bic_percent_decode(char *out, const char *s, size_t n, int plus_is_space);

/* A buffer owned by a full userdata pushed on the stack, freed by its __gc, so
 * that a Lua error raised while the buffer is in use never leaks it. */
bic_buffer *bic_buffer_push(lua_State *L);

#endif
