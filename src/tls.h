/* A certificate chain and its private key for the built-in server's HTTPS
 * (GnuTLS, as Debian's libmicrohttpd links it). Loaded from PEM text, checked
 * to belong together, handed to GnuTLS per handshake by http_server.c's
 * certificate callback, so that a renewed certificate can replace the old one
 * while the server runs (SIGHUP in `biconnector serve`). */
#ifndef BIC_TLS_H
#define BIC_TLS_H

#include <stddef.h>
#include <gnutls/gnutls.h>
#include <gnutls/abstract.h>

/* TLS 1.2 and 1.3 only, GnuTLS's NORMAL ciphers otherwise. */
#define BIC_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

typedef struct bic_tls {
  struct bic_tls *older; /* replaced credentials, kept while a session may still use them */
  gnutls_pcert_st *certs;
  unsigned int ncerts;
  gnutls_privkey_t key;
} bic_tls;

/* Loads a PEM chain (the server's certificate first) and its PEM key. Returns
 * the credentials, or NULL with a message in err (the key's bytes never appear). */
bic_tls *bic_tls_load(const char *cert, size_t cert_len, const char *key, size_t key_len,
                      char *err, size_t errlen);

/* What a certificate of a chain says, for the warnings at start (serve). */
typedef struct bic_tls_cert_info {
  char subject[256]; /* RFC 4514, cut to fit */
  char issuer[256];
  long long not_before, not_after; /* seconds since the epoch; -1 unknown */
  int self_signed; /* the issuer's name is the subject's */
} bic_tls_cert_info;

/* Describes up to max certificates of a PEM chain into out. Returns how many,
 * or -1 with a message in err. */
int bic_tls_describe(const char *cert, size_t cert_len, bic_tls_cert_info *out, unsigned int max,
                     char *err, size_t errlen);

/* Frees tls and every older generation it holds; NULL is fine. */
void bic_tls_free(bic_tls *tls);

#endif
