#define _GNU_SOURCE
#include "CBatchIO.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

int batchio_receive(int fd, unsigned char *buffer, int slot, int count, int *lengths, unsigned short *ports, long timeout_ns) {
    if (count > BATCHIO_MAX) count = BATCHIO_MAX;
    if (timeout_ns > 0) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        struct timespec wait = { .tv_sec = timeout_ns / 1000000000L, .tv_nsec = timeout_ns % 1000000000L };
        if (ppoll(&p, 1, &wait, NULL) <= 0) return 0;
    }
    struct mmsghdr headers[BATCHIO_MAX];
    struct iovec iov[BATCHIO_MAX];
    struct sockaddr_in from[BATCHIO_MAX];
    memset(headers, 0, sizeof(struct mmsghdr) * count);
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = buffer + (long)i * slot;
        iov[i].iov_len = slot;
        headers[i].msg_hdr.msg_iov = &iov[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &from[i];
        headers[i].msg_hdr.msg_namelen = sizeof from[i];
    }
    int n = recvmmsg(fd, headers, count, MSG_DONTWAIT, NULL);
    for (int i = 0; i < n; i++) {
        lengths[i] = (int)headers[i].msg_len;
        ports[i] = ntohs(from[i].sin_port);
    }
    return n < 0 ? 0 : n;
}

int batchio_send(int fd, unsigned char *buffer, int slot, const int *lengths, const unsigned short *ports, int count) {
    if (count > BATCHIO_MAX) count = BATCHIO_MAX;
    struct mmsghdr headers[BATCHIO_MAX];
    struct iovec iov[BATCHIO_MAX];
    struct sockaddr_in to[BATCHIO_MAX];
    memset(headers, 0, sizeof(struct mmsghdr) * count);
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = buffer + (long)i * slot;
        iov[i].iov_len = lengths[i];
        to[i] = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons(ports[i]) };
        to[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        headers[i].msg_hdr.msg_iov = &iov[i];
        headers[i].msg_hdr.msg_iovlen = 1;
        headers[i].msg_hdr.msg_name = &to[i];
        headers[i].msg_hdr.msg_namelen = sizeof to[i];
    }
    int refused = 0;
    for (int done = 0; done < count;) {
        int sent = sendmmsg(fd, headers + done, count - done, 0);
        if (sent > 0) {
            done += sent;
        } else if (errno != EINTR) {
            refused++;
            done++;
        }
    }
    return refused;
}
