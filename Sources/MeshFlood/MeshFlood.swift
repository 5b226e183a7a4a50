import ArgumentParser
import Foundation
import MeshIdentity

/// `mesh-flood`: sends one kind of hostile traffic at a node at a paced rate, for benchmarks of how a node
/// and its calls hold up (Tools/bench-flood, docs/hardening.md). Loopback or a lab network only.
@main
struct MeshFlood: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mesh-flood",
        abstract: "Flood a mesh node with hostile datagrams at a paced rate (benchmarks; docs/hardening.md).",
        discussion: """
            Kinds: link-init (links v2 handshake initiations naming --target-node with a right mac1 and a random \
            signature, so a new identity each: they reach the node's cookie and rate-limit stages), dht-request \
            (FIND_NODE, a random signature and so a new node id each), store (STOREs of presence records from \
            throw-away wallets, signed for real before the flood), junk (random datagrams of 1 to --junk-max-bytes).
            """)

    @Option(help: "The node's UDP endpoint, IPv4 HOST:PORT.") var target: String
    @Option(help: "link-init, dht-request, store or junk.") var kind: String
    @Option(help: "The node's address (0x…), which link-init names and keys mac1 with (`node-ctl info --json`: node).")
    var targetNode: String?
    @Flag(help: "link-init: random mac1 bytes, as an attacker who does not know the node's address (stopped at mac1).")
    var randomMac1 = false
    @Option(help: "Datagrams per second.") var rate: Int
    @Option(help: "How long to flood, seconds.") var seconds: Double
    @Option(help: "Source addresses, one per /24 prefix of 127/8 (loopback targets only; default 256 for dht-request and store, else 1).")
    var sources: Int?
    @Option(help: "STORE datagrams made before the flood, each from its own wallet (default: rate × seconds, at most 100,000).")
    var pool: Int?
    @Option(help: "Largest junk datagram, bytes.") var junkMaxBytes = 512
    @Option(help: "Start flooding at this Unix time, seconds (preparation happens before).") var startAt: Double?
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard Flood.Kind(rawValue: kind) != nil else {
            throw ValidationError("--kind must be one of \(Flood.Kind.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard rate > 0 else { throw ValidationError("--rate must be a positive number of datagrams per second") }
        guard seconds > 0 else { throw ValidationError("--seconds must be a positive number") }
        guard (1...65_280).contains(sources ?? 1) else { throw ValidationError("--sources must be 1 to 65,280") }
        guard (pool ?? 1) > 0 else { throw ValidationError("--pool must be positive") }
        guard (1...65_507).contains(junkMaxBytes) else { throw ValidationError("--junk-max-bytes must be 1 to 65,507") }
        _ = try parseTarget()
        _ = try parseTargetNode()
        if kind == Flood.Kind.linkInit.rawValue, targetNode == nil, !randomMac1 {
            throw ValidationError("--kind link-init needs --target-node 0xADDR (or --random-mac1)")
        }
    }

    func run() throws {
        let kind = Flood.Kind(rawValue: kind)!
        let (address, port) = try parseTarget()
        let sourceCount = sources ?? (kind == .dhtRequest || kind == .store ? 256 : 1)
        if sourceCount > 1, address.sin_addr.s_addr.bigEndian >> 24 != 127 {
            throw ValidationError("--sources above 1 needs a loopback (127/8) target")
        }
        let sockets = try (0..<sourceCount).map { try Self.socket(source: sourceCount == 1 ? nil : $0) }
        defer { sockets.forEach { close($0) } }

        var rng = FastRandom(seed: UInt64.random(in: .min ... .max))
        let prepared = Date()
        let endpoint = FloodEndpoint(ip: withUnsafeBytes(of: address.sin_addr) { Array($0) }, port: port)
        var flood = try Flood(kind: kind, target: endpoint, targetNode: try parseTargetNode(), mac1: randomMac1 ? .random : .valid,
                              poolSize: pool ?? min(Int(Double(rate) * seconds) + 1, 100_000),
                              junkMaxBytes: junkMaxBytes, nowMs: Self.wallMs(), rng: &rng)
        let prepareSeconds = Date().timeIntervalSince(prepared)
        if let startAt { Thread.sleep(forTimeInterval: max(0, startAt - Date().timeIntervalSince1970)) }

        var target = address
        var sent = 0, failed = 0, bytes = 0, next = 0
        let startedAt = Date().timeIntervalSince1970
        let cpuAtStart = Self.cpuSeconds()
        let start = DispatchTime.now().uptimeNanoseconds
        while true {
            let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            if elapsed >= seconds { break }
            let due = Int(Double(rate) * elapsed) - sent - failed
            if due <= 0 {
                usleep(200)
                continue
            }
            let nowMs = Self.wallMs()
            for _ in 0..<min(due, 512) {
                let datagram = flood.next(nowMs: nowMs, rng: &rng)
                let fd = sockets[next]
                next = (next + 1) % sockets.count
                let rc = datagram.withUnsafeBytes { buf in
                    withUnsafePointer(to: &target) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                            sendto(fd, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                        }
                    }
                }
                if rc >= 0 { sent += 1; bytes += datagram.count } else { failed += 1 }
            }
        }
        let endedAt = Date().timeIntervalSince1970
        let duration = endedAt - startedAt
        let cpuPercent = 100 * (Self.cpuSeconds() - cpuAtStart) / duration
        let summary: [String: Any] = [
            "kind": kind.rawValue, "target": self.target, "rateAsked": rate, "sent": sent, "sendErrors": failed,
            "seconds": duration, "ratePerSecond": Double(sent) / duration, "mbitPerSecond": Double(bytes) * 8 / duration / 1e6,
            "sources": sourceCount, "prepareSeconds": prepareSeconds, "cpuPercent": cpuPercent, "startedAt": startedAt, "endedAt": endedAt,
        ]
        if json {
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(String(format: "%@: %d datagrams in %.2f s = %.0f/s (asked %d/s), %.2f Mbit/s of UDP payload, %d send errors, %d source address(es), prepared in %.1f s, flooder CPU %.0f %% of one core",
                         kind.rawValue, sent, duration, Double(sent) / duration, rate, Double(bytes) * 8 / duration / 1e6,
                         failed, sourceCount, prepareSeconds, cpuPercent))
        }
    }

    private func parseTargetNode() throws -> WalletAddress? {
        do { return try targetNode.map { try WalletAddress(parsing: $0) } } catch { throw ValidationError("--target-node: \(error)") }
    }

    private func parseTarget() throws -> (sockaddr_in, UInt16) {
        let parts = target.split(separator: ":", omittingEmptySubsequences: false)
        var address = sockaddr_in()
        guard parts.count == 2, let port = UInt16(parts[1]), port > 0,
              inet_pton(AF_INET, String(parts[0]), &address.sin_addr) == 1
        else { throw ValidationError("--target must be an IPv4 HOST:PORT, got '\(target)'") }
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        return (address, port)
    }

    /// A UDP socket bound to 127.(1 + source / 256).(source % 256).1, or to any address when `source` is nil.
    private static func socket(source: Int?) throws -> Int32 {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw FloodError(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        if let source {
            address.sin_addr.s_addr = (UInt32(127) << 24 | UInt32(1 + source / 256) << 16 | UInt32(source % 256) << 8 | 1).bigEndian
        }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw FloodError(description: "bind source \(source ?? 0): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    /// This process's user and system CPU time, seconds.
    private static func cpuSeconds() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        let seconds = { (t: timeval) in Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }

    private static func wallMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
}
