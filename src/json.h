/* JSON writing primitives shared by the JSON encoder and the urlData row encoder. */
#ifndef BIC_JSON_H
#define BIC_JSON_H

#include "buffer.h"

/* Flags for bic_json_put_string. */
#define BIC_JSON_REPLACE_INVALID 1 /* replace invalid UTF-8 by U+FFFD instead of failing */

/* Append s[0..len) as a quoted JSON string, escaping only what JSON requires
 * (quote, backslash, control characters); '/' and non-ASCII stay as they are.
 * Returns 0; -1 when memory is exhausted; -2 when s is not valid UTF-8 (and
 * BIC_JSON_REPLACE_INVALID is not set). On failure b->len is unspecified. */
int bic_json_put_string(bic_buffer *b, const char *s, size_t len, int flags);

/* Append a finite double in the shortest form that reads back to the same value.
 * Returns 0; -1 when memory is exhausted; -2 for NaN or an infinity. */
int bic_json_put_double(bic_buffer *b, double d);

/* Append a 64-bit integer in decimal. Returns 0, or -1 when memory is exhausted. */
int bic_json_put_integer(bic_buffer *b, long long v);

/* Whether s[0..len) is well-formed UTF-8 (what bic_json_put_string accepts). */
int bic_utf8_valid(const char *s, size_t len);

#endif
