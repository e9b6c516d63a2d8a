/*
 * A C host of thresig: three signer handles (one per member) and the
 * sans-IO coordinator handle run a 2-of-3 DKG and a Taproot signature,
 * relayed through JSON envelopes by this program.
 *
 * Usage: dkg_sign WALLET CONFIG1 CONFIG2 CONFIG3
 * Prints the signature of its one input, the message signed, the key and
 * the PSBT ("signature HEX", "message HEX", "key HEX", "psbt BASE64"),
 * which the Rust test verifies with libsecp256k1.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "thresig.h"

#define MEMBERS 3

static ThresigSigner *members[MEMBERS];

static void fail(const char *what, const char *detail) {
    fprintf(stderr, "dkg_sign: %s: %s\n", what, detail ? detail : "");
    exit(1);
}

/* A NUL-terminated copy of a returned buffer, which is then freed. */
static char *take(uint8_t *buf, size_t len) {
    char *text = malloc(len + 1);
    if (!text) fail("out of memory", NULL);
    memcpy(text, buf, len);
    text[len] = '\0';
    thresig_free(buf, len);
    return text;
}

/* The end of the JSON value starting at p (just past it). */
static const char *skip_value(const char *p) {
    int depth = 0;
    int in_string = 0;
    for (; *p; p++) {
        char c = *p;
        if (in_string) {
            if (c == '\\') p++;
            else if (c == '"') {
                in_string = 0;
                if (depth == 0) return p + 1;
            }
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return p;
            if (--depth == 0) return p + 1;
        } else if (depth == 0 && (c == ',')) {
            return p;
        }
    }
    return p;
}

/* The value of the top-level member `key` of the object at obj, or NULL. */
static const char *member(const char *obj, const char *key) {
    size_t key_len = strlen(key);
    const char *p = strchr(obj, '{');
    if (!p) return NULL;
    p++;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\n') p++;
        if (*p != '"') return NULL;
        const char *name = p + 1;
        const char *name_end = skip_value(p) - 1;
        p = name_end + 1;
        while (*p == ' ' || *p == ':') p++;
        if ((size_t)(name_end - name) == key_len && strncmp(name, key, key_len) == 0) return p;
        p = skip_value(p);
    }
    return NULL;
}

/* A copy of the JSON value at p. */
static char *value_copy(const char *p) {
    const char *end = skip_value(p);
    size_t len = (size_t)(end - p);
    char *out = malloc(len + 1);
    if (!out) fail("out of memory", NULL);
    memcpy(out, p, len);
    out[len] = '\0';
    return out;
}

/* A copy of the JSON string at p, without its quotes (no escapes in the
 * hex and base64 strings read here). */
static char *string_copy(const char *p, const char *what) {
    if (!p || *p != '"') fail("not a string", what);
    char *quoted = value_copy(p);
    size_t len = strlen(quoted);
    memmove(quoted, quoted + 1, len - 2);
    quoted[len - 2] = '\0';
    return quoted;
}

static char *call_signer(int seat, const char *request) {
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (thresig_call(members[seat - 1], (const uint8_t *)request, strlen(request), &out, &out_len) != THRESIG_OK)
        fail("thresig_call returned no envelope", request);
    return take(out, out_len);
}

/* The transmitted envelope with `from` set to `seat`, as a host sets it:
 * from its own authentication of the peer that sent it, never from the
 * peer's bytes (a transmit carries no `from`). The library writes the
 * request object compactly, so its key is found as is. */
static char *with_from(const char *envelope, int seat) {
    const char *key = "\"request\":{";
    const char *at = strstr(envelope, key);
    if (!at) fail("a transmit without a request object", envelope);
    int head = (int)(at - envelope + (ptrdiff_t)strlen(key));
    size_t size = strlen(envelope) + 32;
    char *out = malloc(size);
    if (!out) fail("out of memory", NULL);
    snprintf(out, size, "%.*s\"from\":%d,%s", head, envelope, seat, envelope + head);
    return out;
}

static char *call_coordinator(ThresigCoordinator *c, const char *request) {
    uint8_t *out = NULL;
    size_t out_len = 0;
    if (thresig_coordinator_call(c, (const uint8_t *)request, strlen(request), &out, &out_len) != THRESIG_OK)
        fail("thresig_coordinator_call returned no envelope", request);
    char *response = take(out, out_len);
    if (!member(response, "ok")) fail("coordinator refused", response);
    return response;
}

static ThresigCoordinator *open_coordinator(const char *setup) {
    ThresigCoordinator *c = NULL;
    uint8_t *err = NULL;
    size_t err_len = 0;
    if (thresig_coordinator_open((const uint8_t *)setup, strlen(setup), &c, &err, &err_len) != THRESIG_OK)
        fail("thresig_coordinator_open", take(err, err_len));
    return c;
}

/* Relays the coordinator's requests to the members until it reports an
 * event of type `done_type`; returns that event. */
