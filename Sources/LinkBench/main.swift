import CMeshIO
import CSodium
import Foundation
import MeshIdentity
import MeshLink

// LinkBench: link packets per second on one core (docs/links.md, "Benchmark"), next to the libsodium AEAD alone in
// the same run: a packet is sealed by one LinkManager and opened by another (socket-free), or also sent and received
// through two UDP sockets on loopback. Rounds alternate between the three; Tools/bench-link runs it.

func say(_ line: String) {
    print(line)
    fflush(nil)
}

/// A loopback port as a link endpoint.
struct Port: LinkEndpoint {
    let number: UInt16
    var cookieBytes: [UInt8] { [UInt8(number >> 8), UInt8(number & 0xFF)] }
    var rateLimitKey: [UInt8] { [127, 0, 0, 1] }
    var description: String { "127.0.0.1:\(number)" }
}

let arguments = CommandLine.arguments.dropFirst()
func option(_ name: String, _ fallback: Int) -> Int {
    guard let i = arguments.firstIndex(of: name), i + 1 < arguments.endIndex, let v = Int(arguments[i + 1]) else { return fallback }
    return v
}
let payloadBytes = option("--payload", 120)
let packets = option("--packets", 200_000)
let rounds = option("--rounds", 5)
let payload = [UInt8](repeating: 0x5A, count: payloadBytes)
let now = Int64(Date().timeIntervalSince1970 * 1000)

/// Two link managers with a link up between them (the handshake run in memory).
func linkedPair() -> (LinkManager<Port>, LinkManager<Port>) {
    var a = LinkManager<Port>(identity: PrivateKey())
    var b = LinkManager<Port>(identity: PrivateKey())
    var toB = a.connect(to: Port(number: 2), pinned: b.localAddress, now: now)
    while !toB.isEmpty {
        var toA: [LinkAction<Port>] = []
        for case .send(let d, _) in toB { toA += b.receive(d, from: Port(number: 1), now: now) }
        toB = []
        for case .send(let d, _) in toA { toB += a.receive(d, from: Port(number: 2), now: now) }
    }
    precondition(a.isUp(b.localAddress) && b.isUp(a.localAddress), "the in-memory handshake did not bring the link up")
    return (a, b)
}

/// Packets per second of `body` over `count` packets.
func rate(_ count: Int, _ body: () -> Int) -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    let done = body()
    precondition(done == count, "only \(done) of \(count) packets arrived")
    return Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
}

/// The AEAD alone: seal and open `packets` payloads (plus the link's type byte) in reused buffers.
func aeadAlone() -> Double {
    let key = [UInt8](repeating: 7, count: 32)
    let header = [UInt8](repeating: 3, count: LinkWire.transportHeaderBytes)
    var plain = [UInt8](repeating: 0x5A, count: payloadBytes + 1)
    var sealed = [UInt8](repeating: 0, count: payloadBytes + 1 + LinkCrypto.tagBytes)
    var nonce = [UInt8](repeating: 0, count: 12)
    return rate(packets) {
        var ok = 0
        for i in 0..<packets {
            nonce[4] = UInt8(truncatingIfNeeded: i)
            var length: UInt64 = 0
            crypto_aead_chacha20poly1305_ietf_encrypt(&sealed, &length, plain, UInt64(plain.count), header, UInt64(header.count), nil, nonce, key)
            if crypto_aead_chacha20poly1305_ietf_decrypt(&plain, &length, nil, sealed, length, header, UInt64(header.count), nonce, key) == 0 {
                ok += 1
            }
        }
        return ok
    }
}

/// The link layer without sockets: one manager seals, the other opens and delivers.
func socketFree() -> Double {
    var (a, b) = linkedPair()
    let target = b.localAddress
    return rate(packets) {
        var delivered = 0
        for _ in 0..<packets {
            for case .send(let d, _) in a.send(payload, to: target, now: now) {
                for case .deliver in b.receive(d, from: Port(number: 1), now: now) { delivered += 1 }
            }
        }
        return delivered
    }
}

/// A UDP socket on 127.0.0.1 (port chosen by the kernel) with a 4 MB receive buffer.
func loopbackSocket() -> (fd: Int32, address: sockaddr_in) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    var size: Int32 = 4 << 20
    setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            precondition(bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0, "cannot bind a loopback socket")
        }
    }
    return (fd, address)
}

/// The link layer through two loopback sockets: batches of 64 sealed, sent with sendmmsg, read with recvmmsg-sized
/// loops of recv, opened and delivered.
func withSockets() -> Double {
    var (a, b) = linkedPair()
    let target = b.localAddress
    let (sender, _) = loopbackSocket()
    let (receiver, address) = loopbackSocket()
    defer {
        close(sender)
        close(receiver)
    }
    var destination = sockaddr_storage()
    withUnsafeBytes(of: address) { raw in withUnsafeMutableBytes(of: &destination) { $0.copyMemory(from: raw) } }
    let batch = 64
    var bytes: [UInt8] = []
    var datagrams = [mesh_datagram](repeating: mesh_datagram(), count: batch)
    var buffer = [UInt8](repeating: 0, count: 2048)
    return rate(packets) {
        var delivered = 0
        var sent = 0
        while sent < packets {
            let n = min(batch, packets - sent)
            bytes.removeAll(keepingCapacity: true)
            for i in 0..<n {
                for case .send(let d, _) in a.send(payload, to: target, now: now) {
                    datagrams[i].offset = bytes.count
                    datagrams[i].length = d.count
                    datagrams[i].address = destination
                    datagrams[i].address_length = socklen_t(MemoryLayout<sockaddr_in>.size)
                    bytes += d
                }
            }
            let refused = bytes.withUnsafeBufferPointer { raw in
                datagrams.withUnsafeMutableBufferPointer { mesh_send_batch(sender, raw.baseAddress, $0.baseAddress, UInt32(n)) }
            }
            precondition(refused == 0, "loopback refused \(refused) datagrams")
            sent += n
            for _ in 0..<n {
                let got = buffer.withUnsafeMutableBytes { recv(receiver, $0.baseAddress, $0.count, 0) }
                precondition(got > 0, "recv failed")
                for case .deliver in b.receive(Array(buffer[0..<got]), from: Port(number: 1), now: now) { delivered += 1 }
            }
        }
        return delivered
    }
}

func median(_ values: [Double]) -> Double { values.sorted()[values.count / 2] }

say("link packets/s on one core, \(payloadBytes)-byte payloads, \(packets) packets a round, \(rounds) rounds (alternating)")
var results: [String: [Double]] = [:]
let cases: [(String, () -> Double)] = [("aead-alone", aeadAlone), ("socket-free", socketFree), ("loopback", withSockets)]
for _ in 0..<rounds {
    for (name, body) in cases { results[name, default: []].append(body()) }
}
let floor = median(results["aead-alone"]!)
for (name, _) in cases {
    let values = results[name]!
    say(String(format: "%-12@ median %9.0f packets/s  (min–max %.0f–%.0f)  %5.1f %% of the AEAD alone",
               name as NSString, median(values), values.min()!, values.max()!, 100 * median(values) / floor))
}
