import MeshStun
import NIOCore

/// The node's STUN server (docs/stun.md): every node answers Binding Requests on its UDP port, so a node with a
/// public address is a STUN server for the ICE agents of the others.
extension NodeRuntime {
    /// A datagram whose first byte is 0–3: answered when it is a plain Binding Request within the source's budget,
    /// else dropped and counted (`meshnode_stun_dropped_total`).
    func receiveStun(_ datagram: [UInt8], from source: SocketAddress) {
        guard let address = StunAddress(socketAddress: source) else { return }
        if case .answer(let response) = stun.receive(datagram, from: address, nowMs: Self.now()) {
            sendDatagram(response, to: source)
        }
    }
}

extension StunAddress {
    /// The source as the client sees itself: an IPv4 client reaching a dual-stack socket (`::ffff:a.b.c.d`) gets
    /// its IPv4 address back.
    init?(socketAddress: SocketAddress) {
        guard let port = socketAddress.port.map(UInt16.init) else { return nil }
        switch socketAddress {
        case .v4(let a):
            let raw = UInt32(bigEndian: a.address.sin_addr.s_addr)
            self.init(ip: (0..<4).map { UInt8(truncatingIfNeeded: raw >> (24 - 8 * $0)) }, port: port)
        case .v6(let a):
            let bytes = withUnsafeBytes(of: a.address.sin6_addr) { Array($0) }
            let mapped = bytes.prefix(12).elementsEqual([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF])
            self.init(ip: mapped ? Array(bytes.suffix(4)) : bytes, port: port)
        case .unixDomainSocket:
            return nil
        }
    }
}
