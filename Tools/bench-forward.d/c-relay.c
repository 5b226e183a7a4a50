/*
 * The baseline relay of Tools/bench-forward: what a well-written relay without crypto achieves on one core.
 *
 * One UDP socket on 127.0.0.1. Datagrams are read in batches of 64 (recvmmsg). A data datagram is
 * [label u32 BE][bytes]: the label is looked up in an open-addressing hash table, rewritten to the session's
 * outgoing label, and the datagram goes to the session's destination; a batch goes out with one sendmmsg.
 * A control datagram [0xFF 'C' 'T' 'L'][destination port u16][count u16][(in label u32, out label u32) x count]
 * installs sessions (destination 127.0.0.1:port) and is answered with [0xFF 'A' 'C' 'K'][sessions u32].
 *
 * Usage: c-relay [PORT]    (0 or none: the kernel picks; the port is printed as "port N" on stdout)
 * SIGTERM or SIGINT: prints its counters on stderr and exits 0 (so valgrind tools write their output).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BATCH 64
#define SLOT 2048

struct entry {
    uint32_t in;    /* 0: empty */
    uint32_t out;
    struct sockaddr_in to;
};

static struct entry *table;
static size_t capacity, used;
static volatile sig_atomic_t stopping;

static void on_signal(int sig) { (void)sig; stopping = 1; }

static size_t slot_of(uint32_t label) { return (size_t)(label * 0x9E3779B1u) & (capacity - 1); }

static struct entry *lookup(uint32_t label) {
    for (size_t i = slot_of(label);; i = (i + 1) & (capacity - 1)) {
        if (table[i].in == label) return &table[i];
        if (table[i].in == 0) return NULL;
    }
}

static void insert(uint32_t in, uint32_t out, const struct sockaddr_in *to);

static void grow(void) {
    struct entry *old = table;
    size_t old_capacity = capacity;
    capacity = capacity ? capacity * 2 : 1024;
    table = calloc(capacity, sizeof *table);
    if (!table) { perror("calloc"); exit(1); }
    used = 0;
    for (size_t i = 0; i < old_capacity; i++)
        if (old[i].in) insert(old[i].in, old[i].out, &old[i].to);
    free(old);
}

static void insert(uint32_t in, uint32_t out, const struct sockaddr_in *to) {
    if (in == 0) return;
    if ((used + 1) * 2 > capacity) grow();
    size_t i = slot_of(in);
    while (table[i].in && table[i].in != in) i = (i + 1) & (capacity - 1);
    if (!table[i].in) used++;
    table[i].in = in;
    table[i].out = out;
    table[i].to = *to;
}

static uint32_t be32(const unsigned char *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

static void put32(unsigned char *p, uint32_t v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }

int main(int argc, char **argv) {
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0) { perror("socket"); return 1; }
    int size = 4 << 20;
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof size)) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof size)) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    struct sockaddr_in self = { .sin_family = AF_INET, .sin_port = htons(argc > 1 ? atoi(argv[1]) : 0) };
    self.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t self_len = sizeof self;
    if (bind(fd, (struct sockaddr *)&self, sizeof self) || getsockname(fd, (struct sockaddr *)&self, &self_len)) {
        perror("bind");
        return 1;
    }
    struct sigaction action = { .sa_handler = on_signal };  /* no SA_RESTART: recvmmsg returns EINTR */
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGINT, &action, NULL);
    grow();
    printf("port %d\n", ntohs(self.sin_port));
    fflush(stdout);

    static unsigned char in_buf[BATCH][SLOT];
    static struct iovec in_iov[BATCH], out_iov[BATCH];
    static struct mmsghdr in_msg[BATCH], out_msg[BATCH];
    static struct sockaddr_in from[BATCH];
    for (int i = 0; i < BATCH; i++) {
        in_iov[i] = (struct iovec){ in_buf[i], SLOT };
        in_msg[i].msg_hdr.msg_iov = &in_iov[i];
        in_msg[i].msg_hdr.msg_iovlen = 1;
        in_msg[i].msg_hdr.msg_name = &from[i];
        out_msg[i].msg_hdr.msg_iov = &out_iov[i];
        out_msg[i].msg_hdr.msg_iovlen = 1;
        out_msg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
    }
    unsigned long long forwarded = 0, unknown = 0, batches = 0, send_errors = 0;
    while (!stopping) {
        for (int i = 0; i < BATCH; i++) in_msg[i].msg_hdr.msg_namelen = sizeof from[i];
        int n = recvmmsg(fd, in_msg, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR) continue;
            perror("recvmmsg");
            return 1;
        }
        batches++;
        int out = 0;
        for (int i = 0; i < n; i++) {
            unsigned char *d = in_buf[i];
            unsigned len = in_msg[i].msg_len;
            if (len >= 8 && d[0] == 0xFF && d[1] == 'C' && d[2] == 'T' && d[3] == 'L') {
                struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)(d[4] << 8 | d[5])) };
                to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                unsigned count = d[6] << 8 | d[7];
                for (unsigned k = 0; k < count && 8 + 8 * (k + 1) <= len; k++)
                    insert(be32(d + 8 + 8 * k), be32(d + 12 + 8 * k), &to);
                unsigned char ack[8] = { 0xFF, 'A', 'C', 'K' };
                put32(ack + 4, (uint32_t)used);
                sendto(fd, ack, sizeof ack, 0, (struct sockaddr *)&from[i], in_msg[i].msg_hdr.msg_namelen);
                continue;
            }
            struct entry *e = len >= 4 ? lookup(be32(d)) : NULL;
            if (!e) { unknown++; continue; }
            put32(d, e->out);
            out_iov[out] = (struct iovec){ d, len };
            out_msg[out].msg_hdr.msg_name = &e->to;
            out++;
        }
        for (int done = 0; done < out;) {
            int sent = sendmmsg(fd, out_msg + done, out - done, 0);
            if (sent > 0) done += sent;
            else if (errno != EINTR) { send_errors++; done++; }
        }
        forwarded += out;
    }
    fprintf(stderr, "c-relay: forwarded %llu, unknown label %llu, batches %llu, send errors %llu, sessions %zu\n",
            forwarded, unknown, batches, send_errors, used);
    return 0;
}
