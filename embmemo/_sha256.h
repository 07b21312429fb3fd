/*
 * SHA-256 (FIPS 180-4) for embmemo._speedups when OpenSSL's libcrypto is not there at
 * build time, so a plain C compiler suffices (and wheels need no libcrypto). OpenSSL's
 * is used when it is, being faster on CPUs with SHA instructions.
 *
 * The interface mirrors OpenSSL's SHA256_Init/Update/Final on a copyable context.
 */
#ifndef EMBMEMO_SHA256_H
#define EMBMEMO_SHA256_H

#include <stdint.h>
#include <string.h>

typedef struct {
    uint32_t state[8];
    uint64_t length;       /* bytes hashed so far */
    unsigned char block[64];
    size_t used;           /* bytes waiting in block */
} embmemo_sha256;

static const uint32_t EMBMEMO_SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
};

#define EMBMEMO_ROTR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void embmemo_sha256_block(embmemo_sha256 *ctx, const unsigned char *p) {
    uint32_t w[64], s[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16
             | (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = EMBMEMO_ROTR(w[i - 15], 7) ^ EMBMEMO_ROTR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = EMBMEMO_ROTR(w[i - 2], 17) ^ EMBMEMO_ROTR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(s, ctx->state, sizeof s);
    for (int i = 0; i < 64; i++) {
        uint32_t e = s[4], a = s[0];
        uint32_t t1 = s[7] + (EMBMEMO_ROTR(e, 6) ^ EMBMEMO_ROTR(e, 11) ^ EMBMEMO_ROTR(e, 25))
                    + ((e & s[5]) ^ (~e & s[6])) + EMBMEMO_SHA256_K[i] + w[i];
        uint32_t t2 = (EMBMEMO_ROTR(a, 2) ^ EMBMEMO_ROTR(a, 13) ^ EMBMEMO_ROTR(a, 22))
                    + ((a & s[1]) ^ (a & s[2]) ^ (s[1] & s[2]));
        s[7] = s[6]; s[6] = s[5]; s[5] = s[4]; s[4] = s[3] + t1;
        s[3] = s[2]; s[2] = s[1]; s[1] = s[0]; s[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) ctx->state[i] += s[i];
}

static void embmemo_sha256_init(embmemo_sha256 *ctx) {
    static const uint32_t initial[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                        0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, initial, sizeof initial);
    ctx->length = 0;
    ctx->used = 0;
}

static void embmemo_sha256_update(embmemo_sha256 *ctx, const void *data, size_t size) {
    const unsigned char *p = (const unsigned char *)data;
    ctx->length += size;
    if (ctx->used) {
        size_t take = 64 - ctx->used < size ? 64 - ctx->used : size;
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take, p += take, size -= take;
        if (ctx->used < 64) return;
        embmemo_sha256_block(ctx, ctx->block);
        ctx->used = 0;
    }
    for (; size >= 64; p += 64, size -= 64) embmemo_sha256_block(ctx, p);
    memcpy(ctx->block, p, size);
    ctx->used = size;
}

static void embmemo_sha256_final(unsigned char *digest, embmemo_sha256 *ctx) {
    uint64_t bits = ctx->length * 8;
    unsigned char pad[72] = {0x80};
    size_t padding = (ctx->used < 56 ? 56 : 120) - ctx->used;
    for (int i = 0; i < 8; i++) pad[padding + i] = (unsigned char)(bits >> (56 - 8 * i));
    embmemo_sha256_update(ctx, pad, padding + 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (unsigned char)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (unsigned char)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (unsigned char)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (unsigned char)ctx->state[i];
    }
}

#endif
