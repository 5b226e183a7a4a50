#ifndef CBATCHIO_H
#define CBATCHIO_H

/// Batched UDP on 127.0.0.1 for ForwardLoad (recvmmsg, sendmmsg and ppoll, which Swift's Glibc module does not
/// export). Datagram i sits in `buffer + i * slot`.

/// The most datagrams one call moves.
#define BATCHIO_MAX 64

/// Waits up to `timeout_ns` (0: not at all) for the socket to be readable, then reads up to `count` datagrams without
/// blocking: their lengths and source ports. Returns how many were read (0 on timeout or error).
int batchio_receive(int fd, unsigned char *buffer, int slot, int count, int *lengths, unsigned short *ports, long timeout_ns);

/// Sends `count` datagrams to 127.0.0.1:ports[i] (the socket blocks while its send buffer is full). Returns how many
/// the kernel refused.
int batchio_send(int fd, unsigned char *buffer, int slot, const int *lengths, const unsigned short *ports, int count);

#endif