static char *drive(ThresigCoordinator *c, const char *done_type, long now_ms) {
    for (int rounds = 0; rounds < 1000; rounds++) {
        int moved = 0;
        for (;;) {
            char *polled = call_coordinator(c, "{\"version\":1,\"op\":\"poll_transmit\"}");
            const char *transmit = member(polled, "ok");
            if (strncmp(transmit, "null", 4) == 0) {
                free(polled);
                break;
            }
            moved = 1;
            int to = atoi(member(transmit, "to"));
            long tag = atol(member(transmit, "tag"));
            if (to < 1 || to > MEMBERS) fail("transmit to an unknown member", polled);
            char *sent = value_copy(member(transmit, "envelope"));
            /* Member 1 coordinates. */
            char *envelope = with_from(sent, 1);
            free(sent);
            char *response = call_signer(to, envelope);
            size_t size = strlen(response) + 128;
            char *reply = malloc(size);
            if (!reply) fail("out of memory", NULL);
            snprintf(reply, size,
                     "{\"version\":1,\"op\":\"handle_reply\",\"request\":{\"from\":%d,\"tag\":%ld,"
                     "\"now_ms\":%ld,\"response\":%s}}",
                     to, tag, now_ms, response);
            free(call_coordinator(c, reply));
            free(reply);
            free(response);
            free(envelope);
            free(polled);
        }
        for (;;) {
            char *polled = call_coordinator(c, "{\"version\":1,\"op\":\"poll_event\"}");
            const char *event = member(polled, "ok");
            if (strncmp(event, "null", 4) == 0) {
                free(polled);
                break;
            }
            char *type = string_copy(member(event, "type"), "event type");
            if (strcmp(type, "failed") == 0) fail("the run failed", polled);
            if (strcmp(type, done_type) == 0) {
                char *done = value_copy(event);
                free(type);
                free(polled);
                return done;
            }
            free(type);
            free(polled);
        }
        if (!moved) fail("the coordinator is idle without a result", done_type);
    }
    fail("the run did not finish", done_type);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2 + MEMBERS) fail("usage", "dkg_sign WALLET CONFIG1 CONFIG2 CONFIG3");
    const char *wallet = argv[1];
    if (thresig_abi_version() != 1) fail("unexpected ABI version", NULL);
    for (int i = 0; i < MEMBERS; i++) {
        uint8_t *err = NULL;
        size_t err_len = 0;
        const char *path = argv[2 + i];
        if (thresig_open((const uint8_t *)path, strlen(path), &members[i], &err, &err_len) != THRESIG_OK)
            fail("thresig_open", take(err, err_len));
    }

    /* The DKG, relayed by member 1's coordinator. */
    char setup[8192];
    snprintf(setup, sizeof setup, "{\"kind\":\"dkg\",\"config_path\":\"%s\",\"wallet\":\"%s\"}", argv[2], wallet);
    ThresigCoordinator *dkg = open_coordinator(setup);
    char *done = drive(dkg, "dkg_done", 0);
    char *dkg_key = string_copy(member(done, "output_key"), "output_key");
    free(done);
    thresig_coordinator_close(dkg);

    /* The wallet's key record, epoch and output key, from member 1. */
    char request[8192];
    snprintf(request, sizeof request,
             "{\"version\":1,\"op\":\"wallet_key\",\"request\":{\"from\":1,\"wallet\":\"%s\"}}", wallet);
    char *answer = call_signer(1, request);
    if (!member(answer, "ok")) fail("wallet_key", answer);
    char *key = string_copy(member(member(answer, "ok"), "key"), "key");
    free(answer);
    snprintf(request, sizeof request,
             "{\"version\":1,\"op\":\"status\",\"request\":{\"from\":1,\"wallet\":\"%s\"}}", wallet);
    answer = call_signer(1, request);
    if (!member(answer, "ok")) fail("status", answer);
    long epoch = atol(member(member(answer, "ok"), "epoch"));
    char *output_key = string_copy(member(member(answer, "ok"), "output_key"), "output_key");
    free(answer);
    if (strcmp(output_key, dkg_key) != 0) fail("the DKG's key is not the wallet's", output_key);

    /* A PSBT spending one output of the wallet back to itself. */
    snprintf(request, sizeof request,
             "{\"version\":1,\"op\":\"psbt_build\",\"request\":{\"wallet\":\"%s\",\"inputs\":[{\"txid\":"
             "\"1111111111111111111111111111111111111111111111111111111111111111\",\"vout\":0,"
             "\"value_sat\":60000,\"script_pubkey\":\"5120%s\"}],\"outputs\":[{\"script_pubkey\":"
             "\"5120%s\",\"value_sat\":59000}]}}",
             wallet, output_key, output_key);
    answer = call_signer(1, request);
    if (!member(answer, "ok")) fail("psbt_build", answer);
    char *psbt = string_copy(member(member(answer, "ok"), "psbt"), "psbt");
    free(answer);

    /* The signature, coordinated by member 1 with this program's clock. */
    size_t size = strlen(key) + strlen(psbt) + 1024;
    char *sign_setup = malloc(size);
    if (!sign_setup) fail("out of memory", NULL);
    snprintf(sign_setup, size,
             "{\"kind\":\"sign\",\"config_path\":\"%s\",\"wallet\":\"%s\",\"key\":\"%s\",\"epoch\":%ld,"
             "\"psbt\":\"%s\",\"now_ms\":1000}",
             argv[2], wallet, key, epoch, psbt);
    ThresigCoordinator *signing = open_coordinator(sign_setup);
    done = drive(signing, "done", 1000);
    thresig_coordinator_close(signing);
    const char *signature = member(done, "signatures");
    const char *message = member(done, "messages");
    /* One input: the first element of each array. */
    char *sig = string_copy(signature + 1, "signature");
    char *msg = string_copy(message + 1, "message");
    char *out_key = string_copy(member(done, "output_key"), "output_key");
    printf("signature %s\nmessage %s\nkey %s\npsbt %s\n", sig, msg, out_key, psbt);

    free(sig);
    free(msg);
    free(out_key);
    free(done);
    free(sign_setup);
    free(psbt);
    free(key);
    free(output_key);
    free(dkg_key);
    for (int i = 0; i < MEMBERS; i++) thresig_close(members[i]);
    return 0;
}
