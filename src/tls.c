/* HTTPS credentials for the built-in server (see tls.h). */
#include "tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A chain longer than this is not a server's chain (certbot's fullchain.pem holds 2 or 3). */
#define MAX_CHAIN 16

static void set_error(char *err, size_t errlen, const char *what, int rc) {
  snprintf(err, errlen, "%s: %s", what, gnutls_strerror(rc));
}

void bic_tls_free(bic_tls *tls) {
  while (tls != NULL) {
    bic_tls *older = tls->older;
    unsigned int i;
    for (i = 0; i < tls->ncerts; i++) gnutls_pcert_deinit(&tls->certs[i]);
    free(tls->certs);
    if (tls->key != NULL) gnutls_privkey_deinit(tls->key);
    free(tls);
    tls = older;
  }
}

bic_tls *bic_tls_load(const char *cert, size_t cert_len, const char *key, size_t key_len,
                      char *err, size_t errlen) {
  gnutls_datum_t cert_d, key_d;
  gnutls_certificate_credentials_t check;
  bic_tls *tls;
  unsigned int n = MAX_CHAIN;
  int rc;
  if (cert_len > 0xffffffu || key_len > 0xffffffu) {
    snprintf(err, errlen, "the certificate or the key is larger than 16 MiB");
    return NULL;
  }
  cert_d.data = (unsigned char *)(uintptr_t)cert;
  cert_d.size = (unsigned int)cert_len;
  key_d.data = (unsigned char *)(uintptr_t)key;
  key_d.size = (unsigned int)key_len;
  /* GnuTLS's own loader checks both and that the key belongs to the certificate */
  if ((rc = gnutls_certificate_allocate_credentials(&check)) < 0) {
    set_error(err, errlen, "cannot check the certificate", rc);
    return NULL;
  }
  rc = gnutls_certificate_set_x509_key_mem2(check, &cert_d, &key_d, GNUTLS_X509_FMT_PEM, NULL, 0);
  gnutls_certificate_free_credentials(check);
  if (rc < 0) {
    set_error(err, errlen, "the certificate and key are not a usable pair", rc);
    return NULL;
  }
  tls = (bic_tls *)calloc(1, sizeof *tls);
  if (tls == NULL || (tls->certs = (gnutls_pcert_st *)calloc(MAX_CHAIN, sizeof *tls->certs)) == NULL) {
    free(tls);
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  rc = gnutls_pcert_list_import_x509_raw(tls->certs, &n, &cert_d, GNUTLS_X509_FMT_PEM,
                                         GNUTLS_X509_CRT_LIST_FAIL_IF_UNSORTED);
  if (rc < 0) {
    bic_tls_free(tls);
    set_error(err, errlen, "cannot read the certificate chain", rc);
    return NULL;
  }
  tls->ncerts = n;
  if ((rc = gnutls_privkey_init(&tls->key)) < 0 ||
      (rc = gnutls_privkey_import_x509_raw(tls->key, &key_d, GNUTLS_X509_FMT_PEM, NULL, 0)) < 0) {
    bic_tls_free(tls);
    set_error(err, errlen, "cannot read the private key", rc);
    return NULL;
  }
  return tls;
}
