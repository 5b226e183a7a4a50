#define _GNU_SOURCE
#include "mesh_io.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <poll.h>
#include <string.h>
#include <sys/uio.h>

enum { chunk = 64, max_segments = 64, max_gso_bytes = 65000, max_segment_bytes = 1400 };

/* Whether datagram b may follow a in one UDP GSO send: same destination, contiguous bytes, and a's size (the
   kernel cuts the buffer into pieces of the first's size; only the last may be shorter). */
static int joins(const struct mesh_datagram *a, const struct mesh_datagram *b, size_t segment) {
    return b->address_length == a->address_length && memcmp(&b->address, &a->address, a->address_length) == 0
        && b->offset == a->offset + a->length && a->length == segment && b->length <= segment;
}

/* -1 once the kernel said it cannot segment at all (then every datagram goes alone). Only the node's event loop
   sends, so one writer. */
static int gso_state = 0;

unsigned mesh_send_batch(int fd, const unsigned char *bytes, struct mesh_datagram *datagrams, unsigned count) {
    struct mmsghdr headers[chunk];
    struct iovec vectors[chunk];
    unsigned first[chunk], runs[chunk];
    union {
        char buffer[CMSG_SPACE(sizeof(unsigned short))];
        struct cmsghdr align;
    } controls[chunk];
    unsigned refused = 0;
    unsigned next = 0;
    /* Datagrams before this index go one by one (a GSO message of theirs was refused). */
    unsigned plain_until = 0;
    for (unsigned i = 0; i < count; i++) datagrams[i].error = 0;
    while (next < count) {
        /* Up to `chunk` messages, each one datagram or, with GSO, a run of equal-sized ones to one destination. */
        unsigned n = 0;
        unsigned at = next;
        while (at < count && n < chunk) {
            const struct mesh_datagram *d = &datagrams[at];
            unsigned run = 1;
            size_t total = d->length;
            while (gso_state >= 0 && at >= plain_until && d->length <= max_segment_bytes && at + run < count && run < max_segments && total + d->length <= max_gso_bytes
                   && joins(&datagrams[at + run - 1], &datagrams[at + run], d->length)) {
                total += datagrams[at + run].length;
                run++;
            }
            memset(&headers[n], 0, sizeof(struct mmsghdr));
            vectors[n].iov_base = (void *)(bytes + d->offset);
            vectors[n].iov_len = total;
            headers[n].msg_hdr.msg_iov = &vectors[n];
            headers[n].msg_hdr.msg_iovlen = 1;
            headers[n].msg_hdr.msg_name = (void *)&d->address;
            headers[n].msg_hdr.msg_namelen = d->address_length;
            if (run > 1) {
                memset(controls[n].buffer, 0, sizeof(controls[n].buffer));
                headers[n].msg_hdr.msg_control = controls[n].buffer;
                headers[n].msg_hdr.msg_controllen = sizeof(controls[n].buffer);
                struct cmsghdr *c = CMSG_FIRSTHDR(&headers[n].msg_hdr);
                c->cmsg_level = SOL_UDP;
                c->cmsg_type = UDP_SEGMENT;
                c->cmsg_len = CMSG_LEN(sizeof(unsigned short));
                unsigned short segment = (unsigned short)d->length;
                memcpy(CMSG_DATA(c), &segment, sizeof(segment));
            }
            first[n] = at;
            runs[n] = run;
            at += run;
            n++;
        }
        int sent;
        do {
            sent = sendmmsg(fd, headers, n, 0);
        } while (sent < 0 && errno == EINTR);
        if (sent > 0) {
            next = first[sent - 1] + runs[sent - 1];
            continue;
        }
        int error = sent < 0 ? errno : EAGAIN;
        if (runs[0] > 1) {
            /* The GSO message was refused: its datagrams go again one by one, so that only the ones the kernel
               refuses alone are lost; a kernel or device that cannot segment at all gets no GSO from now on. */
            if (error == EIO || error == ENOPROTOOPT || error == EOPNOTSUPP) gso_state = -1;
            plain_until = first[0] + runs[0];
            continue;
        }
        /* The first message was refused: mark its datagrams and go on with the next. */
        for (unsigned i = 0; i < runs[0]; i++) datagrams[first[0] + i].error = error;
        refused += runs[0];
        next = first[0] + runs[0];
    }
    return refused;
}

int mesh_receive_batch(int fd, unsigned char *bytes, size_t slot, struct mesh_received *received, unsigned count, int timeout_ms) {
    struct mmsghdr headers[chunk];
    struct iovec vectors[chunk];
    if (count > chunk) count = chunk;
    struct pollfd readable = {.fd = fd, .events = POLLIN};
    int ready = poll(&readable, 1, timeout_ms);
    if (ready <= 0) return ready < 0 && errno != EINTR ? -1 : 0;
    memset(headers, 0, sizeof(struct mmsghdr) * count);
    for (unsigned i = 0; i < count; i++) {
        vectors[i].iov_base = bytes + i * slot;
        vectors[i].iov_len = slot;
        headers[i].msg_hdr.msg_iov = &vectors[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &received[i].address;
        headers[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
    }
    int n = recvmmsg(fd, headers, count, MSG_DONTWAIT, NULL);
    if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
    for (int i = 0; i < n; i++) {
        received[i].length = headers[i].msg_hdr.msg_flags & MSG_TRUNC ? 0 : headers[i].msg_len;
        received[i].address_length = headers[i].msg_hdr.msg_namelen;
    }
    return n;
}
