#ifndef MESH_IO_H
#define MESH_IO_H

#include <stddef.h>
#include <sys/socket.h>

/// One datagram of a batch: `length` bytes at `offset` in the batch's byte buffer, to `address`. `error` is set
/// to the errno of a datagram the kernel refused (0 when it went out).
struct mesh_datagram {
    size_t offset;
    size_t length;
    struct sockaddr_storage address;
    socklen_t address_length;
    int error;
};

/// Sends `count` datagrams with as few sendmmsg calls as the kernel allows; consecutive datagrams of one size to
/// one destination (contiguous in `bytes`) go as one UDP GSO message (UDP_SEGMENT), the kernel cutting them apart.
/// A datagram the kernel refuses is marked (its `error`) and skipped; the rest still go. Returns how many were
/// refused.
unsigned mesh_send_batch(int fd, const unsigned char *bytes, struct mesh_datagram *datagrams, unsigned count);

#endif
