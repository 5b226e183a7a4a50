import Foundation
import MeshLink
import NIOCore

/// The node's UDP socket, bound here and handed to SwiftNIO for reading (`DatagramBootstrap.withBoundSocket`),
/// while datagrams go out through `sendto` directly.
///
/// Decision: SwiftNIO's datagram channel closes itself on any send error except EMSGSIZE and EHOSTUNREACH. A
/// node sends to many peers, and one send refused by a local firewall (EPERM), to a network that is not routed
/// (ENETUNREACH), or to an address of the wrong family must cost that one datagram, not the node's only socket
/// (which left the node running but deaf). Sending ourselves keeps each failure to its datagram; the owner
/// counts them.
struct UDPSocket {
    let descriptor: CInt

    /// A non-blocking UDP socket bound to `address`.
    init(binding address: SocketAddress) throws {
        let family = address.protocol.rawValue
        let fd = socket(family, CInt(SOCK_DGRAM.rawValue) | CInt(SOCK_NONBLOCK.rawValue) | CInt(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw IOError(errnoCode: errno, reason: "socket") }
        let bound = address.withSockAddr { bind(fd, $0, socklen_t($1)) }
        guard bound == 0 else {
            let code = errno
            _ = Glibc.close(fd)
            throw IOError(errnoCode: code, reason: "bind")
        }
        descriptor = fd
    }

    /// Closes the descriptor; only for a socket SwiftNIO never took over.
    func close() {
        _ = Glibc.close(descriptor)
    }

    /// Sends one datagram; nil when it went out, else the errno (EAGAIN: the socket buffer is full, the datagram
    /// is dropped as a congested network would).
    func send(_ bytes: [UInt8], to address: SocketAddress) -> CInt? {
        let sent = bytes.withUnsafeBytes { buffer in
            address.withSockAddr { sendto(descriptor, buffer.baseAddress, buffer.count, 0, $0, socklen_t($1)) }
        }
        return sent < 0 ? errno : nil
    }
}

/// The link layer's view of a UDP source (docs/links.md): cookies are bound to address and port, rate limits
/// count per host (IPv4 address, IPv6 /64).
extension SocketAddress: LinkEndpoint {
    public var cookieBytes: [UInt8] {
        switch self {
        case .v4(let a): withUnsafeBytes(of: a.address.sin_addr) { Array($0) } + withUnsafeBytes(of: a.address.sin_port) { Array($0) }
        case .v6(let a): withUnsafeBytes(of: a.address.sin6_addr) { Array($0) } + withUnsafeBytes(of: a.address.sin6_port) { Array($0) }
        case .unixDomainSocket: Array(description.utf8)
        }
    }

    public var rateLimitKey: [UInt8] {
        switch self {
        case .v4(let a): withUnsafeBytes(of: a.address.sin_addr) { Array($0) }
        case .v6(let a): withUnsafeBytes(of: a.address.sin6_addr) { Array($0.prefix(8)) }
        case .unixDomainSocket: Array(description.utf8)
        }
    }
}
