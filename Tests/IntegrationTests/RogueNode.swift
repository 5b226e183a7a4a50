import Foundation
import MeshIdentity
@testable import MeshLink
import MeshTestKit

/// The rogue's endpoints are loopback ports.
extension UInt16: LinkEndpoint {
    public var cookieBytes: [UInt8] { withUnsafeBytes(of: self.bigEndian, Array.init) }
    public var rateLimitKey: [UInt8] { [127, 0, 0, 1] }
}

/// A third party with its own key on a real UDP socket: it can link to a node like any neighbour, and it
/// can also spray raw datagrams. Endpoints are loopback ports.
final class RogueNode {
    let fd: Int32
    var links = LinkManager<UInt16>(identity: PrivateKey())
    var received: [[UInt8]] = []
    /// DHT datagrams (first byte 0xE4) that came back, with the port they came from.
    var dhtReceived: [(from: UInt16, bytes: [UInt8])] = []

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = Self.loopback(port: 0)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard fd >= 0, rc == 0 else { throw HarnessError("rogue socket failed") }
        var timeout = timeval(tv_sec: 0, tv_usec: 20_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    /// The loopback port the rogue's socket is bound to.
    var port: UInt16 {
        boundPort(fd)
    }

    static func loopback(port: UInt16) -> sockaddr_in {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        return addr
    }

    static var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    func sendRaw(_ bytes: [UInt8], to port: UInt16) {
        var addr = Self.loopback(port: port)
        _ = bytes.withUnsafeBytes { buf in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
    }

    func run(_ actions: [LinkAction<UInt16>]) {
        for action in actions {
            switch action {
            case .send(let bytes, let port): sendRaw(bytes, to: port)
            case .deliver(let payload, _): received.append(payload)
            default: break
            }
        }
    }

    /// Receives and processes datagrams for `seconds`, or until `until` holds.
    func pump(seconds: Double, until: () -> Bool = { false }) {
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 2048)
        while Date() < deadline && !until() {
            var from = sockaddr_in()
            var length = socklen_t(MemoryLayout<sockaddr_in>.size)
            let n = buffer.withUnsafeMutableBytes { buf in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, buf.baseAddress, buf.count, 0, $0, &length) }
                }
            }
            if n > 0 {
                let bytes = Array(buffer[0..<n]), port = UInt16(bigEndian: from.sin_port)
                if bytes.first == 0xE4 { dhtReceived.append((port, bytes)) } else { run(links.receive(bytes, from: port, now: Self.now)) }
            }
            run(links.tick(now: Self.now))
        }
    }

    /// Opens a link to the node at `port` (it accepts unpinned neighbours) and waits until it is up.
    func link(to port: UInt16, node: WalletAddress) throws {
        run(links.connect(to: port, pinned: node, now: Self.now))
        pump(seconds: 5) { links.isUp(node) }
        guard links.isUp(node) else { throw HarnessError("rogue could not link to \(node)") }
    }

    /// A handshake initiation with a random 65-byte signature (it recovers some key no one holds), as a sender
    /// with no key makes them. With `knowingAddress`, mac1 is keyed by `node`'s address, as an attacker who
    /// looked the address up makes it; otherwise mac1 is random.
    static func forgedInitiation(to node: WalletAddress, knowingAddress: Bool, rng: inout SplitMix64) -> [UInt8] {
        let signed = HandshakeInit.signedPart(senderIndex: UInt32(truncatingIfNeeded: rng.next()), responder: node.bytes,
                                              ephemeral: rng.bytes(32), timestampMs: UInt64(now))
        var signature = rng.bytes(65)
        signature[64] = UInt8(rng.next() % 2)
        let mac1 = knowingAddress ? HandshakeMAC.mac(key: HandshakeMAC.mac1Key(responder: node.bytes), signed + signature) : rng.bytes(16)
        return signed + signature + mac1 + [UInt8](repeating: 0, count: LinkWire.macBytes)
    }
}
