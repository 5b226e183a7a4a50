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

/// One datagram read: `length` bytes in its slot of the batch's buffer (0: it was longer than the slot and is
/// dropped), from `address`.
struct mesh_received {
    size_t length;
    struct sockaddr_storage address;
    socklen_t address_length;
};

/// Waits up to `timeout_ms` for the socket to be readable, then reads up to `count` datagrams with one recvmmsg
/// (not blocking), datagram i into `bytes + i * slot`. Returns how many were read, 0 when none came in time, -1 on
/// an error (errno set).
int mesh_receive_batch(int fd, unsigned char *bytes, size_t slot, struct mesh_received *received, unsigned count, int timeout_ms);

#endif
