/*
 * LD_PRELOAD shim for the DTLS benchmarks (scripts/bench-dtls.sh): libcoap's
 * OpenSSL back end sets its own cipher list ("PSK:!NULL", "TLSv1.3:TLSv1.2:!NULL")
 * after OpenSSL has read OPENSSL_CONF, so a CipherString there cannot pick the
 * suite. With WASMDM_FORCE_CIPHERS set, every SSL_CTX_set_cipher_list /
 * SSL_set_cipher_list call gets that list instead (e.g.
 * "PSK-AES128-CCM8:@SECLEVEL=0"), so libcoap negotiates the same suite as
 * wasmdm (TLS_PSK_WITH_AES_128_CCM_8, TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8).
 *
 *   cc -shared -fPIC -O2 -o force_ciphers.so force_ciphers.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>

typedef int (*set_list_fn)(void *, const char *);

static const char *pick(const char *asked) {
    const char *forced = getenv("WASMDM_FORCE_CIPHERS");
    return forced && *forced ? forced : asked;
}

int SSL_CTX_set_cipher_list(void *ctx, const char *str) {
    static set_list_fn real;
    if (!real) real = (set_list_fn)dlsym(RTLD_NEXT, "SSL_CTX_set_cipher_list");
    return real(ctx, pick(str));
}

int SSL_set_cipher_list(void *ssl, const char *str) {
    static set_list_fn real;
    if (!real) real = (set_list_fn)dlsym(RTLD_NEXT, "SSL_set_cipher_list");
    return real(ssl, pick(str));
}
