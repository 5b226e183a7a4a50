import Foundation
import MeshControl
import Testing

/// The node's STUN server on a real `mesh-node run` (docs/stun.md), queried by a STUN client written here from
/// RFC 5389's text rather than with the node's own codec (XOR-MAPPED-ADDRESS), and by Debian's `stun`
/// (stun-client 0.97, installed by Tools/setup), which speaks RFC 3489 as libnice's gathering does (MAPPED-ADDRESS).
@Suite struct StunProcessTests {
    @Test func debiansStunClientGetsItsMappedAddress() throws {
        let client = "/usr/bin/stun"
        try #require(FileManager.default.isExecutableFile(atPath: client), "\(client) missing: Tools/setup installs stun-client")
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("a", in: scratch, arguments: [])
        defer { node.stop() }
        // Test 1 of RFC 3489's NAT discovery: one Binding Request with a CHANGE-REQUEST asking for no change (the
        // client prints what it got on stderr with -v).
        let port = UInt16.random(in: 20_000...60_000)
        let result = try runCommand(client, ["127.0.0.1:\(node.port)", "1", "-v", "-p", "\(port)"], timeout: 10)
        #expect((result.stdout + result.stderr).contains("MappedAddress = 127.0.0.1:\(port)"), "\(result.stdout)\(result.stderr)")
    }


    @Test func aNodeAnswersABindingRequestWithTheClientsAddress() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let node = try NodeProcess("a", in: scratch, arguments: [])
        defer { node.stop() }
        let client = try RFC5389Client()
        let mapped = try #require(client.mappedAddress(port: node.port), "no Binding Success Response within 2 s")
        #expect(mapped.ip == "127.0.0.1")
        #expect(mapped.port == client.localPort)

        // A request carrying a comprehension-required attribute (CHANGE-REQUEST) gets no answer; 60 requests in one
        // burst get the per-host burst of 20 answers, the rest are counted as rate limited.
        #expect(client.mappedAddress(port: node.port, extra: [0x00, 0x03, 0x00, 0x04, 0, 0, 0, 6], wait: 0.3) == nil)
        let answered = client.burst(60, port: node.port)
        #expect(answered <= 20, "\(answered) of 60 answered")
        let families = try node.ctlJSON(["metrics"])["families"]?.arrayValue ?? []
        func value(_ name: String, reason: String? = nil) -> Double {
            let family = families.first { $0["name"]?.stringValue == name }
            let sample = family?["samples"]?.arrayValue?.first { reason == nil || $0["labels"]?["reason"]?.stringValue == reason }
            return sample?["value"]?.doubleValue ?? -1
        }
        #expect(value("meshnode_stun_requests_total") == 62)
        #expect(value("meshnode_stun_answered_total") == Double(1 + answered))
        #expect(value("meshnode_stun_dropped_total", reason: "unknown_attribute") == 1)
        #expect(value("meshnode_stun_dropped_total", reason: "rate_limited") == Double(60 - answered))
    }
}

/// A minimal STUN Binding client on a UDP socket bound to 127.0.0.1 (RFC 5389 §6, §15.2).
final class RFC5389Client {
    let fd: Int32

    init() throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = RogueNode.loopback(port: 0)
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard fd >= 0, rc == 0 else { throw HarnessError("STUN client socket failed") }
    }

    deinit { close(fd) }

    var localPort: UInt16 {
        boundPort(fd)
    }

    /// Header: type 0x0001, length, magic cookie 0x2112A442, 96-bit transaction id; then `extra` attributes.
    static func request(_ txid: [UInt8], extra: [UInt8] = []) -> [UInt8] {
        [0x00, 0x01, UInt8(extra.count >> 8), UInt8(extra.count & 0xFF), 0x21, 0x12, 0xA4, 0x42] + txid + extra
    }

    func send(_ bytes: [UInt8], port: UInt16) {
        var addr = RogueNode.loopback(port: port)
        _ = bytes.withUnsafeBytes { buf in
            withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        }
    }

    /// The next datagram within `timeout` seconds.
    func receive(timeout: Double) -> [UInt8]? {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout * 1000)) == 1 else { return nil }
        var buffer = [UInt8](repeating: 0, count: 1500)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? Array(buffer.prefix(n)) : nil
    }

    /// Sends one Binding Request and decodes XOR-MAPPED-ADDRESS from the Binding Success Response (RFC 5389 §15.2:
    /// port XOR the cookie's top 16 bits, IPv4 address XOR the cookie).
    func mappedAddress(port: UInt16, extra: [UInt8] = [], wait: Double = 2) -> (ip: String, port: UInt16)? {
        let txid = (0..<12).map { _ in UInt8.random(in: 0...255) }
        send(Self.request(txid, extra: extra), port: port)
        guard let r = receive(timeout: wait), r.count >= 20, r[0] == 0x01, r[1] == 0x01, Array(r[4..<8]) == [0x21, 0x12, 0xA4, 0x42],
              Array(r[8..<20]) == txid, Int(r[2]) << 8 | Int(r[3]) == r.count - 20 else { return nil }
        var offset = 20
        while offset + 4 <= r.count {
            let type = Int(r[offset]) << 8 | Int(r[offset + 1])
            let length = Int(r[offset + 2]) << 8 | Int(r[offset + 3])
            if type == 0x0020, length == 8, offset + 12 <= r.count, r[offset + 5] == 0x01 {
                let xport = (UInt16(r[offset + 6]) << 8 | UInt16(r[offset + 7])) ^ 0x2112
                let ip = (0..<4).map { String(r[offset + 8 + $0] ^ [0x21, 0x12, 0xA4, 0x42][$0]) }.joined(separator: ".")
                return (ip, xport)
            }
            offset += 4 + (length + 3) / 4 * 4
        }
        return nil
    }

    /// Sends `count` requests at once and counts the answers that come back within half a second of the last.
    func burst(_ count: Int, port: UInt16) -> Int {
        for _ in 0..<count { send(Self.request((0..<12).map { _ in UInt8.random(in: 0...255) }), port: port) }
        var answers = 0
        while receive(timeout: 0.5) != nil { answers += 1 }
        return answers
    }
}
