/* HTTPS credentials for the built-in server (see tls.h). */
#include "tls.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <gnutls/x509.h>

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

/* Whether the PEM text holds an encrypted private key: PKCS#8's
 * "ENCRYPTED PRIVATE KEY", or the traditional OpenSSL "Proc-Type: 4,ENCRYPTED". */
static int key_is_encrypted(const char *key, size_t key_len) {
  static const char *const marks[] = {"-----BEGIN ENCRYPTED PRIVATE KEY-----", "Proc-Type: 4,ENCRYPTED"};
  size_t m, i;
  for (m = 0; m < sizeof marks / sizeof marks[0]; m++) {
    size_t n = strlen(marks[m]);
    for (i = 0; i + n <= key_len; i++) {
      if (key[i] == marks[m][0] && memcmp(key + i, marks[m], n) == 0) return 1;
    }
  }
  return 0;
}

/* A distinguished name into buf (cut to fit), "?" when there is none. */
static void copy_dn(const gnutls_datum_t *dn, int rc, char *buf, size_t size) {
  if (rc < 0 || dn->data == NULL) {
    snprintf(buf, size, "?");
    return;
  }
  snprintf(buf, size, "%.*s", (int)dn->size, (const char *)dn->data);
}

int bic_tls_describe(const char *cert, size_t cert_len, bic_tls_cert_info *out, unsigned int max,
                     char *err, size_t errlen) {
  gnutls_datum_t cert_d;
  gnutls_x509_crt_t *list = NULL;
  unsigned int n = 0, i;
  int rc;
  if (cert_len > 0xffffffu) {
    snprintf(err, errlen, "the certificate is larger than 16 MiB");
    return -1;
  }
  cert_d.data = (unsigned char *)(uintptr_t)cert;
  cert_d.size = (unsigned int)cert_len;
  rc = gnutls_x509_crt_list_import2(&list, &n, &cert_d, GNUTLS_X509_FMT_PEM, 0);
  if (rc < 0) {
    set_error(err, errlen, "cannot read the certificate chain", rc);
    return -1;
  }
  for (i = 0; i < n; i++) {
    if (i < max) {
      gnutls_datum_t dn = {NULL, 0};
      time_t t;
      rc = gnutls_x509_crt_get_dn3(list[i], &dn, 0);
      copy_dn(&dn, rc, out[i].subject, sizeof out[i].subject);
      gnutls_free(dn.data);
      dn.data = NULL;
      rc = gnutls_x509_crt_get_issuer_dn3(list[i], &dn, 0);
      copy_dn(&dn, rc, out[i].issuer, sizeof out[i].issuer);
      gnutls_free(dn.data);
      t = gnutls_x509_crt_get_activation_time(list[i]);
      out[i].not_before = t == (time_t)-1 ? -1 : (long long)t;
      t = gnutls_x509_crt_get_expiration_time(list[i]);
      out[i].not_after = t == (time_t)-1 ? -1 : (long long)t;
      out[i].self_signed = gnutls_x509_crt_check_issuer(list[i], list[i]) == 1;
    }
    gnutls_x509_crt_deinit(list[i]);
  }
  gnutls_free(list);
  return (int)(n < max ? n : max);
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
  if (key_is_encrypted(key, key_len)) {
    /* GnuTLS would say only "Decryption has failed." */
    snprintf(err, errlen, "the private key is encrypted (protected by a passphrase), and a server cannot ask for one");
    return NULL;
  }
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
