#define _GNU_SOURCE
#include "mesh_io.h"

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

enum { chunk = 64 };

unsigned mesh_send_batch(int fd, const unsigned char *bytes, struct mesh_datagram *datagrams, unsigned count) {
    struct mmsghdr headers[chunk];
    struct iovec vectors[chunk];
    unsigned refused = 0;
    unsigned next = 0;
    while (next < count) {
        unsigned n = count - next < chunk ? count - next : chunk;
        memset(headers, 0, sizeof(struct mmsghdr) * n);
        for (unsigned i = 0; i < n; i++) {
            struct mesh_datagram *d = &datagrams[next + i];
            d->error = 0;
            vectors[i].iov_base = (void *)(bytes + d->offset);
            vectors[i].iov_len = d->length;
            headers[i].msg_hdr.msg_iov = &vectors[i];
            headers[i].msg_hdr.msg_iovlen = 1;
            headers[i].msg_hdr.msg_name = &d->address;
            headers[i].msg_hdr.msg_namelen = d->address_length;
        }
        int sent;
        do {
            sent = sendmmsg(fd, headers, n, 0);
        } while (sent < 0 && errno == EINTR);
        if (sent <= 0) {
            /* The first datagram of the chunk was refused: mark it and go on with the next. */
            datagrams[next].error = sent < 0 ? errno : EAGAIN;
            refused++;
            next++;
        } else {
            next += (unsigned)sent;
        }
    }
    return refused;
}
