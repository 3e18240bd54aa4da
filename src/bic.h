/* Shared declarations of the biconnector C core (biconnector/core.so). */
#ifndef BIC_H
#define BIC_H

#include "compat.h"

#define BIC_VERSION "0.2.0"

/* Only luaopen_biconnector_core is exported; everything else is hidden. */
#define BIC_EXPORT __attribute__((visibility("default")))

/* Each part of the core adds itself to the module table at the top of the stack
 * (for example core.json = {...}) and returns 0, leaving the stack as it found it. */
int bic_open_json(lua_State *L);
int bic_open_form(lua_State *L);
int bic_open_rows(lua_State *L);
int bic_open_http_client(lua_State *L);
int bic_open_http_server(lua_State *L);
int bic_open_sql(lua_State *L);
int bic_open_sha256(lua_State *L);
int bic_open_os(lua_State *L); /* last: it adds the older names to core.http and core.process */

/* The urlData row encoder's C entry (rows.c), for rows a database hands out. */
struct bic_sql_value;
typedef struct rows_encoder rows_encoder;
rows_encoder *bic_rows_check(lua_State *L, int idx); /* an open encoder, or raises */
int bic_rows_width(const rows_encoder *e);
size_t bic_rows_pending(const rows_encoder *e);
int bic_rows_add_values(rows_encoder *e, const struct bic_sql_value *v, int n, int *bad_col, char *why,
                        size_t whylen);
/* For rows encoded on another thread (sql_job.c): a C-owned copy of e's
 * settings, its buffer, and moving encoded text into an encoder. */
struct bic_buffer;
rows_encoder *bic_rows_clone(const rows_encoder *e);
void bic_rows_free(rows_encoder *e);
struct bic_buffer *bic_rows_buffer(rows_encoder *e);
int bic_rows_put(rows_encoder *e, struct bic_buffer *src, size_t off, size_t n, double nrows);

/* Waits up to seconds until no thread of sql_job.c is inside a client library
 * (a job's thread alive, the service thread cancelling) -> how many still are.
 * core.process.fork calls it: a child that uses a database must not inherit a
 * library's lock (SQLite's allocator mutex, say) held by a thread it lacks. */
int bic_sql_settle(double seconds);

#endif
